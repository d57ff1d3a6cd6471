"""The plan space: device meshes, 3D strategies and micro-batch counts per call.

Meshes are aligned power-of-two blocks inside a node (sizes 1, 2, 4, ... up to the
node size) and runs of whole nodes (any start, any length; on clusters of more than
16 nodes on a coarser grid, see `enumerate_meshes`), so the shapes follow
`Cluster.devices_per_node` instead of assuming 8 GPUs per node. On each mesh a call
may use every `dp x tp x pp = mesh size` with

- tp <= devices per node, tp dividing the model's attention heads, and tp either
  dividing the KV heads or being a multiple of them (KV heads are then replicated);
- pp <= the number of layers, and pp = 1 for generate calls unless
  `SpaceOptions.allow_pp_generate`;
- dp <= batch size, and dp x micro-batches <= batch size.

Micro-batch counts are the call's lower bound times 1, 2, 4, ... (`micro_batch_choices`
of them). A rule-based reward (no weights) gets one-device layouts only.

Pricing assumes a homogeneous cluster: a call's estimate depends on a mesh's size and
the number of nodes it spans, not on which devices it holds, so each shape is priced
once and reused. Per (mesh, strategy) only the micro-batch counts on the
(time, peak memory, resident memory) Pareto front are kept; layouts whose estimate is
infeasible or whose peak exceeds the device memory are pruned. When nothing is left for
a call, `build_space` raises a ValueError naming the call and how far it is from fitting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

from cost_model.provider import CallEstimate, CostProvider
from graph.dataflow import DataflowGraph
from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.sampling import expected_runs
from graph.spec import Call, CallKind, ModelSpec
from planner.errors import PlanError

GIB = float(1 << 30)


@dataclass(frozen=True, kw_only=True)
class SpaceOptions:
    """Knobs of the plan space."""

    allow_pp_generate: bool = False
    """Allow pipeline parallelism (pp > 1) for generate calls; off because runtimes often lack it."""
    micro_batch_choices: int = 3
    """How many micro-batch counts to try per strategy (lower bound x 1, 2, 4, ...)."""
    max_mesh_nodes: int = 0
    """Largest run of whole nodes a mesh may span (0: the whole cluster)."""

    def __post_init__(self) -> None:
        if self.micro_batch_choices < 1:
            raise ValueError(
                f"micro_batch_choices must be >= 1, got {self.micro_batch_choices}; use 1 to keep "
                "each call's own micro-batch count"
            )
        if self.max_mesh_nodes < 0:
            raise ValueError(f"max_mesh_nodes must be >= 0 (0 = no limit), got {self.max_mesh_nodes}")


class Candidate(NamedTuple):
    """One priced layout of one call."""

    layout: Layout
    estimate: CallEstimate
    key: tuple
    """The parameter placement (devices, dp, tp, pp): layouts with equal keys share a replica."""


def placement_key(layout: Layout) -> tuple:
    """Layouts with equal keys hold the same parameter shards on the same devices."""
    return (layout.mesh.devices, layout.dp, layout.tp, layout.pp)


def make_candidate(layout: Layout, estimate: CallEstimate) -> Candidate:
    """Wrap a priced layout."""
    return Candidate(layout, estimate, placement_key(layout))


def _powers_of_two_upto(limit: int) -> list[int]:
    out, size = [], 1
    while size <= limit:
        out.append(size)
        size *= 2
    return out


MAX_GRANULES = 16
"""Clusters of more nodes than this place whole-node meshes on a coarser grid (see `mesh_granule`)."""


def mesh_granule(num_nodes: int) -> int:
    """Nodes per granule: the smallest power of two leaving at most MAX_GRANULES granules."""
    g = 1
    while num_nodes > MAX_GRANULES * g:
        g *= 2
    return g


def enumerate_meshes(cluster: Cluster, *, max_mesh_nodes: int = 0) -> tuple[DeviceMesh, ...]:
    """Aligned power-of-two blocks inside nodes, then runs of whole nodes.

    Up to MAX_GRANULES nodes: blocks inside every node and runs of any length at any
    start. On larger clusters the runs are laid on a grid of `mesh_granule` nodes
    (g): runs of whole granules at granule starts, power-of-two runs shorter than a
    granule at aligned starts, and blocks inside the first node of each granule. A
    homogeneous cluster prices a call by its mesh's shape, so the coarser grid keeps every
    shape and loses only some relative positions of calls (at 128 nodes, ~600 meshes
    instead of ~10,000).
    """
    dpn, num_nodes = cluster.devices_per_node, cluster.num_nodes
    g = mesh_granule(num_nodes)
    meshes: dict[tuple[int, ...], DeviceMesh] = {}
    top = num_nodes if max_mesh_nodes == 0 else min(max_mesh_nodes, num_nodes)
    for node in range(0, num_nodes, g):
        base = node * dpn
        for size in _powers_of_two_upto(dpn):
            for offset in range(0, dpn - size + 1, size):
                mesh = DeviceMesh.span(base + offset, size)
                meshes[mesh.devices] = mesh
    for length in _powers_of_two_upto(min(g - 1, top)):
        for first in range(0, num_nodes - length + 1, length):
            mesh = DeviceMesh.span(first * dpn, length * dpn)
            meshes[mesh.devices] = mesh
    for length in range(g, top + 1, g):
        for first in range(0, num_nodes - length + 1, g):
            mesh = DeviceMesh.span(first * dpn, length * dpn)
            meshes[mesh.devices] = mesh
    return tuple(sorted(meshes.values(), key=lambda m: (m.size, m.devices)))


def tp_allowed(model: ModelSpec, tp: int, cluster: Cluster) -> bool:
    """Whether tensor parallelism `tp` suits the model's heads and the node size."""
    if model.arch is None:
        return tp == 1
    arch = model.arch
    if tp > cluster.devices_per_node or arch.num_heads % tp:
        return False
    return arch.num_kv_heads % tp == 0 or tp % arch.num_kv_heads == 0


def strategies(call: Call, model: ModelSpec, size: int, cluster: Cluster,
               options: SpaceOptions) -> list[tuple[int, int, int]]:
    """Every allowed (dp, tp, pp) with dp * tp * pp == size."""
    if model.arch is None:
        return [(1, 1, 1)] if size == 1 else []
    out = []
    for tp in range(1, size + 1):
        if size % tp or not tp_allowed(model, tp, cluster):
            continue
        for pp in range(1, size // tp + 1):
            if (size // tp) % pp or pp > model.arch.num_layers:
                continue
            if pp > 1 and call.kind is CallKind.GENERATE and not options.allow_pp_generate:
                continue
            dp = size // (tp * pp)
            if dp * call.micro_batches > call.batch_size:
                continue
            out.append((dp, tp, pp))
    return out


def micro_batch_counts(call: Call, dp: int, options: SpaceOptions) -> list[int]:
    """The call's lower bound times 1, 2, 4, ... while every dp rank keeps a sequence each."""
    out, m = [], call.micro_batches
    while len(out) < options.micro_batch_choices and dp * m <= call.batch_size:
        out.append(m)
        m *= 2
    return out


def _pareto(priced: list[Candidate]) -> list[Candidate]:
    """Drop candidates no better than another in time, peak and resident memory."""
    keep = []
    for c in priced:
        e = c.estimate
        dominated = any(
            o is not c and o.estimate.time_s <= e.time_s and o.estimate.peak_bytes <= e.peak_bytes
            and o.estimate.resident_bytes <= e.resident_bytes
            and (o.estimate.time_s, o.estimate.peak_bytes, o.estimate.resident_bytes)
            < (e.time_s, e.peak_bytes, e.resident_bytes)
            for o in priced
        )
        if not dominated:
            keep.append(c)
    return keep


@dataclass(frozen=True, kw_only=True)
class CallSpace:
    """The feasible candidates of one call, fastest first, and why others were dropped."""

    call: str
    candidates: tuple[Candidate, ...]
    num_priced: int
    """Layouts priced before pruning."""
    closest_miss: str = ""
    """For an empty space: the infeasible layout closest to fitting, and by how much."""


def fits(estimate: CallEstimate, device_memory_bytes: float) -> bool:
    """Whether one call's estimate is feasible on its own."""
    return estimate.feasible and estimate.peak_bytes <= device_memory_bytes


def _miss_text(call: Call, layout: Layout, est: CallEstimate, memory: float) -> str:
    over = est.peak_bytes - memory
    why = est.reason or (
        f"peak {est.peak_bytes / GIB:.2f} GiB per device exceeds {memory / GIB:.2f} GiB "
        f"by {over / GIB:.2f} GiB"
    )
    return f"call {call.name!r} does not fit: even its best layout {layout} fails: {why}"


class Pricer:
    """Prices layouts, reusing estimates across meshes of the same shape.

    `runs` holds the expected runs per iteration of calls that run more than once (the
    generation and reward calls of DAPO's dynamic sampling, `graph.sampling.expected_runs`):
    their time is the one-run estimate times that, memory unchanged."""

    def __init__(self, cost: CostProvider, runs: Mapping[str, float] | None = None) -> None:
        self.cost = cost
        self.runs = dict(runs or {})
        self.cache: dict[tuple, CallEstimate] = {}
        self._nodes: dict[tuple[int, ...], int] = {}

    def nodes(self, mesh: DeviceMesh) -> int:
        """Nodes the mesh spans (cached)."""
        hit = self._nodes.get(mesh.devices)
        if hit is None:
            hit = self._nodes[mesh.devices] = len(mesh.nodes(self.cost.cluster))
        return hit

    def price(self, call: Call, model: ModelSpec, layout: Layout) -> CallEstimate:
        nodes = self.nodes(layout.mesh)
        key = (call.name, layout.mesh.size, nodes, layout.strategy, layout.micro_batches)
        est = self.cache.get(key)
        if est is None:
            est = repeated(self.cost.call_estimate(call, model, layout), self.runs.get(call.name, 1.0))
            self.cache[key] = est
        return est


def repeated(est: CallEstimate, runs: float) -> CallEstimate:
    """The estimate of a call run `runs` times an iteration on average (time scales, memory
    does not); the extra time is the breakdown's `resampling_s`."""
    if runs == 1.0 or not est.feasible:
        return est
    extra = est.time_s * (runs - 1.0)
    return dataclasses.replace(est, time_s=est.time_s + extra,
                               breakdown={**est.breakdown, "resampling_s": extra})


def build_call_space(call: Call, model: ModelSpec, cost: CostProvider,
                     meshes: tuple[DeviceMesh, ...], options: SpaceOptions,
                     pricer: Pricer | None = None) -> CallSpace:
    """Price every layout of `call` over `meshes` and keep the feasible, non-dominated ones.

    Layouts are priced and pruned once per mesh shape (size and nodes spanned), then
    placed on every mesh of that shape."""
    pricer = pricer or Pricer(cost)
    memory = cost.device_memory_bytes
    kept: list[Candidate] = []
    num_priced = 0
    best_miss: tuple[float, str] | None = None
    shapes: dict[tuple[int, int], list[DeviceMesh]] = {}
    for mesh in meshes:
        shapes.setdefault((mesh.size, len(mesh.nodes(cost.cluster))), []).append(mesh)
    for group in shapes.values():
        first = group[0]
        front: list[tuple[tuple[int, int, int, int], CallEstimate]] = []
        for dp, tp, pp in strategies(call, model, first.size, cost.cluster, options):
            priced = []
            for m in micro_batch_counts(call, dp, options):
                layout = Layout(mesh=first, dp=dp, tp=tp, pp=pp, micro_batches=m)
                est = pricer.price(call, model, layout)
                num_priced += len(group)
                if fits(est, memory):
                    priced.append(make_candidate(layout, est))
                else:
                    score = est.peak_bytes - memory
                    if best_miss is None or score < best_miss[0]:
                        best_miss = (score, _miss_text(call, layout, est, memory))
            front.extend(((c.layout.dp, c.layout.tp, c.layout.pp, c.layout.micro_batches), c.estimate)
                         for c in _pareto(priced))
        for mesh in group:
            for (dp, tp, pp, m), est in front:
                kept.append(make_candidate(Layout(mesh=mesh, dp=dp, tp=tp, pp=pp, micro_batches=m), est))
    kept.sort(key=lambda c: (c.estimate.time_s, c.layout.mesh.size, c.layout.mesh.devices,
                             c.layout.strategy, c.layout.micro_batches))
    miss = best_miss[1] if best_miss else f"call {call.name!r} has no allowed layout"
    return CallSpace(call=call.name, candidates=tuple(kept), num_priced=num_priced,
                     closest_miss="" if kept else miss)


def build_space(graph: DataflowGraph, cost: CostProvider,
                options: SpaceOptions | None = None) -> Mapping[str, CallSpace]:
    """Feasible candidates for every call; ValueError naming a call that fits nowhere."""
    options = options or SpaceOptions()
    meshes = enumerate_meshes(cost.cluster, max_mesh_nodes=options.max_mesh_nodes)
    pricer = Pricer(cost, expected_runs(graph))
    out: dict[str, CallSpace] = {}
    for call in graph.calls:
        model = graph.models[call.model]
        space = build_call_space(call, model, cost, meshes, options, pricer)
        if not space.candidates:
            raise PlanError(
                f"{space.closest_miss}; the cluster ({cost.cluster.num_nodes} x "
                f"{cost.cluster.devices_per_node} devices of "
                f"{cost.device_memory_bytes / GIB:.1f} GiB) is too small for it: add devices "
                "or memory, or shrink the batch or sequence lengths"
            )
        out[call.name] = space
    return out
