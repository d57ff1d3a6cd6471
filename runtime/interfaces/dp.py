"""Data parallelism inside an interface: take this replica's part, gather the results."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch.distributed as dist

from runtime.data.batch import SeqBatch

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine


def local_part(engine: ModelEngine, batch: SeqBatch, *, unit: int = 1) -> SeqBatch:
    """This data-parallel replica's share of the batch (balanced by tokens)."""
    dp = engine.layout.dp
    if dp == 1:
        return batch
    return batch.split(dp, unit=unit)[engine.coords.dp_rank]


def gather_parts(engine: ModelEngine, part: SeqBatch, order: tuple[int, ...]) -> SeqBatch:
    """Every replica's results joined, in the sample-id order `order`."""
    if engine.layout.dp == 1:
        return part.reorder(order) if part.ids != tuple(order) else part
    parts: list[Any] = [None] * engine.layout.dp
    dist.all_gather_object(parts, part, group=engine.pgc.dp)
    return SeqBatch.concat(parts).reorder(order)
