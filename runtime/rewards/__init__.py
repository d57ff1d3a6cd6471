"""Rewards that are not models: rule-based scores of a response (`rules`) and reward
functions written by the user (`functions`).

Pure Python (no torch), so the front door checks reward names at load time without
starting a worker.

May import: `graph` and the standard library.
"""
