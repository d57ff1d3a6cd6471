"""Small hand-made graphs for planner tests (those the benchmarks share live in
`realloc.bench.synthetic`) and a layout shorthand."""

from __future__ import annotations

from graph.placement.layout import DeviceMesh, Layout
from realloc.bench.synthetic import fan_graph, frozen_replica_graph, gen_train_graph, rule_graph

__all__ = ["fan_graph", "frozen_replica_graph", "gen_train_graph", "on", "rule_graph"]


def on(start: int, size: int, dp: int = 0, tp: int = 1, pp: int = 1, mb: int = 1) -> Layout:
    """Layout over [start, start + size); dp defaults to size / (tp * pp)."""
    dp = dp or size // (tp * pp)
    return Layout(mesh=DeviceMesh.span(start, size), dp=dp, tp=tp, pp=pp, micro_batches=mb)
