"""The chunk arithmetic checkpoints reshard by, against brute force: every element of a
rank's TP shard or distributed-optimizer range lands on its own element of the global
tensor, each exactly once, padding dropped. The reference cuts are the engine's own
(`convert.shard`, `convert.shard_ranges`) on a tensor whose values are their global index."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from runtime.engine import convert
from runtime.rundir.chunks import flat_blocks, global_pieces


def _narrow(t, offsets, sizes):
    for d, (o, n) in enumerate(zip(offsets, sizes)):
        t = t.narrow(d, o, n)
    return t


@pytest.mark.parametrize("shape", [(7,), (3, 5), (2, 3, 4), (1, 6), (4, 1)])
def test_flat_blocks_tile_any_flat_range_exactly(shape):
    n = math.prod(shape)
    full = torch.arange(n).view(shape)
    for start, stop in itertools.combinations_with_replacement(range(n + 1), 2):
        blocks = flat_blocks(shape, start, stop)
        seen = []
        for offsets, sizes, first in blocks:
            block = _narrow(full, offsets, sizes)
            # contiguous in the flat range, starting at `first`
            assert block.reshape(-1).tolist() == list(range(first, first + block.numel()))
            seen += block.reshape(-1).tolist()
        assert seen == list(range(start, stop))
        assert len(blocks) <= 2 * len(shape) - 1
    with pytest.raises(ValueError, match="outside a tensor"):
        flat_blocks(shape, 0, n + 1)


CASES = [  # (global shape, split dim, stride, tp, true length along dim or None)
    ((10, 4), 0, 1, 2, None),     # column-parallel rows
    ((6, 8), 1, 1, 4, None),      # row-parallel columns
    ((12, 3), 0, 2, 3, None),     # fused gate/up: two interleaved parts
    ((11, 4), 0, 1, 4, 11),       # vocabulary 11 padded to 12 for tp 4
    ((5, 3), None, 1, 2, None),   # replicated
]


@pytest.mark.parametrize("shape, dim, stride, tp, vocab", CASES)
def test_pieces_of_shards_and_optimizer_ranges_match_the_engine_cut(shape, dim, stride, tp, vocab):
    spec = convert.ShardSpec(dim=dim, stride=stride)
    padded = list(shape)
    if vocab is not None:
        padded[0] = -(-vocab // tp) * tp
    glob = torch.arange(math.prod(shape)).view(shape)
    padded_glob = torch.full(padded, -1, dtype=glob.dtype)
    padded_glob[tuple(slice(0, s) for s in shape)] = glob
    for rank in range(tp):
        local = convert.shard(padded_glob, spec, tp, rank)
        ranges = convert.shard_ranges(spec, padded[dim], tp, rank) if dim is not None else ()
        limit = shape[dim] if dim is not None else None
        n = local.numel()
        for start, stop in [(0, n), (1, n - 2), (n // 3, n // 2), (n - 1, n)]:
            flat = local.reshape(-1)[start:stop]
            covered = []
            for offsets, sizes, first in flat_blocks(local.shape, start, stop):
                block = flat[first - start: first - start + math.prod(sizes)].view(sizes)
                for p in global_pieces(offsets, sizes, dim=dim, ranges=ranges, limit=limit):
                    rel = [a - b for a, b in zip(p.local, offsets)]
                    got = _narrow(block, rel, p.sizes)
                    assert torch.equal(got, _narrow(glob, p.offsets, p.sizes))
                    covered += got.reshape(-1).tolist()
            # every non-padding element of the range, once
            assert sorted(covered) == sorted(v for v in flat.tolist() if v >= 0)
