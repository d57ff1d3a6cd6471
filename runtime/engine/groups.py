"""Process groups of one layout: a Megatron-core `ProcessGroupCollection` per model layout.

Rank order follows `graph.placement.layout.Layout`: tp fastest, then dp, then pp. Building the
groups is a WORLD-collective: every rank of the default group calls `build_layout_groups`
for every layout in the same order, whether or not it belongs to the layout (a
`dist.new_group` requirement). Groups with the same members are created once per process
and shared between layouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch.distributed as dist

from graph.placement.layout import Layout

_GROUP_CACHE: dict[tuple[int, ...], Any] = {}


def _group(ranks: tuple[int, ...]) -> Any:
    """The process group with exactly these global ranks (world-collective on first use)."""
    key = tuple(sorted(ranks))
    if key not in _GROUP_CACHE:
        _GROUP_CACHE[key] = dist.new_group(list(key))
    return _GROUP_CACHE[key]


@dataclass(frozen=True, kw_only=True)
class RankCoords:
    """Where one global rank sits in a layout."""

    rank: int
    """Global rank (the device id of the layout's mesh)."""
    dp_rank: int
    """Data-parallel index."""
    tp_rank: int
    """Tensor-parallel index."""
    pp_rank: int
    """Pipeline stage."""


def _all_groups(layout: Layout) -> dict[str, list[tuple[int, ...]]]:
    """Member lists of every group kind of a layout, in a fixed order."""
    dp, tp, pp = layout.dp, layout.tp, layout.pp

    def dev(d: int, t: int, p: int) -> int:
        return layout.device(dp_rank=d, tp_rank=t, pp_rank=p)

    kinds: dict[str, list[tuple[int, ...]]] = {
        "tp": [tuple(dev(d, t, p) for t in range(tp)) for p in range(pp) for d in range(dp)],
        "dp": [tuple(dev(d, t, p) for d in range(dp)) for p in range(pp) for t in range(tp)],
        "pp": [tuple(dev(d, t, p) for p in range(pp)) for d in range(dp) for t in range(tp)],
        "mp": [tuple(dev(d, t, p) for p in range(pp) for t in range(tp)) for d in range(dp)],
        "tp_dp": [tuple(dev(d, t, p) for d in range(dp) for t in range(tp)) for p in range(pp)],
        "embd": [tuple(sorted({dev(d, t, 0), dev(d, t, pp - 1)}))
                 for d in range(dp) for t in range(tp)],
        "pos_embd": [(dev(d, t, 0),) for d in range(dp) for t in range(tp)],
        "single": [(r,) for r in layout.mesh.devices],
        "mesh": [tuple(layout.mesh.devices)],
    }
    return kinds


def build_layout_groups(layout: Layout, rank: int) -> tuple[Any, RankCoords] | None:
    """Create the layout's groups (world-collective); return this rank's collection.

    Returns `(ProcessGroupCollection, RankCoords)` for a rank of the layout's mesh and
    None for any other rank (which must still call this, in the same order).
    """
    from megatron.core.process_groups_config import ProcessGroupCollection

    mine: dict[str, Any] = {}
    for kind, member_lists in _all_groups(layout).items():
        for members in member_lists:
            group = _group(members)
            if rank in members:
                mine[kind] = group
    if rank not in layout.mesh.devices:
        return None
    dp_rank, tp_rank, pp_rank = layout.coords(rank)
    pgc = ProcessGroupCollection()
    single = mine["single"]
    pgc.tp = mine["tp"]
    pgc.pp = mine["pp"]
    pgc.mp = mine["mp"]
    pgc.dp = mine["dp"]
    pgc.dp_cp = mine["dp"]
    pgc.intra_dp_cp = mine["dp"]
    pgc.tp_dp_cp = mine["tp_dp"]
    pgc.cp = single
    pgc.tp_cp = mine["tp"]
    pgc.hcp = [single]
    pgc.ep = single
    pgc.expt_tp = single
    pgc.tp_ep = mine["tp"]
    pgc.tp_ep_pp = mine["mp"]
    pgc.expt_dp = mine["dp"]
    pgc.intra_expt_dp = mine["dp"]
    pgc.inter_dist_opt = single
    pgc.intra_dist_opt = mine["mesh"]  # one optimizer instance: grad-norm group
    first_or_last = pp_rank in (0, layout.pp - 1)
    pgc.embd = mine["embd"] if first_or_last else None
    pgc.pos_embd = mine["pos_embd"] if pp_rank == 0 else None
    pgc.mesh = mine["mesh"]  # the whole layout: for gathers when saving
    coords = RankCoords(rank=rank, dp_rank=dp_rank, tp_rank=tp_rank, pp_rank=pp_rank)
    return pgc, coords
