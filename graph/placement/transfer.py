"""TransferPlan: which rank sends which slice of which parameter to which rank.

`plan_transfer` derives, for one model, the plan that moves its parameters from
Layout A to Layout B (same, overlapping or disjoint meshes). The plan is plain data:
the cost model prices it (`cost_model.transfer_cost`), the runtime executes it as is.

Rules of the derivation:
- Every destination device receives exactly the bytes of its new shards that it does
  not already hold in the source layout; what it holds is listed as a local copy
  (src == dst), never sent.
- Each byte a destination needs comes from exactly one source. Sources are chosen
  among the source DP replicas (and TP ranks, for replicated parameters) that hold
  the byte: the same node first, then the least loaded sender so far.
- Every op's slice lies inside one shard run of both its source and its destination,
  so `ParamInfo.to_local` maps it to either rank's local coordinates (see
  `TransferOp.src_local` / `dst_local`), and applying an op is one strided copy.

Slices are tuples of (start, stop) per dimension, in global (unsharded) coordinates.

A LoRA model (`lora=`) whose replicas already hold the frozen base refreshes with
`trainable_only=True`: the plan then covers only the adapters and a value head.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.placement.params import ParamInfo, Slice, param_manifest
from graph.spec import LoraSpec, ModelArch


@dataclass(frozen=True, kw_only=True)
class TransferOp:
    """Copy `slice` of parameter `src_param` on device `src` into `param` on device `dst`."""

    param: str
    """Destination parameter (global Megatron name)."""
    src_param: str
    """Source parameter; differs from `param` only for a tied output-layer copy."""
    src: int
    """Sending global device id (equal to `dst` for a local copy)."""
    dst: int
    """Receiving global device id."""
    slice: Slice
    """(start, stop) per dimension, global coordinates."""
    nbytes: int
    """Bytes of the slice."""

    def __post_init__(self) -> None:
        if any(a < 0 or b <= a for a, b in self.slice):
            raise ValueError(f"transfer op on {self.param!r}: empty or negative slice {self.slice}")


@dataclass(frozen=True, kw_only=True)
class TransferPlan:
    """How one model's parameters move from layout `src` to layout `dst`."""

    model: str
    """Role of the model moved."""
    src: Layout
    """Layout the parameters are in."""
    dst: Layout
    """Layout they move to."""
    dtype_bytes: int
    """Bytes per element."""
    ops: tuple[TransferOp, ...]
    """Sends between two different devices."""
    local_copies: tuple[TransferOp, ...] = ()
    """Data a destination already holds in the source layout (src == dst): copied, not sent."""

    @property
    def bytes_total(self) -> int:
        """Bytes sent over links."""
        return sum(op.nbytes for op in self.ops)

    def sends_from(self, device: int) -> tuple[TransferOp, ...]:
        """Ops device `device` sends."""
        return tuple(op for op in self.ops if op.src == device)

    def receives_at(self, device: int) -> tuple[TransferOp, ...]:
        """Ops device `device` receives, local copies included."""
        return tuple(op for op in (*self.local_copies, *self.ops) if op.dst == device)

    def flows(self) -> list[tuple[int, int, float]]:
        """(src, dst, bytes) of every send."""
        return [(op.src, op.dst, float(op.nbytes)) for op in self.ops]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form."""
        def lay(x: Layout) -> dict[str, Any]:
            return {"devices": list(x.mesh.devices), "dp": x.dp, "tp": x.tp, "pp": x.pp,
                    "micro_batches": x.micro_batches}

        def op(o: TransferOp) -> list[Any]:
            return [o.param, o.src_param, o.src, o.dst, [list(s) for s in o.slice], o.nbytes]

        return {"model": self.model, "src": lay(self.src), "dst": lay(self.dst),
                "dtype_bytes": self.dtype_bytes, "ops": [op(o) for o in self.ops],
                "local_copies": [op(o) for o in self.local_copies]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TransferPlan:
        """Inverse of `to_dict`."""
        def lay(x: Mapping[str, Any]) -> Layout:
            return Layout(mesh=DeviceMesh(devices=tuple(x["devices"])), dp=x["dp"], tp=x["tp"],
                          pp=x["pp"], micro_batches=x.get("micro_batches", 1))

        def op(o: list[Any]) -> TransferOp:
            return TransferOp(param=o[0], src_param=o[1], src=o[2], dst=o[3],
                              slice=tuple((a, b) for a, b in o[4]), nbytes=o[5])

        return cls(model=d["model"], src=lay(d["src"]), dst=lay(d["dst"]),
                   dtype_bytes=d["dtype_bytes"], ops=tuple(op(o) for o in d["ops"]),
                   local_copies=tuple(op(o) for o in d.get("local_copies", ())))


def op_local_slices(info_src: ParamInfo, info_dst: ParamInfo, op: TransferOp,
                    src: Layout, dst: Layout) -> tuple[Slice, Slice]:
    """(slice in the sender's local shard, slice in the receiver's local shard) of `op`."""
    src_tp = src.coords(op.src)[1]
    dst_tp = dst.coords(op.dst)[1]
    return (info_src.to_local(src.tp, src_tp, op.slice), info_dst.to_local(dst.tp, dst_tp, op.slice))


@dataclass(frozen=True)
class _Holder:
    device: int
    param: ParamInfo
    runs: tuple[tuple[int, int], ...]


def _cut_dim(p: ParamInfo) -> int:
    return 0 if p.tp_dim is None else p.tp_dim


def _slice_of(p: ParamInfo, lo: int, hi: int) -> Slice:
    s = [(0, d) for d in p.shape]
    s[_cut_dim(p)] = (lo, hi)
    return tuple(s)


def _nbytes(p: ParamInfo, lo: int, hi: int, dtype_bytes: int) -> int:
    return (p.numel // p.shape[_cut_dim(p)]) * (hi - lo) * dtype_bytes


def _subtract(pieces: list[tuple[int, int]], run: tuple[int, int]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Split `pieces` into (parts outside `run`, parts inside `run`)."""
    outside, inside = [], []
    a, b = run
    for lo, hi in pieces:
        if hi <= a or b <= lo:
            outside.append((lo, hi))
            continue
        if lo < a:
            outside.append((lo, a))
        if b < hi:
            outside.append((b, hi))
        inside.append((max(lo, a), min(hi, b)))
    return outside, inside


def _holders(arch: ModelArch, src: Layout, manifest: tuple[ParamInfo, ...]) -> dict[str, list[_Holder]]:
    out: dict[str, list[_Holder]] = defaultdict(list)
    for q in manifest:
        for stage in q.stages(src.pp, arch.num_layers):
            for dp_rank in range(src.dp):
                for tp_rank in range(src.tp):
                    dev = src.device(dp_rank=dp_rank, tp_rank=tp_rank, pp_rank=stage)
                    out[q.data_name].append(_Holder(dev, q, q.shard_runs(src.tp, tp_rank)))
    return out


class _Sources:
    """Who holds which elementary segment (along the cut dimension) of one parameter's data."""

    def __init__(self, cands: list[_Holder], extra_runs: Iterable[tuple[int, int]]) -> None:
        points = {x for h in cands for run in h.runs for x in run}
        points.update(x for run in extra_runs for x in run)
        self.bounds = sorted(points)
        self.owners: list[list[_Holder]] = [[] for _ in self.bounds[1:]]
        self.by_device: dict[int, list[_Holder]] = defaultdict(list)
        for h in cands:
            self.by_device[h.device].append(h)
            for a, b in h.runs:
                for k in range(bisect.bisect_left(self.bounds, a), bisect.bisect_left(self.bounds, b)):
                    self.owners[k].append(h)

    def segments(self, lo: int, hi: int) -> Iterator[tuple[int, int, list[_Holder]]]:
        """Elementary segments of [lo, hi) with their holders."""
        for k in range(bisect.bisect_left(self.bounds, lo), bisect.bisect_left(self.bounds, hi)):
            yield self.bounds[k], self.bounds[k + 1], self.owners[k]

    def split_local(self, dev: int, runs: Iterable[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[tuple[_Holder, int, int]]]:
        """(pieces `dev` lacks, [(holder, lo, hi)] pieces it already holds) of the needed runs."""
        missing = list(runs)
        held = []
        for h in self.by_device.get(dev, ()):
            for run in h.runs:
                missing, inside = _subtract(missing, run)
                held.extend((h, lo, hi) for lo, hi in inside)
        return missing, held


def _dst_devices(p: ParamInfo, dst: Layout, num_layers: int) -> Iterator[tuple[int, int]]:
    """(device, tp_rank) of every destination device that holds `p`."""
    for stage in p.stages(dst.pp, num_layers):
        for dp_rank in range(dst.dp):
            for tp_rank in range(dst.tp):
                yield dst.device(dp_rank=dp_rank, tp_rank=tp_rank, pp_rank=stage), tp_rank


def plan_transfer(arch: ModelArch, src: Layout, dst: Layout, *, model: str = "model",
                  value_head: bool = False, cluster: Cluster | None = None, dtype_bytes: int = 2,
                  vocab_size: int | None = None, lora: LoraSpec | None = None,
                  trainable_only: bool = False) -> TransferPlan:
    """Derive the TransferPlan moving `arch`'s parameters from layout `src` to layout `dst`.

    `cluster` decides which devices share a node (default: all on one node). `lora` and
    `trainable_only` pick the parameters moved (see `graph.placement.params.param_manifest`).
    """
    node_of = cluster.node_of if cluster is not None else (lambda _d: 0)
    which = {"value_head": value_head, "vocab_size": vocab_size, "lora": lora, "trainable_only": trainable_only}
    src_manifest = param_manifest(arch, pp=src.pp, **which)
    dst_manifest = param_manifest(arch, pp=dst.pp, **which)
    holders = _holders(arch, src, src_manifest)
    load: dict[int, int] = defaultdict(int)
    ops: list[TransferOp] = []
    local: list[TransferOp] = []
    for p in dst_manifest:
        sources = _Sources(holders[p.data_name], (r for t in range(dst.tp) for r in p.shard_runs(dst.tp, t)))
        for dev, tp_rank in _dst_devices(p, dst, arch.num_layers):
            missing, held = sources.split_local(dev, p.shard_runs(dst.tp, tp_rank))
            for h, lo, hi in held:
                local.append(TransferOp(param=p.name, src_param=h.param.name, src=dev, dst=dev,
                                        slice=_slice_of(p, lo, hi), nbytes=_nbytes(p, lo, hi, dtype_bytes)))
            home = node_of(dev)
            for piece in missing:
                for a, b, owners in sources.segments(*piece):
                    h = min(owners, key=lambda o: (node_of(o.device) != home, load[o.device], o.device))
                    nbytes = _nbytes(p, a, b, dtype_bytes)
                    load[h.device] += nbytes
                    ops.append(TransferOp(param=p.name, src_param=h.param.name, src=h.device, dst=dev,
                                          slice=_slice_of(p, a, b), nbytes=nbytes))
    return TransferPlan(model=model, src=src, dst=dst, dtype_bytes=dtype_bytes, ops=tuple(ops),
                        local_copies=tuple(local))


def transfer_flows(arch: ModelArch, src: Layout, dst: Layout, *, value_head: bool = False,
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
