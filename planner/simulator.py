"""Discrete-event simulation of a plan: several unrolled iterations on every device.

Semantics (the contract the search and the runtime share):

- **Replicas.** A model's parameters live in its train call's layout ("a trained model
  keeps its training layout"), or, without a train call, in the layout of its first
  call. Layouts are compared by placement: mesh devices and dp/tp/pp (micro-batches
  do not move parameters). Any other placement a call uses is a replica, filled by a
  reallocation from the primary placement before the first call that uses it. For a
  trained model the replica is stale after the train call, so it is refreshed every
  iteration (after the previous iteration's train); for a frozen model only in the
  first iteration (steady state: the replica stays, costing memory).
- **Tasks.** Each iteration is, in topological order, for every call: its
  reallocation (if any), the data transfers into it (one per data key whose producer
  runs in a different placement), then the call itself. Reallocations and transfers
  occupy the devices of both placements. Data transfers are asynchronous: they start
  when the producer ends and delay the consumer by their time, but hold no device
  (data is small next to parameters and moves by non-blocking sends; the timeline
  shows them on the consumer's devices); with `blocking_receives` (realloc's runtime) a
  transfer holds its receiving devices, which wait for it in their step order. Every device runs its tasks in that order
  (iteration by iteration, as the runtime's per-rank step list does); a task starts
  when its dependencies are done and all its devices are free. Dependencies: data
  edges (through the transfer when there is one), parameter edges (readers of M before
  M's train), cross-iteration edges (M's train in iteration i-1 before every call on M
  in iteration i) and the reallocation that fills the call's replica.
- **One-step off-policy** (`off_policy_steps=1`, see `graph.overlap`): the ahead generate
  calls of iteration i make batch i+1, as the runtime's program orders them: first the
  transfers of their outputs of batch i (made in iteration i-1) to the consumers, then
  the ahead calls (after their replica's refresh, which waits on the train of i-1), then
  the rest, whose inputs from the ahead calls depend on iteration i-1. On devices disjoint
  from training, generation of i+1 thus overlaps training of i; the steady state prices it.
- **Steady state.** `num_iterations` (>= 3) iterations are unrolled; the iteration time
  is (end of the last iteration - end of the second) / (num_iterations - 2), which
  leaves out the first iteration's one-off reallocations and start-up.
- **Memory** per device: every replica it holds (each replica's resident bytes: the
  largest `resident_bytes` among the calls using it, so a train layout counts its grads
  and optimizer states) plus the largest transient (`peak_bytes - resident_bytes`) of
  the calls it runs. Replicas are counted as held for the whole iteration
  (conservative). A device over `device_memory_bytes` makes the plan infeasible.
- **Move prices** are cached per move with the nodes it touches renumbered 0, 1, ...
  (a homogeneous cluster: only which devices share a node matters), and each price the
  caches lack adds its work units to `Simulator.work_units`, which the search's budget
  counts (pricing a 70B reallocation on 128 GPUs costs far more than a simulation).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cost_model.estimator import stream_fractions
from cost_model.pipeline_fusion import pair_saving_s
from cost_model.provider import CostProvider
from graph.dataflow import DataflowGraph
from graph.overlap import ahead_calls, check_fusion, intra_pairs, streamed_edges
from graph.placement.layout import DeviceMesh, Layout
from graph.spec import CallKind
from planner.space import GIB, Candidate, placement_key
from planner.timeline import Atoms, Event, Task, list_schedule, shared_schedule
from planner.work_units import (
    SHARED_INCIDENCE_UNITS,
    SIM_BASE_UNITS,
    SIM_INCIDENCE_UNITS,
    data_units,
    realloc_units,
)

CALL, REALLOC, TRANSFER = "call", "realloc", "transfer"



@dataclass(frozen=True, kw_only=True)
class TimelineEntry:
    """One task on one device."""

    device: int
    start: float
    end: float
    what: str
    """call, realloc or transfer."""
    label: str
    """The call's name; "MODEL->CALL" for the reallocation before CALL; "KEY:PRODUCER->CONSUMER"
    for a transfer."""
    iteration: int
    """Unrolled iteration, from 0."""


@dataclass(frozen=True, kw_only=True)
class ReallocStep:
    """Model `model` moves from layout `src` to `dst` before call `before_call`."""

    model: str
    before_call: str
    src: Layout
    dst: Layout
    time_s: float
    bytes_total: float
    every_iteration: bool
    """True for a trained model (the replica goes stale); False: first iteration only."""


@dataclass(frozen=True, kw_only=True)
class DataTransfer:
    """Data key `key` moves from `producer`'s layout to `consumer`'s."""

    key: str
    producer: str
    consumer: str
    src: Layout
    dst: Layout
    time_s: float
    bytes_total: float


@dataclass(frozen=True, kw_only=True)
class SimResult:
    """What the simulation of one plan found."""

    iteration_time_s: float
    """Steady-state seconds per iteration."""
    feasible: bool
    reasons: tuple[str, ...]
    """Why the plan is infeasible (empty when feasible)."""
    overflow_ratio: float
    """Largest (memory - capacity) / capacity over devices; 0 when everything fits."""
    device_peak_bytes: tuple[float, ...]
    """Peak bytes per device (only with detail=True; empty otherwise)."""
    iteration_ends: tuple[float, ...]
    reallocations: tuple[ReallocStep, ...] = ()
    transfers: tuple[DataTransfer, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()
    """Per-device entries of every unrolled iteration (only with detail=True)."""
    call_times: Mapping[str, float] = field(default_factory=dict)
    streamed: tuple[tuple[str, str], ...] = ()
    """(generate call, inference call) edges that streamed samples (inter-stage fusion)."""
    fused: tuple[tuple[str, str], ...] = ()
    """(train call, train call) pairs run as one fused pipeline step (intra-stage fusion)."""


def _transfer_devices(src: Layout, dst: Layout) -> tuple[int, ...]:
    """Ranks a transfer occupies when receives block: each destination rank lacking the data
    (the sending ranks post their sends and go on; see runtime.execution.p2p)."""
    have = set(src.mesh.devices)
    return tuple(sorted(d for d in dst.mesh.devices if d not in have))


def _union(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return a if a == b else tuple(sorted(set(a) | set(b)))


class Simulator:
    """Simulates plans of one graph under one cost provider (caches move costs)."""

    def __init__(self, graph: DataflowGraph, cost: CostProvider, *, num_iterations: int = 4,
                 off_policy_steps: int = 0, fusion: str = "off") -> None:
        if num_iterations < 3:
            raise ValueError(f"num_iterations must be >= 3 to measure a steady state, got {num_iterations}")
        self.graph = graph
        self.off_policy_steps = off_policy_steps
        self.ahead = frozenset(i for i, c in enumerate(graph.calls)
                               if c.name in ahead_calls(graph, off_policy_steps))
        """Indices of the generate calls running one batch ahead (one-step off-policy)."""
        self.fusion = check_fusion(fusion, off_policy_steps)
        """plan.fusion: inter streams every candidate edge (graph.overlap.stream_candidates)."""
        self.cost = cost
        self.num_iterations = num_iterations
        self.calls = graph.calls
        self.index = {c.name: i for i, c in enumerate(self.calls)}
        self.models = graph.models
        self.train_index: dict[str, int] = {}
        for i, c in enumerate(self.calls):
            if c.kind is CallKind.TRAIN:
                self.train_index[c.model] = i
        self.data_in: list[list[tuple[int, str]]] = [[] for _ in self.calls]
        for e in graph.data_edges():
            self.data_in[self.index[e.dst]].append((self.index[e.src], e.key))
        self.param_in: list[list[int]] = [[] for _ in self.calls]
        for e in graph.param_edges():
            self.param_in[self.index[e.dst]].append(self.index[e.src])
        self._realloc_cache: dict[tuple, tuple[float, float]] = {}
        self._data_cache: dict[tuple, tuple[float, float]] = {}
        self._moves: dict[tuple, tuple[float, float]] = {}  # the same, by the moves' own keys
        self._held: dict[tuple, tuple[int, ...]] = {}  # devices a blocking transfer holds
        self.num_devices = cost.cluster.num_devices
        cores = float(getattr(cost, "host_cores", 0.0) or 0.0)
        self.host_cores = cores if 0 < cores < cost.cluster.devices_per_node else 0.0
        """Cores a node's devices share; 0 when they never run short (see `_schedule_shared`)."""
        self.blocking_receives = bool(getattr(cost, "blocking_receives", False))
        """Data transfers occupy their receiving devices, in their program order (a runtime whose
        receives block and whose sends do not) instead of running asynchronously beside them."""
        self.iteration_barrier = bool(getattr(cost, "iteration_barrier", False))
        """Iterations do not overlap: every task of iteration i waits for all of iteration i-1
        (a runtime that synchronises every rank at the end of each iteration)."""
        self.work_units = 0.0
        """Work units (see `realloc_units`) spent simulating and pricing moves the caches lacked."""
        self.last_incidences = 0
        """Task instances x (resources + dependencies + 1) of the last simulation (its work)."""

    # ------------------------------------------------------------------ moves

    def _canonical(self, src: Layout, dst: Layout) -> tuple[Layout, Layout]:
        """The same move with the nodes it touches renumbered 0, 1, ... in order.

        Move costs depend on which devices share a node, not on which nodes they are
        (a homogeneous cluster), so moves that differ only by whole nodes share one
        estimate and one cache entry.
        """
        dpn = self.cost.cluster.devices_per_node
        nodes = sorted({d // dpn for d in src.mesh.devices} | {d // dpn for d in dst.mesh.devices})
        if nodes == list(range(len(nodes))):
            return src, dst
        rank = {n: k for k, n in enumerate(nodes)}

        def moved(lay: Layout) -> Layout:
            devices = tuple(rank[d // dpn] * dpn + d % dpn for d in lay.mesh.devices)
            return dataclasses.replace(lay, mesh=DeviceMesh(devices=devices))

        return moved(src), moved(dst)

    def _realloc(self, model: str, src: Candidate, dst: Candidate) -> tuple[float, float]:
        direct = (model, src.key, dst.key)
        hit = self._moves.get(direct)
        if hit is not None:
            return hit
        a, b = self._canonical(src.layout, dst.layout)
        key = (model, placement_key(a), placement_key(b))
        hit = self._realloc_cache.get(key)
        if hit is None:
            est = self.cost.realloc_estimate(self.models[model], a, b)
            hit = (est.time_s, est.bytes_total)
            self._realloc_cache[key] = hit
            self.work_units += realloc_units(a, b)
        self._moves[direct] = hit
        return hit

    def _data(self, p: int, c: int, key: str, src: Candidate, dst: Candidate) -> tuple[float, float]:
        direct = (p, c, key, src.key, dst.key)
        hit = self._moves.get(direct)
        if hit is not None:
            return hit
        a, b = self._canonical(src.layout, dst.layout)
        ck = (p, c, key, placement_key(a), placement_key(b))
        hit = self._data_cache.get(ck)
        if hit is None:
            est = self.cost.data_estimate(self.calls[p], self.calls[c], key, a, b)
            hit = (est.time_s, est.bytes_total)
            self._data_cache[ck] = hit
            self.work_units += data_units(a, b)
        self._moves[direct] = hit
        return hit

    def _held_by_transfer(self, src: Candidate, dst: Candidate) -> tuple[int, ...]:
        key = (src.key[0], dst.key[0])
        hit = self._held.get(key)
        if hit is None:
            hit = self._held[key] = _transfer_devices(src.layout, dst.layout)
        return hit

    def primaries(self, cands: Sequence[Candidate]) -> dict[str, Candidate]:
        """The placement holding each weighted model's parameters."""
        out: dict[str, Candidate] = {}
        for i, c in enumerate(self.calls):
            if self.models[c.model].arch is None:
                continue
            t = self.train_index.get(c.model)
            if t is not None:
                out[c.model] = cands[t]
            elif c.model not in out:
                out[c.model] = cands[i]
        return out

    def _tasks(self, cands: Sequence[Candidate], primaries: dict[str, Candidate],
               streamed: frozenset[tuple[int, int]] = frozenset(),
               fused: frozenset[tuple[int, int]] = frozenset()) -> list[Task]:
        b = _TaskBuilder(self, cands, primaries)
        saving = {j: pair_saving_s(self.calls[i], cands[i].estimate, self.calls[j], cands[j].estimate)
                  for i, j in fused}
        tasks = b.tasks
        ahead = self.ahead
        stream_of: dict[int, list[int]] = {}
        for g, c in sorted(streamed):
            stream_of.setdefault(g, []).append(c)
        fused = {c for _, c in streamed}
        # one step off-policy: the ahead calls' outputs of this iteration's batch (made one
        # iteration earlier) move first, then the ahead calls make the next batch, then the rest
        early: dict[tuple[int, int, str], int] = {}
        if ahead:
            for i in range(len(self.calls)):
                if i in ahead:
                    continue
                for p, key in self.data_in[i]:
                    if p in ahead and cands[p].key != cands[i].key:
                        early[(p, i, key)] = len(tasks)
                        tasks.append(self._transfer_task(p, i, key, cands[p], cands[i], []))
        order = [i for i in range(len(self.calls)) if i in ahead] + \
                [i for i in range(len(self.calls)) if i not in ahead]
        for i in order:
            if i in fused:
                continue  # built with the generate call it streams from
            if i in stream_of:
                self._stream_tasks(b, i, stream_of[i])
                continue
            deps = b.deps_of(i, early=early)
            b.call_task[i] = len(tasks)
            time_s = cands[i].estimate.time_s - saving.get(i, 0.0)  # the fused pair's one fill/drain
            tasks.append(Task(CALL, self.calls[i].name, cands[i].key[0], time_s, deps))
        for (p, _i, _key), k in early.items():
            tasks[k].deps.append((b.call_task[p], -1))
        # cross-iteration edges need the train's task index, known only now
        for k, model in b.pending:
            tasks[k].deps.append((b.call_task[self.train_index[model]], -1))
        for i, call in enumerate(self.calls):
            t = self.train_index.get(call.model)
            if t is not None:
                tasks[b.call_task[i]].deps.append((b.call_task[t], -1))
        return tasks

    def _stream_tasks(self, b: _TaskBuilder, g: int, consumers: list[int]) -> None:
        """Generate call g streaming finished samples to `consumers` (inter-stage fusion).

        g is cut into STREAM_PIECES pieces of equal decode steps; by the end of piece j the
        fraction F_j of samples has finished (the response-length distribution's CDF at that
        step of the expected longest response; 0 before the end without a distribution). A
        consumer's piece j scores (and receives) those F_j - F_{j-1} samples once piece j of g
        has ended: its work overlaps generation of the long tail. Each piece with samples is one
        more call of the consumer per generating replica (each sends its own chunks), so it pays
        the call's fixed overhead (`call_overhead_s`) again.
        """
        cands, tasks = b.cands, b.tasks
        consumer_deps = {c: b.deps_of(c, skip_from=g) for c in consumers}  # their refreshes come first
        gen_deps = b.deps_of(g)
        fracs = stream_fractions(self.calls[g], cands[g].layout)
        gen_time = cands[g].estimate.time_s
        pieces: list[int] = []
        for j in range(len(fracs)):
            pieces.append(len(tasks))
            tasks.append(Task(CALL, self.calls[g].name, cands[g].key[0], gen_time / len(fracs),
                              gen_deps if j == 0 else [(pieces[-2], 0)]))
        b.call_task[g] = pieces[-1]
        last: dict[int, int] = {}
        for j, frac in enumerate(fracs):
            share = frac - (fracs[j - 1] if j else 0.0)
            for c in consumers:
                move = sum(self._data(g, c, key, cands[g], cands[c])[0]
                           for p, key in self.data_in[c] if p == g)
                # every chunk (one per generating replica and piece) is one more call of the
                # consumer: it pays the call's fixed overhead again
                fixed = cands[c].estimate.breakdown.get("call_overhead_s", 0.0)
                chunks = cands[g].layout.dp if share > 0 else 0
                work = share * (cands[c].estimate.time_s - fixed + move) + fixed * chunks
                deps = [(pieces[j], 0)] + (consumer_deps[c] if j == 0 else [(last[c], 0)])
                last[c] = len(tasks)
                tasks.append(Task(CALL, self.calls[c].name, cands[c].key[0], work, deps))
        for c in consumers:
            b.call_task[c] = last[c]

    def _transfer_task(self, p: int, i: int, key: str, src: Candidate, dst: Candidate,
                       deps: list[tuple[int, int]]) -> Task:
        dur, nbytes = self._data(p, i, key, src, dst)
        held = self._held_by_transfer(src, dst) if self.blocking_receives and dur > 0 else ()
        return Task(TRANSFER, f"{key}:{self.calls[p].name}->{self.calls[i].name}", held, dur, deps,
                    ref=(key, self.calls[p].name, self.calls[i].name, src.layout, dst.layout, dur, nbytes),
                    shown=dst.key[0])

    # ------------------------------------------------------------------ memory

    def _memory(self, cands: Sequence[Candidate], atoms: Atoms) -> list[float]:
        """Peak bytes per atom (see the module docstring); a prefix of the calls is allowed."""
        resident: dict[tuple, float] = {}
        held_by: dict[tuple, tuple[int, ...]] = {}
        total = [0.0] * len(atoms)
        for call, cand in zip(self.calls, cands):
            est = cand.estimate
            if self.models[call.model].arch is not None:
                rk = (call.model, cand.key)
                resident[rk] = max(resident.get(rk, 0.0), est.resident_bytes)
                held_by[rk] = cand.key[0]
                extra = max(0.0, est.peak_bytes - est.resident_bytes)
            else:
                extra = est.peak_bytes
            for a in atoms.of(cand.key[0]):
                if extra > total[a]:
                    total[a] = extra
        for rk, nbytes in resident.items():
            for a in atoms.of(held_by[rk]):
                total[a] += nbytes
        return total

    def memory(self, cands: Sequence[Candidate]) -> list[float]:
        """Peak bytes per device (see the module docstring); a prefix of the calls is allowed."""
        atoms = Atoms([c.key[0] for c in cands])
        out = [0.0] * self.num_devices
        for a, nbytes in enumerate(self._memory(cands, atoms)):
            for d in atoms.devices(a):
                out[d] = nbytes
        return out

    # ------------------------------------------------------------------ run

    def _schedule(self, tasks: list[Task], detail: bool) -> tuple[list[float], list[Event]]:
        """The list schedule of tasks on their devices (each device its own resource)."""
        return list_schedule(tasks, [t.devices for t in tasks], self.num_devices, self.num_iterations,
                             barrier=self.iteration_barrier, detail=detail)

    def _schedule_shared(self, tasks: list[Task], detail: bool) -> tuple[list[float], list[Event]]:
        """The processor-sharing schedule of tasks on their devices (`host_cores` per node)."""
        dpn = self.cost.cluster.devices_per_node
        return shared_schedule(tasks, [t.devices for t in tasks], self.num_devices, self.num_iterations,
                               node_of=[d // dpn for d in range(self.num_devices)],
                               size_of=[1] * self.num_devices, cores=self.host_cores,
                               barrier=self.iteration_barrier, detail=detail)

    def _run(self, tasks: list[Task], atoms: Atoms, detail: bool) -> tuple[list[float], list[Event]]:
        """Schedule the tasks on atoms (devices with identical timelines) and charge the work."""
        held = [atoms.of(t.devices) if t.devices else () for t in tasks]
        n = self.num_iterations
        incidences = sum(len(h) + len(t.deps) + 1 for h, t in zip(held, tasks)) * n
        self.last_incidences = incidences
        if self.host_cores:
            dpn = self.cost.cluster.devices_per_node
            self.work_units += SIM_BASE_UNITS + SHARED_INCIDENCE_UNITS * incidences
            return shared_schedule(tasks, held, len(atoms), n,
                                   node_of=[atoms.first_device(a) // dpn for a in range(len(atoms))],
                                   size_of=atoms.sizes, cores=self.host_cores,
                                   barrier=self.iteration_barrier, detail=detail)
        self.work_units += SIM_BASE_UNITS + SIM_INCIDENCE_UNITS * incidences
        return list_schedule(tasks, held, len(atoms), n, barrier=self.iteration_barrier, detail=detail)

    def fused_of(self, cands: Sequence[Candidate],
                 pairs: Sequence[tuple[str, str]] | None = None) -> frozenset[tuple[int, int]]:
        """Train pairs (index, index) that run fused: `pairs` when given, else those `fusion`
        implies for these layouts (every candidate for intra and all, none otherwise)."""
        if pairs is None:
            meshes = {c.name: cand.key[0] for c, cand in zip(self.calls, cands)}
            shapes = {c.name: cand.key[1:] for c, cand in zip(self.calls, cands)}
            pairs = intra_pairs(self.graph, meshes, shapes, self.fusion)
        return frozenset((self.index[a], self.index[b]) for a, b in pairs)

    def streamed_of(self, cands: Sequence[Candidate],
                    edges: Sequence[tuple[str, str]] | None = None) -> frozenset[tuple[int, int]]:
        """Edges (generate index, consumer index) that stream: `edges` when given, else those
        `fusion` implies for these layouts (every candidate for inter, none for off and auto)."""
        if edges is None:
            meshes = {c.name: cand.key[0] for c, cand in zip(self.calls, cands)}
            edges = streamed_edges(self.graph, meshes, self.fusion, self.off_policy_steps)
        return frozenset((self.index[g], self.index[c]) for g, c in edges)

    def simulate(self, cands: Sequence[Candidate], *, detail: bool = False,
                 streamed: Sequence[tuple[str, str]] | None = None,
                 fused: Sequence[tuple[str, str]] | None = None) -> SimResult:
        """Simulate the plan given by one candidate per call (in `graph.calls` order);
        `streamed` names the (generate, inference) edges that stream (default: see `streamed_of`),
        `fused` the train pairs that run one fused pipeline (default: see `fused_of`)."""
        if len(cands) != len(self.calls):
            raise ValueError(f"expected {len(self.calls)} layouts, one per call, got {len(cands)}")
        primaries = self.primaries(cands)
        edges = self.streamed_of(cands, streamed)
        pairs = self.fused_of(cands, fused)
        tasks = self._tasks(cands, primaries, edges, pairs)
        dpn = self.cost.cluster.devices_per_node
        atoms = Atoms([t.devices for t in tasks] + [c.key[0] for c in cands],
                      cut_every=dpn if self.host_cores else 0)
        ends, events = self._run(tasks, atoms, detail)
        n = self.num_iterations
        iteration_time = (ends[-1] - ends[1]) / (n - 2)
        mem = self._memory(cands, atoms)
        cap = self.cost.device_memory_bytes
        worst = max(mem)
        overflow = max(0.0, (worst - cap) / cap)
        reasons = []
        for i, c in enumerate(cands):
            if not c.estimate.feasible:
                reasons.append(f"call {self.calls[i].name!r}: {c.estimate.reason or 'infeasible layout'}")
        if worst > cap:
            d = atoms.first_device(mem.index(worst))
            held = [self.calls[i].name for i, c in enumerate(cands) if d in c.key[0]]
            reasons.append(
                f"device {d} needs {worst / GIB:.2f} GiB (replicas and peaks of {', '.join(held)}) "
                f"but has {cap / GIB:.2f} GiB"
            )
        per_device: tuple[float, ...] = ()
        if detail:
            expanded = [0.0] * self.num_devices
            for a, nbytes in enumerate(mem):
                for dev in atoms.devices(a):
                    expanded[dev] = nbytes
            per_device = tuple(expanded)
        names = tuple(sorted((self.calls[g].name, self.calls[c].name) for g, c in edges))
        result = SimResult(iteration_time_s=iteration_time, feasible=not reasons,
                           reasons=tuple(reasons), overflow_ratio=overflow,
                           device_peak_bytes=per_device, iteration_ends=tuple(ends), streamed=names,
                           fused=tuple(sorted((self.calls[a].name, self.calls[b].name) for a, b in pairs)))
        if not detail:
            return result
        return _with_detail(result, self.calls, cands, tasks, events)


class _TaskBuilder:
    """The task list of one simulation while it is built: replicas, pending cross edges, call tasks."""

    def __init__(self, sim: Simulator, cands: Sequence[Candidate], primaries: dict[str, Candidate]) -> None:
        self.sim, self.cands, self.primaries = sim, cands, primaries
        self.tasks: list[Task] = []
        self.call_task: dict[int, int] = {}
        self.replica_task: dict[tuple, int] = {}
        self.pending: list[tuple[int, str]] = []

    def deps_of(self, i: int, *, early: Mapping[tuple[int, int, str], int] | None = None,
                skip_from: int = -1) -> list[tuple[int, int]]:
        """Call i's dependencies, adding its replica's refresh and its data transfers as tasks
        (data from `skip_from`, which streams, is left out)."""
        sim, cands, tasks = self.sim, self.cands, self.tasks
        call, cand = sim.calls[i], cands[i]
        ahead = sim.ahead
        deps: list[tuple[int, int]] = []
        prim = self.primaries.get(call.model)
        trained = call.model in sim.train_index
        if prim is not None and cand.key != prim.key:
            rkey = (call.model, cand.key)
            if rkey not in self.replica_task:
                dur, nbytes = sim._realloc(call.model, prim, cand)
                self.replica_task[rkey] = len(tasks)
                if trained:  # after the previous iteration's train, patched in below
                    self.pending.append((len(tasks), call.model))
                step = (call.model, call.name, prim.layout, cand.layout, dur, nbytes, trained)
                tasks.append(Task(REALLOC, f"{call.model}->{call.name}",
                                  _union(prim.key[0], cand.key[0]), dur, [],
                                  first_only=not trained, ref=step))
            deps.append((self.replica_task[rkey], 0))
        for p, key in sim.data_in[i]:
            if p == skip_from:
                continue
            lag = -1 if p in ahead and i not in ahead else 0
            src = cands[p]
            if src.key == cand.key:
                deps.append((self.call_task[p], lag))
            elif lag:
                assert early is not None
                deps.append((early[(p, i, key)], 0))
            else:
                tasks.append(sim._transfer_task(p, i, key, src, cand, [(self.call_task[p], 0)]))
                deps.append((len(tasks) - 1, 0))
        for p in sim.param_in[i]:
            # an ahead call reads the weights through its replica's refresh (or on the home
            # devices themselves), which comes before the train in every device's order
            if p not in ahead:
                deps.append((self.call_task[p], 0))
        return deps


def _with_detail(result: SimResult, calls: Sequence, cands: Sequence[Candidate],
                 tasks: list[Task], events: list[tuple]) -> SimResult:
    reallocs = tuple(
        ReallocStep(model=r[0], before_call=r[1], src=r[2], dst=r[3], time_s=r[4],
                    bytes_total=r[5], every_iteration=r[6])
        for r in (t.ref for t in tasks if t.kind == REALLOC)
    )
    transfers = tuple(
        DataTransfer(key=r[0], producer=r[1], consumer=r[2], src=r[3], dst=r[4], time_s=r[5],
                     bytes_total=r[6])
        for r in (t.ref for t in tasks if t.kind == TRANSFER)
    )
    timeline = tuple(
        TimelineEntry(device=d, start=start, end=end, what=task.kind, label=task.label, iteration=it)
        for task, start, end, it in events if end > start
        for d in task.shown
    )
    call_times = {c.name: cands[i].estimate.time_s for i, c in enumerate(calls)}
    return SimResult(iteration_time_s=result.iteration_time_s, feasible=result.feasible,
                     reasons=result.reasons, overflow_ratio=result.overflow_ratio,
                     device_peak_bytes=result.device_peak_bytes,
                     iteration_ends=result.iteration_ends, reallocations=reallocs,
                     transfers=transfers, timeline=timeline, call_times=call_times,
                     streamed=result.streamed, fused=result.fused)
