"""Where a rank's piece of a tensor sits in the global tensor: the arithmetic checkpoints
reshard by (plain integers, no torch).

A checkpoint stores every tensor under its global name as rectangular chunks of the
global (unsharded, unpadded) tensor, so any layout can read any other's. A rank holds:

- a TP-local parameter: along the split dimension, the concatenation of the global
  `ranges` (`runtime.engine.convert.shard_ranges`); every other dimension whole;
- a distributed-optimizer shard: the flat range [start, stop) of that TP-local parameter
  (row-major), which `flat_blocks` cuts into at most 2 * ndim - 1 rectangles.

`global_pieces` maps a rectangle of the TP-local tensor to rectangles of the global one,
dropping vocabulary padding (rows past the true vocabulary, which are always zero).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Box = tuple[tuple[int, ...], tuple[int, ...]]
"""(offsets, sizes) of a rectangle."""


def flat_blocks(shape: Sequence[int], start: int, stop: int) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """The row-major flat range [start, stop) of a tensor of `shape` as rectangles
    (offsets, sizes, flat index of the rectangle's first element), in flat order; the
    elements of each rectangle are contiguous in the flat range."""
    shape = tuple(int(s) for s in shape)
    if not 0 <= start <= stop <= math.prod(shape):
        raise ValueError(f"flat range [{start}, {stop}) is outside a tensor of shape {list(shape)}")
    if start == stop:
        return []
    if len(shape) == 0:
        return [((), (), 0)]
    if len(shape) == 1:
        return [((start,), (stop - start,), start)]
    inner = math.prod(shape[1:])
    row0, off0 = divmod(start, inner)
    row1, off1 = divmod(stop, inner)

    def in_row(row: int, a: int, b: int) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
        return [((row, *o), (1, *s), row * inner + f) for o, s, f in flat_blocks(shape[1:], a, b)]

    if row0 == row1:
        return in_row(row0, off0, off1)
    out = []
    if off0:
        out += in_row(row0, off0, inner)
        row0 += 1
    if row1 > row0:
        out.append(((row0,) + (0,) * (len(shape) - 1), (row1 - row0, *shape[1:]), row0 * inner))
    if off1:
        out += in_row(row1, 0, off1)
    return out


@dataclass(frozen=True, kw_only=True)
class Piece:
    """A rectangle of the TP-local tensor and where it sits in the global tensor."""

    local: tuple[int, ...]
    """Offsets in the TP-local tensor."""
    offsets: tuple[int, ...]
    """Offsets in the global tensor."""
    sizes: tuple[int, ...]


def global_pieces(offsets: Sequence[int], sizes: Sequence[int], *, dim: int | None,
                  ranges: Sequence[tuple[int, int]], limit: int | None = None) -> list[Piece]:
    """The rectangle (offsets, sizes) of a TP-local tensor as pieces of the global tensor.

    `dim` is the TP split dimension (None: replicated, local == global), `ranges` the global
    [start, stop) ranges along it the local tensor concatenates, and `limit` the global
    length along `dim` past which rows are padding and dropped (the true vocabulary).
    """
    offsets, sizes = tuple(offsets), tuple(sizes)
    if dim is None or not ranges:
        if limit is not None and dim is not None:
            raise ValueError("a vocabulary limit needs a split dimension")
        return [Piece(local=offsets, offsets=offsets, sizes=sizes)] if math.prod(sizes) else []
    lo, hi = offsets[dim], offsets[dim] + sizes[dim]
    out = []
    cursor = 0  # local index of the current range's first element
    for g_start, g_stop in ranges:
        length = g_stop - g_start
        a, b = max(lo, cursor), min(hi, cursor + length)
        if a < b:
            g_a, g_b = g_start + (a - cursor), g_start + (b - cursor)
            if limit is not None:
                g_b = min(g_b, limit)
            if g_a < g_b and math.prod(sizes):
                local = offsets[:dim] + (a,) + offsets[dim + 1:]
                glob = offsets[:dim] + (g_a,) + offsets[dim + 1:]
                size = sizes[:dim] + (g_b - g_a,) + sizes[dim + 1:]
                out.append(Piece(local=local, offsets=glob, sizes=size))
        cursor += length
    if cursor < hi:
        raise ValueError(f"local rectangle reaches {hi} along dim {dim} but the ranges cover {cursor}")
    return out
