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
  shows them on the consumer's devices). Every device runs its tasks in that order
  (iteration by iteration, as the runtime's per-rank step list does); a task starts
  when its dependencies are done and all its devices are free. Dependencies: data
  edges (through the transfer when there is one), parameter edges (readers of M before
  M's train), cross-iteration edges (M's train in iteration i-1 before every call on M
  in iteration i) and the reallocation that fills the call's replica.
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
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cost_model.provider import CostProvider
from graph.dataflow import DataflowGraph
from graph.placement.layout import DeviceMesh, Layout
from graph.spec import CallKind
from planner.space import GIB, Candidate, placement_key

CALL, REALLOC, TRANSFER = "call", "realloc", "transfer"

# Work units (reference microseconds, as in planner.search) of pricing one move the caches
# lack, fitted to the analytic cost model on one core: a reallocation's cost grows with the
# representative layers (lcm of the pp degrees) times the shards held and sent; a data
# transfer's with the flows between dp ranks. Cheaper providers are over-charged (safe).
REALLOC_BASE_UNITS = 200.0
REALLOC_SHARD_UNITS = 8.0
DATA_BASE_UNITS = 30.0
DATA_FLOW_UNITS = 1.5
# The processor-sharing schedule (devices sharing host cores) costs about this many more work
# units per task instance than the list schedule the search's evaluation units assume.
SHARED_TASK_UNITS = 2.5


def realloc_units(src: Layout, dst: Layout) -> float:
    """Work units of pricing one reallocation from `src` to `dst`."""
    reps = math.lcm(src.pp, dst.pp)
    per_dst = dst.dp * dst.tp
    fan_in = src.dp * max(1.0, src.tp / dst.tp)
    return REALLOC_BASE_UNITS + REALLOC_SHARD_UNITS * reps * (src.dp * src.tp + per_dst * (1 + fan_in))


def data_units(src: Layout, dst: Layout) -> float:
    """Work units of pricing one data transfer from `src` to `dst`."""
    flows = (src.dp + dst.dp) * dst.tp * (2 if dst.pp > 1 else 1)
    return DATA_BASE_UNITS + DATA_FLOW_UNITS * flows


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
    iteration_ends: tuple[float, ...]
    reallocations: tuple[ReallocStep, ...] = ()
    transfers: tuple[DataTransfer, ...] = ()
    timeline: tuple[TimelineEntry, ...] = ()
    """Per-device entries of every unrolled iteration (only with detail=True)."""
    call_times: Mapping[str, float] = field(default_factory=dict)


class _Task:
    __slots__ = ("kind", "label", "devices", "shown", "duration", "deps", "first_only", "ref")

    def __init__(self, kind: str, label: str, devices: tuple[int, ...], duration: float,
                 deps: list[tuple[int, int]], first_only: bool = False, ref: object = None,
                 shown: tuple[int, ...] | None = None) -> None:
        self.kind = kind
        self.label = label
        self.devices = devices  # held while the task runs
        self.shown = devices if shown is None else shown  # where the timeline draws it
        self.duration = duration
        self.deps = deps  # (task index, iteration offset: 0 same, -1 previous)
        self.first_only = first_only
        self.ref = ref


def _share_rates(running: list[tuple[int, ...]], devices_per_node: int, cores: float) -> list[float]:
    """Speed of each running task (given by its devices) when a node's busy devices share `cores`."""
    busy: dict[int, int] = {}
    for devs in running:
        for d in devs:
            busy[d // devices_per_node] = busy.get(d // devices_per_node, 0) + 1
    return [min((min(1.0, cores / busy[d // devices_per_node]) for d in devs), default=1.0) for devs in running]


def _transfer_devices(src: Layout, dst: Layout) -> tuple[int, ...]:
    """Ranks a blocking transfer occupies: each destination rank lacking the data and the
    source rank serving it (round robin over the source mesh, as the executor assigns them)."""
    senders = src.mesh.devices
    needers = [d for d in dst.mesh.devices if d not in senders]
    used = {senders[i % len(senders)] for i in range(len(needers))} | set(needers)
    return tuple(sorted(used))


def _union(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return a if a == b else tuple(sorted(set(a) | set(b)))


class Simulator:
    """Simulates plans of one graph under one cost provider (caches move costs)."""

    def __init__(self, graph: DataflowGraph, cost: CostProvider, *, num_iterations: int = 4) -> None:
        if num_iterations < 3:
            raise ValueError(f"num_iterations must be >= 3 to measure a steady state, got {num_iterations}")
        self.graph = graph
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
        self.num_devices = cost.cluster.num_devices
        cores = float(getattr(cost, "host_cores", 0.0) or 0.0)
        self.host_cores = cores if 0 < cores < cost.cluster.devices_per_node else 0.0
        """Cores a node's devices share; 0 when they never run short (see `_schedule_shared`)."""
        self.blocking_transfers = bool(getattr(cost, "blocking_transfers", False))
        """Data transfers occupy their sending and receiving devices (a runtime whose sends
        block both ranks) instead of running asynchronously beside them."""
        self.iteration_barrier = bool(getattr(cost, "iteration_barrier", False))
        """Iterations do not overlap: every task of iteration i waits for all of iteration i-1
        (a runtime that synchronises every rank at the end of each iteration)."""
        self.work_units = 0.0
        """Work units (see `realloc_units`) spent pricing moves the caches did not hold."""

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
        a, b = self._canonical(src.layout, dst.layout)
        key = (model, placement_key(a), placement_key(b))
        hit = self._realloc_cache.get(key)
        if hit is None:
            est = self.cost.realloc_estimate(self.models[model], a, b)
            hit = (est.time_s, est.bytes_total)
            self._realloc_cache[key] = hit
            self.work_units += realloc_units(a, b)
        return hit

    def _data(self, p: int, c: int, key: str, src: Candidate, dst: Candidate) -> tuple[float, float]:
        a, b = self._canonical(src.layout, dst.layout)
        ck = (p, c, key, placement_key(a), placement_key(b))
        hit = self._data_cache.get(ck)
        if hit is None:
            est = self.cost.data_estimate(self.calls[p], self.calls[c], key, a, b)
            hit = (est.time_s, est.bytes_total)
            self._data_cache[ck] = hit
            self.work_units += data_units(a, b)
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

    def _tasks(self, cands: Sequence[Candidate], primaries: dict[str, Candidate]) -> list[_Task]:
        tasks: list[_Task] = []
        call_task: dict[int, int] = {}
        replica_task: dict[tuple, int] = {}
        pending: list[tuple[int, str]] = []
        for i, call in enumerate(self.calls):
            cand = cands[i]
            deps: list[tuple[int, int]] = []
            prim = primaries.get(call.model)
            trained = call.model in self.train_index
            if prim is not None and cand.key != prim.key:
                rkey = (call.model, cand.key)
                if rkey not in replica_task:
                    dur, nbytes = self._realloc(call.model, prim, cand)
                    replica_task[rkey] = len(tasks)
                    if trained:  # after the previous iteration's train, patched in below
                        pending.append((len(tasks), call.model))
                    step = (call.model, call.name, prim.layout, cand.layout, dur, nbytes, trained)
                    tasks.append(_Task(REALLOC, f"{call.model}->{call.name}",
                                       _union(prim.key[0], cand.key[0]), dur, [],
                                       first_only=not trained, ref=step))
                deps.append((replica_task[rkey], 0))
            for p, key in self.data_in[i]:
                src = cands[p]
                if src.key == cand.key:
                    deps.append((call_task[p], 0))
                    continue
                dur, nbytes = self._data(p, i, key, src, cand)
                held = _transfer_devices(src.layout, cand.layout) if self.blocking_transfers and dur > 0 else ()
                tasks.append(_Task(TRANSFER, f"{key}:{self.calls[p].name}->{call.name}",
                                   held, dur, [(call_task[p], 0)],
                                   ref=(key, self.calls[p].name, call.name, src.layout,
                                        cand.layout, dur, nbytes), shown=cand.key[0]))
                deps.append((len(tasks) - 1, 0))
            for p in self.param_in[i]:
                deps.append((call_task[p], 0))
            call_task[i] = len(tasks)
            tasks.append(_Task(CALL, call.name, cand.key[0], cand.estimate.time_s, deps))
        # cross-iteration edges need the train's task index, known only now
        for k, model in pending:
            tasks[k].deps.append((call_task[self.train_index[model]], -1))
        for i, call in enumerate(self.calls):
            t = self.train_index.get(call.model)
            if t is not None:
                tasks[call_task[i]].deps.append((call_task[t], -1))
        return tasks

    # ------------------------------------------------------------------ memory

    def memory(self, cands: Sequence[Candidate]) -> list[float]:
        """Peak bytes per device (see the module docstring); a prefix of the calls is allowed."""
        resident: dict[tuple, float] = {}
        devices_of: dict[tuple, tuple[int, ...]] = {}
        transient = [0.0] * self.num_devices
        for call, cand in zip(self.calls, cands):
            est = cand.estimate
            if self.models[call.model].arch is not None:
                rk = (call.model, cand.key)
                resident[rk] = max(resident.get(rk, 0.0), est.resident_bytes)
                devices_of[rk] = cand.key[0]
                extra = max(0.0, est.peak_bytes - est.resident_bytes)
            else:
                extra = est.peak_bytes
            for d in cand.key[0]:
                if extra > transient[d]:
                    transient[d] = extra
        total = transient
        for rk, nbytes in resident.items():
            for d in devices_of[rk]:
                total[d] += nbytes
        return total

    # ------------------------------------------------------------------ run

    def _schedule(self, tasks: list[_Task], detail: bool) -> tuple[list[float], list[tuple]]:
        n = self.num_iterations
        avail = [0.0] * self.num_devices
        ends_prev: list[float | None] = [None] * len(tasks)
        iteration_ends: list[float] = []
        events: list[tuple] = []
        for it in range(n):
            ends: list[float | None] = [None] * len(tasks)
            floor = iteration_ends[-1] if self.iteration_barrier and iteration_ends else 0.0
            finish = 0.0
            for k, task in enumerate(tasks):
                if task.first_only and it > 0:
                    continue
                start = floor
                for j, off in task.deps:
                    e = ends[j] if off == 0 else ends_prev[j]
                    if e is not None and e > start:
                        start = e
                for d in task.devices:
                    if avail[d] > start:
                        start = avail[d]
                end = start + task.duration
                for d in task.devices:
                    avail[d] = end
                ends[k] = end
                if end > finish:
                    finish = end
                if detail:
                    events.append((task, start, end, it))
            iteration_ends.append(finish)
            ends_prev = ends
        return iteration_ends, events

    def _instances(self, tasks: list[_Task]) -> tuple[list[tuple[int, int]], list[tuple[int, ...]],
                                                      list[list[int]], list[list[int]], list[int]]:
        """Unrolled (iteration, task) instances with their devices, each device's queue in
        order, each instance's dependents and its count of unmet dependencies."""
        inst = [(it, k) for it in range(self.num_iterations) for k, t in enumerate(tasks)
                if not (t.first_only and it > 0)]
        self.work_units += SHARED_TASK_UNITS * len(inst)
        index = {key: i for i, key in enumerate(inst)}
        devs = [tasks[k].devices for _it, k in inst]
        queues: list[list[int]] = [[] for _ in range(self.num_devices)]
        for i, d_list in enumerate(devs):
            for d in d_list:
                queues[d].append(i)
        dependents: list[list[int]] = [[] for _ in inst]
        unmet = [0] * len(inst)
        for i, (it, k) in enumerate(inst):
            for j, off in tasks[k].deps:
                src = index.get((it + off, j))
                if src is not None:
                    dependents[src].append(i)
                    unmet[i] += 1
        return inst, devs, queues, dependents, unmet

    def _schedule_shared(self, tasks: list[_Task], detail: bool) -> tuple[list[float], list[tuple]]:
        """`_schedule` for devices that share `host_cores` cores per node (processor sharing).

        Same order and dependencies, but while more of a node's devices are busy than it has
        cores, every task running there progresses at cores / busy of its solo speed (a task
        spanning nodes at the slowest of its nodes' rates). Transfers hold no device and
        run at full speed. Event-driven: rates change only when a task starts or ends.
        """
        n, dpn, cores = self.num_iterations, self.cost.cluster.devices_per_node, self.host_cores
        inst, devs, queues, dependents, unmet = self._instances(tasks)
        at_head = [0] * len(inst)
        for q in queues:
            if q:
                at_head[q[0]] += 1
        head = [0] * self.num_devices
        start: list[float] = [0.0] * len(inst)
        end: list[float] = [0.0] * len(inst)
        left = [tasks[k].duration for _it, k in inst]
        left_in = [0] * n  # unfinished instances per iteration (for the barrier)
        for it, _k in inst:
            left_in[it] += 1
        if self.iteration_barrier:
            for i, (it, _k) in enumerate(inst):
                unmet[i] += it > 0
        ready = [i for i in range(len(inst)) if unmet[i] == 0 and at_head[i] == len(devs[i])]
        running: list[int] = []
        now, finished = 0.0, 0

        def finish(i: int) -> None:
            end[i] = now
            it = inst[i][0]
            left_in[it] -= 1
            if self.iteration_barrier and left_in[it] == 0 and it + 1 < n:
                for x, (it2, _k) in enumerate(inst):
                    if it2 == it + 1:
                        unmet[x] -= 1
                        if unmet[x] == 0 and at_head[x] == len(devs[x]):
                            ready.append(x)
            for x in dependents[i]:
                unmet[x] -= 1
                if unmet[x] == 0 and at_head[x] == len(devs[x]):
                    ready.append(x)
            for d in devs[i]:
                head[d] += 1
                if head[d] < len(queues[d]):
                    x = queues[d][head[d]]
                    at_head[x] += 1
                    if unmet[x] == 0 and at_head[x] == len(devs[x]):
                        ready.append(x)

        while finished < len(inst):
            while ready:  # start everything that can start now (zero-length tasks end at once)
                i = ready.pop()
                start[i] = now
                if left[i] <= 0:
                    finished += 1
                    finish(i)
                else:
                    running.append(i)
            if not running:
                if finished < len(inst):
                    raise AssertionError("simulator: tasks wait on each other (cyclic plan order)")
                break
            rate = _share_rates([devs[i] for i in running], dpn, cores)
            step = min(left[i] / r for i, r in zip(running, rate))
            now += step
            still = []
            for i, r in zip(running, rate):
                left[i] -= step * r
                if left[i] <= 1e-12 * max(1.0, tasks[inst[i][1]].duration):
                    finished += 1
                    finish(i)
                else:
                    still.append(i)
            running = still
        iteration_ends = [0.0] * n
        events = []
        for i, (it, k) in enumerate(inst):
            iteration_ends[it] = max(iteration_ends[it], end[i])
            if detail:
                events.append((tasks[k], start[i], end[i], it))
        return iteration_ends, events

    def simulate(self, cands: Sequence[Candidate], *, detail: bool = False) -> SimResult:
        """Simulate the plan given by one candidate per call (in `graph.calls` order)."""
        if len(cands) != len(self.calls):
            raise ValueError(f"expected {len(self.calls)} layouts, one per call, got {len(cands)}")
        primaries = self.primaries(cands)
        tasks = self._tasks(cands, primaries)
        schedule = self._schedule_shared if self.host_cores else self._schedule
        ends, events = schedule(tasks, detail)
        n = self.num_iterations
        iteration_time = (ends[-1] - ends[1]) / (n - 2)
        mem = self.memory(cands)
        cap = self.cost.device_memory_bytes
        worst = max(mem)
        overflow = max(0.0, (worst - cap) / cap)
        reasons = []
        for i, c in enumerate(cands):
            if not c.estimate.feasible:
                reasons.append(f"call {self.calls[i].name!r}: {c.estimate.reason or 'infeasible layout'}")
        if worst > cap:
            d = mem.index(worst)
            held = [self.calls[i].name for i, c in enumerate(cands) if d in c.key[0]]
            reasons.append(
                f"device {d} needs {worst / GIB:.2f} GiB (replicas and peaks of {', '.join(held)}) "
                f"but has {cap / GIB:.2f} GiB"
            )
        result = SimResult(iteration_time_s=iteration_time, feasible=not reasons,
                           reasons=tuple(reasons), overflow_ratio=overflow,
                           device_peak_bytes=tuple(mem), iteration_ends=tuple(ends))
        if not detail:
            return result
        return _with_detail(result, self.calls, cands, tasks, events)


def _with_detail(result: SimResult, calls: Sequence, cands: Sequence[Candidate],
                 tasks: list[_Task], events: list[tuple]) -> SimResult:
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
                     transfers=transfers, timeline=timeline, call_times=call_times)
