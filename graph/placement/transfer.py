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
import functools
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


@dataclass(frozen=True)
class _Item:
    """Bytes of one kind of data that move together: cut under TP (`cut`) or replicated."""

    nbytes: float
    cut: bool
    src_stages: tuple[int, ...]
    """Source pipeline stages holding the data (two for tied embeddings)."""
    dst_stage: int


@functools.lru_cache(maxsize=1024)
def _byte_classes(arch: ModelArch, value_head: bool, vocab_size: int | None, lora: LoraSpec | None,
                  trainable_only: bool, dtype_bytes: int) -> dict[str, float]:
    """Bytes per class: per layer (cut / replicated), first stage, last stage, and the tied
    output-layer copy of the word embeddings (`tied`, only where the manifest has one)."""
    which = {"value_head": value_head, "vocab_size": vocab_size, "lora": lora, "trainable_only": trainable_only}
    out = dict.fromkeys(("layer_cut", "layer_rep", "first_cut", "first_rep", "last_cut", "last_rep",
                         "tied"), 0.0)
    for p in param_manifest(arch, pp=1, **which):
        cls = "cut" if p.tp_dim is not None else "rep"
        out[f"{p.place}_{cls}"] += p.numel * dtype_bytes
    out["layer_cut"] /= arch.num_layers
    out["layer_rep"] /= arch.num_layers
    if arch.num_layers > 1:  # the copy exists only with pp > 1
        tied = [p for p in param_manifest(arch, pp=2, **which) if p.tied_to is not None]
        out["tied"] = sum(p.numel for p in tied) * dtype_bytes
    return out


def _items(arch: ModelArch, src: Layout, dst: Layout, classes: dict[str, float],
           tied_word: bool) -> list[_Item]:
    """What moves, by (source stages, destination stage); layers grouped by stage pair."""
    items = []
    reps = math.lcm(src.pp, dst.pp)
    per_rep = arch.num_layers // reps
    pairs: dict[tuple[int, int], int] = defaultdict(int)
    for k in range(reps):
        pairs[(k // (reps // src.pp), k // (reps // dst.pp))] += per_rep
    for (ss, ds), count in pairs.items():
        items.append(_Item(classes["layer_cut"] * count, True, (ss,), ds))
        items.append(_Item(classes["layer_rep"] * count, False, (ss,), ds))
    last_s, last_d = src.pp - 1, dst.pp - 1
    word_src = (0, last_s) if tied_word and src.pp > 1 else (0,)
    items.append(_Item(classes["first_cut"], True, word_src, 0))  # word embeddings (+ their tied copy)
    items.append(_Item(classes["first_rep"], False, (0,), 0))
    items.append(_Item(classes["last_cut"], True, (last_s,), last_d))
    items.append(_Item(classes["last_rep"], False, (last_s,), last_d))
    if tied_word and dst.pp > 1:  # the destination's last stage keeps its own copy
        items.append(_Item(classes["tied"], True, word_src, last_d))
    return [it for it in items if it.nbytes > 0]


class _Pieces:
    """What each destination device receives, piece by piece, from which group of holders.

    A piece is (destination device, group key, bytes, holders): the bytes of one item at one
    source TP rank (`st`, None for replicated data) that the device lacks, spread evenly
    over `holders`, the source devices holding them on the device's node, or all of them
    when none is there. The key (source stages, st, node or None) names the holder group.
    """

    def __init__(self, arch: ModelArch, src: Layout, dst: Layout, *, value_head: bool,
                 cluster: Cluster | None, dtype_bytes: int, vocab_size: int | None,
                 lora: LoraSpec | None, trainable_only: bool) -> None:
        if arch.num_layers % math.lcm(src.pp, dst.pp):
            raise ValueError(f"num_layers={arch.num_layers} is not divisible by pp={src.pp} and pp={dst.pp}")
        self.node_of = cluster.node_of if cluster is not None else (lambda _d: 0)
        self.src, self.dst = src, dst
        classes = _byte_classes(arch, value_head, vocab_size, lora, trainable_only, dtype_bytes)
        self.items = _items(arch, src, dst, classes, classes["tied"] > 0)
        # device -> (tp rank, stage) in the source (mesh order is tp fastest, then dp, then pp)
        per = src.dp * src.tp
        self.src_at: dict[int, tuple[int, int]] = {
            dev: (i % src.tp, i // per) for i, dev in enumerate(src.mesh.devices)}
        self.lcm_tp = math.lcm(src.tp, dst.tp)
        self._groups: dict[tuple[tuple[int, ...], int | None], tuple[dict[int, list[int]], list[int]]] = {}

    def _owners(self, stages: tuple[int, ...], st: int | None) -> tuple[dict[int, list[int]], list[int]]:
        """Devices holding the data of `stages` at TP rank `st` (None: any rank): by node, and all."""
        key = (stages, st)
        hit = self._groups.get(key)
        if hit is None:
            src = self.src
            devs = sorted({src.device(dp_rank=sd, tp_rank=t, pp_rank=ss) for ss in stages
                           for sd in range(src.dp) for t in (range(src.tp) if st is None else (st,))})
            nodes: dict[int, list[int]] = defaultdict(list)
            for d in devs:
                nodes[self.node_of(d)].append(d)
            hit = self._groups[key] = (dict(nodes), devs)
        return hit

    def __iter__(self) -> Iterator[tuple[int, tuple, float, list[int]]]:
        return self.pieces()

    def pieces(self, only: Mapping[int, list[int]] | None = None) -> Iterator[tuple[int, tuple, float, list[int]]]:
        """The pieces (of the destination devices `only` lists, by stage as indices k of
        `dst.device(...)` order within the stage, or of all)."""
        dst, node_of, src_at = self.dst, self.node_of, self.src_at
        span_s, span_d = self.lcm_tp // self.src.tp, self.lcm_tp // dst.tp
        # per destination TP rank: the source TP ranks its shard overlaps, with the overlap
        ranks = [[(st, (min((dt + 1) * span_d, (st + 1) * span_s) - max(dt * span_d, st * span_s)) / self.lcm_tp)
                  for st in range(dt * span_d // span_s, -(-(dt + 1) * span_d // span_s))]
                 for dt in range(dst.tp)]
        devices = dst.mesh.devices
        per_stage = dst.dp * dst.tp
        every = range(per_stage)
        chosen = {s: every if only is None else only.get(s, ()) for s in range(dst.pp)}
        for it in self.items:
            base = it.dst_stage * per_stage
            for k in chosen[it.dst_stage]:
                dev, dt = devices[base + k], k % dst.tp
                home = node_of(dev)
                held = src_at.get(dev)
                if held is not None and held[1] not in it.src_stages:
                    held = None
                if not it.cut:
                    if held is None:
                        near, every = self._owners(it.src_stages, None)
                        loc = home if home in near else None
                        yield dev, (it.src_stages, None, loc), it.nbytes, near[home] if loc is not None else every
                    continue
                for st, frac in ranks[dt]:
                    if held is not None and held[0] == st:
                        continue  # the device already holds this TP rank's shard
                    near, every = self._owners(it.src_stages, st)
                    loc = home if home in near else None
                    yield (dev, (it.src_stages, st, loc), it.nbytes * frac,
                           near[home] if loc is not None else every)


@dataclass(frozen=True, kw_only=True)
class TransferLoads:
    """What pricing needs of a transfer: per device, bytes by link kind and peers."""

    sent: Mapping[tuple[int, bool], float]
    """(device, crosses nodes) -> bytes the device sends over that kind of link."""
    recv: Mapping[tuple[int, bool], float]
    """(device, crosses nodes) -> bytes the device receives over that kind of link."""
    peers: Mapping[int, tuple[int, int]]
    """device -> (peers on its node, peers on other nodes) it exchanges messages with."""
    bytes_total: float
    """Bytes sent over any link."""
    bytes_inter_node: float
    """Bytes crossing node boundaries."""


def loads_of_flows(flows: Iterable[tuple[int, int, float]], cluster: Cluster | None = None) -> TransferLoads:
    """The loads of explicit (src, dst, bytes) flows (local ones, src == dst, left out)."""
    node_of = cluster.node_of if cluster is not None else (lambda _d: 0)
    sent: dict[tuple[int, bool], float] = defaultdict(float)
    recv: dict[tuple[int, bool], float] = defaultdict(float)
    peers: dict[int, set[int]] = defaultdict(set)
    total = inter = 0.0
    for s, d, nbytes in flows:
        if s == d or nbytes <= 0:
            continue
        far = node_of(s) != node_of(d)
        sent[(s, far)] += nbytes
        recv[(d, far)] += nbytes
        peers[s].add(d)
        peers[d].add(s)
        total += nbytes
        inter += nbytes if far else 0.0
    counts = {}
    for dev, others in peers.items():
        far_peers = sum(node_of(o) != node_of(dev) for o in others)
        counts[dev] = (len(others) - far_peers, far_peers)
    return TransferLoads(sent=dict(sent), recv=dict(recv), peers=counts, bytes_total=total,
                         bytes_inter_node=inter)


def transfer_flows(arch: ModelArch, src: Layout, dst: Layout, *, value_head: bool = False,
                   cluster: Cluster | None = None, dtype_bytes: int = 2,
                   vocab_size: int | None = None, lora: LoraSpec | None = None,
                   trainable_only: bool = False) -> list[tuple[int, int, float]]:
    """Fast (src, dst, bytes) flows of the plan `plan_transfer` derives, for pricing.

    Same bytes per destination and per node pair as the plan; instead of the plan's
    greedy choice of one source per slice, each slice is spread evenly over the holders
    the plan could pick from (same node first), the balance the greedy choice reaches
    over many layers.

    Closed form: every parameter TP cuts (contiguously, or as SwiGLU's gate and up
    halves, which overlap between TP ranks in the same proportions) moves the same
    fraction of its bytes between each pair of TP ranks, and a replicated one moves whole;
    so a layer's parameters reduce to two byte counts, the layers to counts per (source
    stage, destination stage) pair, and the flows to one pass over the destination
    devices. (tests/graph/placement/reference_flows.py derives the same flows slice by
    slice.) At hundreds of devices the flows number in the hundreds of thousands:
    `transfer_loads` prices the same transfer without listing them.
    """
    pieces = _Pieces(arch, src, dst, value_head=value_head, cluster=cluster, dtype_bytes=dtype_bytes,
                     vocab_size=vocab_size, lora=lora, trainable_only=trainable_only)
    flows: dict[tuple[int, int], float] = defaultdict(float)
    for dev, _key, nbytes, holders in pieces:
        share = nbytes / len(holders)
        for s in holders:
            flows[(s, dev)] += share
    return [(s, d, b) for (s, d), b in flows.items()]


EXACT_FLOWS = 256
"""Up to this many (src, dst) device pairs `transfer_loads` counts peers exactly (see there)."""


def transfer_loads(arch: ModelArch, src: Layout, dst: Layout, *, value_head: bool = False,
                   cluster: Cluster | None = None, dtype_bytes: int = 2,
                   vocab_size: int | None = None, lora: LoraSpec | None = None,
                   trainable_only: bool = False) -> TransferLoads:
    """The loads of `transfer_flows`; past `EXACT_FLOWS` device pairs, summed per holder group.

    While the two meshes make at most `EXACT_FLOWS` (src, dst) device pairs the loads are
    those of `transfer_flows` exactly.
    Beyond (hundreds of devices), bytes per device and link kind are still exact, but
    peers are counted per holder group, not per distinct device: a group of replicated
    data (held by every TP rank) contains the groups of the cut data beside it, so the
    larger is counted; a device that both sends to and receives from a peer, or meets it
    in two groups of overlapping stages (tied embeddings), counts it twice. Peers only
    price message latencies (microseconds on GPUs), so the bound is close enough there.
    """
    pieces = _Pieces(arch, src, dst, value_head=value_head, cluster=cluster, dtype_bytes=dtype_bytes,
                     vocab_size=vocab_size, lora=lora, trainable_only=trainable_only)
    if src.mesh.size * dst.mesh.size <= EXACT_FLOWS:  # at most that many (src, dst) flows
        flows: dict[tuple[int, int], float] = defaultdict(float)
        for dev, _key, nbytes, holders in pieces:
            for s in holders:
                flows[(s, dev)] += nbytes / len(holders)
        return loads_of_flows(((s, d, b) for (s, d), b in flows.items()), cluster)
    return _loads_by_node_type(pieces, cluster)


def _node_types(pieces: _Pieces, dpn: int) -> tuple[list[list[int]], dict[int, dict[int, list[int]]]]:
    """Nodes of the destination grouped by what their devices hold and need, position by
    position (the data-parallel index aside): nodes of one type receive and serve alike.
    Also each node's destination devices as {stage: [index within the stage]}."""
    dst = pieces.dst
    sig: dict[int, list[tuple]] = defaultdict(list)
    per_stage = dst.dp * dst.tp
    where: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for idx, dev in enumerate(dst.mesh.devices):
        sig[dev // dpn].append((dev % dpn, idx // per_stage, idx % dst.tp, pieces.src_at.get(dev)))
        where[dev // dpn][idx // per_stage].append(idx % per_stage)
    src_sig: dict[int, list[tuple]] = defaultdict(list)
    for dev, (st, ss) in pieces.src_at.items():
        if dev // dpn in sig:
            src_sig[dev // dpn].append((dev % dpn, st, ss))
    types: dict[tuple, list[int]] = defaultdict(list)
    for node in sorted(sig):
        types[(tuple(sig[node]), tuple(sorted(src_sig.get(node, ()))))].append(node)
    return list(types.values()), where


def _loads_by_node_type(pieces: _Pieces, cluster: Cluster | None) -> TransferLoads:
    """Loads summed per holder group, computed once per node type and placed on every node of it.

    Holder groups on a receiver's node ("near") map position by position between nodes of
    one type; groups of holders elsewhere ("every", all of them) are the same for all."""
    src = pieces.src
    dpn = cluster.devices_per_node if cluster is not None else max(*pieces.dst.mesh.devices, *src.mesh.devices) + 1
    recv: dict[tuple[int, bool], float] = defaultdict(float)
    sent: dict[tuple[int, bool], float] = defaultdict(float)
    peers: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    every_each: dict[tuple, float] = defaultdict(float)  # (stages, st) -> bytes each holder sends
    every_receivers: dict[tuple, int] = defaultdict(int)
    every_group: dict[tuple, list[int]] = {}
    sender_counts: dict[int, dict[tuple, int]] = defaultdict(lambda: defaultdict(int))
    total = inter = 0.0
    types, where = _node_types(pieces, dpn)
    for nodes in types:
        rep = nodes[0]
        base = rep * dpn
        recv_pos: dict[tuple[int, bool], float] = defaultdict(float)
        near_each: dict[tuple, float] = defaultdict(float)  # (stages, st) -> bytes each near holder sends
        near_group: dict[tuple, list[int]] = {}
        near_receivers: dict[tuple, set[int]] = defaultdict(set)
        far_receivers: dict[tuple, set[int]] = defaultdict(set)
        dst_groups: dict[int, dict[tuple, set[int | None]]] = defaultdict(lambda: defaultdict(set))
        for dev, (stages, st, loc), nbytes, holders in pieces.pieces(where[rep]):
            if nbytes <= 0:
                continue
            pos, far = dev - base, loc is None
            recv_pos[(pos, far)] += nbytes
            total += nbytes * len(nodes)
            inter += nbytes * len(nodes) if far else 0.0
            if far:
                every_each[(stages, st)] += nbytes / len(holders) * len(nodes)
                every_group[(stages, st)] = holders
                far_receivers[(stages, st)].add(pos)
            else:
                near_each[(stages, st)] += nbytes / len(holders)
                near_group[(stages, st)] = [h - base for h in holders]
                near_receivers[(stages, st)].add(pos)
            dst_groups[pos][(stages, far)].add(st)
        for key, positions in far_receivers.items():
            every_receivers[key] += len(positions) * len(nodes)
        counts: dict[int, list[int]] = {}
        for pos, groups in dst_groups.items():
            c = counts[pos] = [0, 0]
            for (stages, far), ranks in groups.items():
                group = every_group if far else near_group
                if None in ranks:  # the replicated group holds every TP rank's cut group
                    c[far] += len(group[(stages, None)])
                else:
                    c[far] += sum(len(group[(stages, st)]) for st in ranks)
        for node in nodes:
            off = node * dpn
            for (pos, far), nbytes in recv_pos.items():
                recv[(off + pos, far)] += nbytes
            for pos, (near_n, far_n) in counts.items():
                peers[off + pos][0] += near_n
                peers[off + pos][1] += far_n
            for key, each in near_each.items():
                n_recv = len(near_receivers[key])
                for q in near_group[key]:
                    sent[(off + q, False)] += each
                    # a holder is in one cut group and one replicated group per (stages, node);
                    # the replicated group's receivers include the cut group's
                    merged = sender_counts[off + q]
                    merged[(key[0], False)] = max(merged[(key[0], False)], n_recv)
    for key, each in every_each.items():
        for s in every_group[key]:
            sent[(s, True)] += each
            merged = sender_counts[s]
            merged[(key[0], True)] = max(merged[(key[0], True)], every_receivers[key])
    for s, merged in sender_counts.items():
        for (_stages, far), count in merged.items():
            peers[s][far] += count
    return TransferLoads(sent=dict(sent), recv=dict(recv), peers={d: (a, b) for d, (a, b) in peers.items()},
                         bytes_total=total, bytes_inter_node=inter)
