"""The timeline model under the simulator: tasks on resources, unrolled over iterations.

A `Task` is one thing that happens once per iteration (a call, a reallocation, a data
transfer): it holds some resources for `duration` seconds and starts after its
dependencies, each (task, iteration offset: 0 the same iteration, -1 the previous one).
Every resource runs its tasks in task order, iteration by iteration (the runtime's
per-rank step list). Two schedules:

- `list_schedule`: a task starts when its dependencies are done and all its resources
  are free, and runs at full speed;
- `shared_schedule`: the same order, but resources of one node share `cores` cores
  (processor sharing): while more of a node's devices are busy than it has cores,
  every task there progresses at cores / busy of its speed.

Resources are *atoms*: maximal sets of devices that every task holds all or none of
(`Atoms`). Devices of one atom always have the same timeline, so a plan on 1024 GPUs
with a dozen distinct meshes schedules a few dozen atoms, not 1024 devices. Under
processor sharing atoms also stop at node boundaries, so a node's busy devices are the
sizes of its busy atoms.

What later work adds fits here as more task kinds and dependency kinds: a streamed
data edge is a dependency on part of its producer, a fused schedule one task on the
union of resources, a one-step off-policy edge a dependency with offset -2.
"""

from __future__ import annotations

import bisect
import functools
from collections.abc import Sequence


class Task:
    """One task of an iteration (see the module docstring)."""

    __slots__ = ("deps", "devices", "duration", "first_only", "kind", "label", "ref", "shown")

    def __init__(self, kind: str, label: str, devices: tuple[int, ...], duration: float,
                 deps: list[tuple[int, int]], first_only: bool = False, ref: object = None,
                 shown: tuple[int, ...] | None = None) -> None:
        self.kind = kind
        self.label = label
        self.devices = devices  # held while the task runs
        self.shown = devices if shown is None else shown  # where the timeline draws it
        self.duration = duration
        self.deps = deps  # (task index, iteration offset: 0 same, -1 previous)
        self.first_only = first_only  # only in the first iteration (filling a frozen replica)
        self.ref = ref  # what the task stands for (plan detail)


class Atoms:
    """Devices grouped into atoms by the device sets that use them (see the module docstring)."""

    def __init__(self, sets: Sequence[tuple[int, ...]], cut_every: int = 0) -> None:
        """`sets`: sorted device tuples; `cut_every` > 0 also cuts atoms at multiples of it."""
        points: set[int] = set()
        self._runs: dict[tuple[int, ...], tuple[tuple[int, int], ...]] = {}
        for s in sets:
            if not s or s in self._runs:
                continue
            runs = _runs(s)
            self._runs[s] = runs
            for a, b in runs:
                points.add(a)
                points.add(b)
        if cut_every > 0 and points:
            lo, hi = min(points), max(points)
            points.update(range(lo - lo % cut_every, hi + 1, cut_every))
        self.points = sorted(points)
        self.sizes = [b - a for a, b in zip(self.points, self.points[1:])]
        """Devices per atom; atom i is devices [points[i], points[i + 1])."""
        self._of: dict[tuple[int, ...], tuple[int, ...]] = {}

    def __len__(self) -> int:
        return len(self.sizes)

    def of(self, devices: tuple[int, ...]) -> tuple[int, ...]:
        """The atoms that make up `devices` (which must be one of the sets given)."""
        hit = self._of.get(devices)
        if hit is None:
            runs = self._runs.get(devices) or _runs(devices)
            out: list[int] = []
            for a, b in runs:
                out.extend(range(bisect.bisect_left(self.points, a), bisect.bisect_left(self.points, b)))
            hit = self._of[devices] = tuple(out)
        return hit

    def first_device(self, atom: int) -> int:
        """The lowest device of an atom."""
        return self.points[atom]

    def devices(self, atom: int) -> range:
        """The devices of an atom."""
        return range(self.points[atom], self.points[atom + 1])


@functools.lru_cache(maxsize=8192)
def _runs(devices: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """Maximal contiguous runs [a, b) of a sorted device tuple."""
    if devices[-1] - devices[0] + 1 == len(devices):
        return ((devices[0], devices[-1] + 1),)
    runs = []
    start = prev = devices[0]
    for d in devices[1:]:
        if d != prev + 1:
            runs.append((start, prev + 1))
            start = d
        prev = d
    runs.append((start, prev + 1))
    return tuple(runs)


Event = tuple[Task, float, float, int]
"""(task, start, end, iteration)."""


def list_schedule(tasks: Sequence[Task], resources: Sequence[tuple[int, ...]], num_resources: int,
                  num_iterations: int, *, barrier: bool = False,
                  detail: bool = False) -> tuple[list[float], list[Event]]:
    """Start and end of every task instance when resources run at full speed.

    `resources[k]` are the resources task k holds. Returns each iteration's end and, with
    `detail`, every instance as (task, start, end, iteration). With `barrier` every task of
    iteration i waits for the end of iteration i - 1.
    """
    avail = [0.0] * num_resources
    ends_prev: list[float | None] = [None] * len(tasks)
    iteration_ends: list[float] = []
    events: list[Event] = []
    for it in range(num_iterations):
        ends: list[float | None] = [None] * len(tasks)
        floor = iteration_ends[-1] if barrier and iteration_ends else 0.0
        finish = 0.0
        for k, task in enumerate(tasks):
            if task.first_only and it > 0:
                continue
            start = floor
            for j, off in task.deps:
                e = ends[j] if off == 0 else ends_prev[j]
                if e is not None and e > start:
                    start = e
            held = resources[k]
            for d in held:
                if avail[d] > start:
                    start = avail[d]
            end = start + task.duration
            for d in held:
                avail[d] = end
            ends[k] = end
            if end > finish:
                finish = end
            if detail:
                events.append((task, start, end, it))
        iteration_ends.append(finish)
        ends_prev = ends
    return iteration_ends, events


def shared_schedule(tasks: Sequence[Task], resources: Sequence[tuple[int, ...]], num_resources: int,
                    num_iterations: int, *, node_of: Sequence[int], size_of: Sequence[int], cores: float,
                    barrier: bool = False, detail: bool = False) -> tuple[list[float], list[Event]]:
    """`list_schedule` for resources whose nodes share `cores` cores (processor sharing).

    Same order and dependencies, but while more of a node's devices are busy than it has
    cores, every task running there progresses at cores / busy of its solo speed (a task
    spanning nodes at the slowest of its nodes' rates); a resource counts `size_of` devices
    on node `node_of`. Tasks holding no resource run at full speed. Event-driven: rates
    change only when a task starts or ends.
    """
    n = num_iterations
    inst = [(it, k) for it in range(n) for k, t in enumerate(tasks) if not (t.first_only and it > 0)]
    index = {key: i for i, key in enumerate(inst)}
    devs = [resources[k] for _it, k in inst]
    queues: list[list[int]] = [[] for _ in range(num_resources)]
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
    at_head = [0] * len(inst)
    for q in queues:
        if q:
            at_head[q[0]] += 1
    head = [0] * num_resources
    start: list[float] = [0.0] * len(inst)
    end: list[float] = [0.0] * len(inst)
    left = [tasks[k].duration for _it, k in inst]
    left_in = [0] * n  # unfinished instances per iteration (for the barrier)
    for it, _k in inst:
        left_in[it] += 1
    if barrier:
        for i, (it, _k) in enumerate(inst):
            unmet[i] += it > 0
    ready = [i for i in range(len(inst)) if unmet[i] == 0 and at_head[i] == len(devs[i])]
    running: list[int] = []
    now, finished = 0.0, 0

    def release(x: int) -> None:
        unmet[x] -= 1
        if unmet[x] == 0 and at_head[x] == len(devs[x]):
            ready.append(x)

    def finish(i: int) -> None:
        end[i] = now
        it = inst[i][0]
        left_in[it] -= 1
        if barrier and left_in[it] == 0 and it + 1 < n:
            for x, (it2, _k) in enumerate(inst):
                if it2 == it + 1:
                    release(x)
        for x in dependents[i]:
            release(x)
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
                raise AssertionError("timeline: tasks wait on each other (cyclic plan order)")
            break
        busy: dict[int, int] = {}
        for i in running:
            for d in devs[i]:
                busy[node_of[d]] = busy.get(node_of[d], 0) + size_of[d]
        rate = [min((min(1.0, cores / busy[node_of[d]]) for d in devs[i]), default=1.0) for i in running]
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
    events: list[Event] = []
    for i, (it, k) in enumerate(inst):
        iteration_ends[it] = max(iteration_ends[it], end[i])
        if detail:
            events.append((tasks[k], start[i], end[i], it))
    return iteration_ends, events
