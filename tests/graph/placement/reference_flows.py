"""The segment-by-segment form of `graph.placement.transfer.transfer_flows` (its first
implementation), kept as the reference the closed form is tested against."""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict

from graph.placement.layout import Cluster, Layout
from graph.placement.params import param_manifest
from graph.placement.transfer import _dst_devices, _holders, _nbytes, _Sources
from graph.spec import LoraSpec, ModelArch


def reference_flows(arch: ModelArch, src: Layout, dst: Layout, *, value_head: bool = False,
                   cluster: Cluster | None = None, dtype_bytes: int = 2,
                   vocab_size: int | None = None, lora: LoraSpec | None = None,
                   trainable_only: bool = False) -> list[tuple[int, int, float]]:
    """Fast (src, dst, bytes) flows of the plan `plan_transfer` derives, for pricing.

    Same bytes per destination and per node pair as the plan; instead of the plan's
    greedy choice of one source per slice, each slice is spread evenly over the holders
    the plan could pick from (same node first), the balance the greedy choice reaches
    over many layers. Layers are priced through lcm(src.pp, dst.pp) representative
    layers, each standing for num_layers / lcm of the real ones.
    """
    node_of = cluster.node_of if cluster is not None else (lambda _d: 0)
    reps = math.lcm(src.pp, dst.pp)
    if arch.num_layers % reps:
        raise ValueError(f"num_layers={arch.num_layers} is not divisible by pp={src.pp} and pp={dst.pp}")
    small = dataclasses.replace(arch, num_layers=reps)
    scale = arch.num_layers // reps
    which = {"value_head": value_head, "vocab_size": vocab_size, "lora": lora, "trainable_only": trainable_only}
    holders = _holders(small, src, param_manifest(small, pp=src.pp, **which))
    flows: dict[tuple[int, int], float] = defaultdict(float)
    for p in param_manifest(small, pp=dst.pp, **which):
        weight = scale if p.layer is not None else 1
        sources = _Sources(holders[p.data_name], (r for t in range(dst.tp) for r in p.shard_runs(dst.tp, t)))
        for dev, tp_rank in _dst_devices(p, dst, reps):
            missing, _ = sources.split_local(dev, p.shard_runs(dst.tp, tp_rank))
            for piece in missing:
                for a, b, owners in sources.segments(*piece):
                    near = {o.device for o in owners if node_of(o.device) == node_of(dev)}
                    chosen = near or {o.device for o in owners}
                    share = weight * _nbytes(p, a, b, dtype_bytes) / len(chosen)
                    for s in chosen:
                        flows[(s, dev)] += share
    return [(s, d, b) for (s, d), b in flows.items()]
