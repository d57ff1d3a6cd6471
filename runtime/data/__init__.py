"""Samples: where records come from and how they become batches.

Owns: dataset records and the built-in generated tasks (`records`, pure Python),
tokenizers (`tokenizer`), `SeqBatch`, the one batch type every interface reads and writes
(`batch`), and the binding of graph data keys to batches and fields (`binding`).

May import: `graph`, torch, transformers (tokenizers). Imports no other `runtime` room (the engine imports it).
"""
