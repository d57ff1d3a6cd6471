"""Compiling a plan into the ordered steps of one iteration, and each rank's share of them.

A step is plain data: what to do, for which call, and which ranks take part.

- `realloc`: refresh model M's replica in the call's layout from M's home layout (the
  ranks of both layouts execute the cost model's TransferPlan);
- `send`: rank `src` sends data key `key` to rank `dst`, which lacks it;
- `run`: the call's mesh runs it;
- `free`: the call's mesh drops the storage of a trained model's replica after its last
  use (the next iteration's `realloc` rewrites all of it);
- `stream`: a generate call streaming samples into inference calls (inter-stage fusion);
- `fuse`: two train calls on one placement, their steps in one pipeline (intra-stage fusion).

The steps of an iteration form one global order; each rank executes the sub-list of the
steps it takes part in, in that order. Two ranks therefore meet their shared steps in
the same relative order, and the earliest unfinished step always has every participant
either at it or about to reach it, since they have finished all their earlier steps, so
the program cannot deadlock.

The first iteration differs from the rest only in that no replica is stale yet (every
replica starts from the same initial weights as its home).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from graph.dataflow import DataflowGraph
from graph.placement.layout import Layout
from graph.spec import CallKind


class StepKind(enum.Enum):
    """What a step does (see the module docstring)."""

    REALLOC = "realloc"
    SEND = "send"
    RUN = "run"
    FREE = "free"
    STREAM = "stream"
    FUSE = "fuse"


@dataclass(frozen=True)
class Step:
    """One step of an iteration's program."""

    kind: StepKind
    call: str
    ranks: tuple[int, ...]
    model: str = ""
    key: str = ""
    src: int = -1
    dst: int = -1
    ahead: int = 0
    """0: the iteration's own batch; 1: the next batch (a generate call running one step
    off-policy, see graph.overlap)."""
    consumers: tuple[str, ...] = ()
    """STREAM: the inference calls the generate call `call` streams its samples to; FUSE: the
    train call that runs fused with `call` (runtime.engine.fused)."""

    def __post_init__(self) -> None:
        if not isinstance(self.kind, StepKind):
            raise TypeError(f"bug: step kind {self.kind!r} is not a StepKind")

    def __str__(self) -> str:
        if self.kind is StepKind.SEND:
            text = f"send {self.key} {self.src}->{self.dst} for {self.call}"
        elif self.kind is StepKind.RUN:
            text = f"run {self.call} on {list(self.ranks)}"
        elif self.kind is StepKind.STREAM:
            text = f"stream {self.call} into {', '.join(self.consumers)} on {list(self.ranks)}"
        elif self.kind is StepKind.FUSE:
            text = f"fuse {self.call} + {', '.join(self.consumers)} on {list(self.ranks)}"
        else:
            text = f"{self.kind.value} {self.model} for {self.call} on {list(self.ranks)}"
        return text + (" (next batch)" if self.ahead else "")


def placement(layout: Layout) -> Layout:
    """A layout without its micro-batch count: calls with equal placements share one engine."""
    return dataclasses.replace(layout, micro_batches=1)


def home_layouts(graph: DataflowGraph, layouts: Mapping[str, Layout]) -> dict[str, Layout]:
    """Where each model's weights live: its train call's placement, else its first call's."""
    homes = {}
    for role in graph.models:
        calls = graph.calls_of(role)
        if calls:
            homes[role] = placement(layouts[(graph.train_call(role) or calls[0]).name])
    return homes


def replica_last_uses(graph: DataflowGraph, layouts: Mapping[str, Layout]) -> set[str]:
    """Calls after which a trained model's replica can be freed.

    Every call that reads a model's weights precedes its train call (parameter-version
    edges), so after the last call on a replica layout the replica is stale, and the
    next iteration's reallocation rewrites all of it: its storage is not needed meanwhile.
    """
    homes = home_layouts(graph, layouts)
    last: dict[tuple[str, Layout], str] = {}
    for call in graph.calls:
        layout = placement(layouts[call.name])
        model = graph.models[call.model]
        if graph.train_call(call.model) is not None and not model.is_rule and layout != homes[call.model]:
            last[(call.model, layout)] = call.name
    return set(last.values())


def compile_iteration(graph: DataflowGraph, layouts: Mapping[str, Layout], *, world_size: int,
                      first: bool, free_replicas: bool = True, ahead: tuple[str, ...] = (),
                      prologue: bool | None = None, last: bool = False,
                      streamed: tuple[tuple[str, str], ...] = (),
                      fused: tuple[tuple[str, str], ...] = ()) -> tuple[Step, ...]:
    """The global step order of one iteration.

    `ahead` names the generate calls that run one batch ahead (one-step off-policy, see
    `graph.overlap.ahead_calls`); then `compile_off_policy_iteration` orders the steps.
    `streamed` (generate call, inference call) edges run as one STREAM step per generate call
    (`runtime.execution.streaming`), after the refreshes of every replica it involves; the
    streamed calls' outputs are then held by their meshes, and the generate call's by its
    mesh and theirs. `fused` (train call, train call) pairs run as one FUSE step at the first
    call's place (graph.overlap.intra_candidates checked that the second can move there).
    """
    if ahead and fused:
        raise ValueError("bug: fused train pairs and one-step off-policy together (graph.overlap.check_fusion refuses it)")
    fused_with = dict(fused)
    fused_later = set(fused_with.values())
    if ahead and streamed:
        raise ValueError("bug: streaming and one-step off-policy together (graph.overlap.check_fusion refuses it)")
    stream_of: dict[str, list[str]] = {}
    for gen, consumer in streamed:
        stream_of.setdefault(gen, []).append(consumer)
    fused = {consumer for _, consumer in streamed}
    if ahead:
        return compile_off_policy_iteration(graph, layouts, world_size=world_size, first=first,
                                            prologue=first if prologue is None else prologue,
                                            last=last, free_replicas=free_replicas, ahead=ahead)
    homes = home_layouts(graph, layouts)
    layouts = {name: placement(layout) for name, layout in layouts.items()}
    trained = {role for role in graph.models if graph.train_call(role) is not None}
    # after a train step every replica of that model is stale: in a steady iteration all are
    stale = set() if first else {(c.model, layouts[c.name]) for c in graph.calls
                                 if c.model in trained and layouts[c.name] != homes[c.model]}
    free_after = replica_last_uses(graph, layouts) if free_replicas else set()
    holders: dict[str, set[int]] = {key: set(range(world_size)) for key in graph.dataset_keys}
    steps: list[Step] = []
    for call in graph.calls:
        if call.name in fused or call.name in fused_later:
            continue  # ran inside its generate call's STREAM step, or its partner's FUSE step
        layout = layouts[call.name]
        mesh = tuple(layout.mesh.devices)
        consumers = [graph.call(n) for n in graph.topological_order() if n in stream_of.get(call.name, ())]
        for c in [*consumers, call]:
            c_layout = layouts[c.name]
            if (c.model, c_layout) in stale:
                home = homes[c.model]
                ranks = tuple(sorted(set(home.mesh.devices) | set(c_layout.mesh.devices)))
                steps.append(Step(StepKind.REALLOC, c.name, ranks, model=c.model))
                stale.discard((c.model, c_layout))
        if consumers:
            _sends(steps, call.name, call.inputs, mesh, holders, 0)
            everyone = set(mesh).union(*(layouts[c.name].mesh.devices for c in consumers))
            steps.append(Step(StepKind.STREAM, call.name, tuple(sorted(everyone)), model=call.model,
                              consumers=tuple(c.name for c in consumers)))
            for key in call.outputs:
                holders[key] = set(everyone)
            for c in consumers:
                for key in c.outputs:
                    holders[key] = set(layouts[c.name].mesh.devices)
            for c in [call, *consumers]:
                if c.name in free_after:
                    steps.append(Step(StepKind.FREE, c.name, tuple(layouts[c.name].mesh.devices), model=c.model))
            continue
        for key in dict.fromkeys(call.inputs):
            have = holders[key]
            senders = sorted(have)
            needers = [d for d in mesh if d not in have]
            for i, dst in enumerate(needers):
                src = senders[i % len(senders)]
                steps.append(Step(StepKind.SEND, call.name, (src, dst), key=key, src=src, dst=dst))
            have.update(needers)
        partner = graph.call(fused_with[call.name]) if call.name in fused_with else None
        if partner is not None:
            _sends(steps, partner.name, partner.inputs, mesh, holders, 0)
            steps.append(Step(StepKind.FUSE, call.name, mesh, model=call.model, consumers=(partner.name,)))
        else:
            steps.append(Step(StepKind.RUN, call.name, mesh, model=call.model))
        for c in [call] if partner is None else [call, partner]:
            for key in c.outputs:
                holders[key] = set(mesh)
            if c.name in free_after:
                steps.append(Step(StepKind.FREE, c.name, mesh, model=c.model))
            if c.kind is CallKind.TRAIN:
                stale.update((o.model, layouts[o.name]) for o in graph.calls_of(c.model)
                             if layouts[o.name] != layouts[c.name])
    return tuple(steps)


def hoist_sends(graph: DataflowGraph, steps: tuple[Step, ...]) -> tuple[Step, ...]:
    """The same program with every send posted as soon as its sender holds the data.

    Each SEND step becomes two: its sender's part (ranks (src,)), moved up to just after the
    step that gave `src` the key (the call that made it, the send that brought it, or the
    start of the iteration for dataset keys), and its receiver's part (ranks (dst,)), where
    the send was. A sender then no longer holds a finished call's outputs back until it has
    run its own later calls (in ppo_tiny the actor's rank sent the critic's inputs only after
    training the actor). Posts between one pair of ranks keep their order, so each receive
    takes the message it expects (point-to-point messages are matched in order).

    Only for a runtime whose sends do not block (runtime.execution.p2p over gloo): then the
    program's deadlock argument (module docstring) holds for its blocking steps, since every
    receive's post comes before it. With NCCL a posted send occupies the stream until its
    receive, so a hoisted send could wait behind a collective its receiver has not reached:
    the worker hoists only on gloo, and only without dynamic sampling or one-step
    off-policy (their programs are cut or re-run in parts).
    """
    dataset = set(graph.dataset_keys)
    ready: dict[tuple[str, int], int] = {}
    """(key, rank) -> index of the step after which the rank holds the key."""
    posts: dict[int, list[Step]] = {}
    """Step index (-1: the iteration's start) -> the sender parts posted right after it."""
    last_post: dict[tuple[int, int], int] = {}
    out: list[Step] = []
    for i, step in enumerate(steps):
        if step.kind is StepKind.SEND:
            start = -1 if step.key in dataset else i - 1
            slot = max(ready.get((step.key, step.src), start), last_post.get((step.src, step.dst), -1))
            last_post[(step.src, step.dst)] = slot
            posts.setdefault(slot, []).append(dataclasses.replace(step, ranks=(step.src,)))
            out.append(dataclasses.replace(step, ranks=(step.dst,)))
            ready[(step.key, step.dst)] = i
            continue
        out.append(step)
        if step.kind in (StepKind.RUN, StepKind.FUSE, StepKind.STREAM):
            for name in (step.call, *step.consumers):
                for key in graph.call(name).outputs:
                    for rank in step.ranks:
                        ready[(key, rank)] = i
    hoisted = list(posts.get(-1, []))
    for i, step in enumerate(out):
        hoisted.append(step)
        hoisted.extend(posts.get(i, []))
    return tuple(hoisted)


def rank_program(steps: tuple[Step, ...], rank: int) -> tuple[Step, ...]:
    """The steps `rank` takes part in, in the global order."""
    return tuple(s for s in steps if rank in s.ranks)


def busy_ranks(programs: Iterable[tuple[Step, ...]], world_size: int) -> tuple[int, ...]:
    """The ranks that take part in a step of any of `programs` (the others idle the whole run)."""
    busy: set[int] = set()
    for steps in programs:
        for step in steps:
            busy.update(step.ranks)
    return tuple(r for r in range(world_size) if r in busy)


def compile_off_policy_iteration(graph: DataflowGraph, layouts: Mapping[str, Layout], *, world_size: int,
                                 first: bool, prologue: bool, last: bool, ahead: tuple[str, ...],
                                 free_replicas: bool = True) -> tuple[Step, ...]:
    """The global step order of iteration k when the `ahead` generate calls run one batch ahead.

    1. (`prologue`: the first iteration, or the first after a resume) the ahead calls
       generate batch k with the current weights;
    2. their outputs of batch k go to every rank of their consumers' meshes at once, so no
       consumer waits on a generate rank that has moved on to the next batch;
    3. (unless last) the ahead calls generate batch k+1 (steps with `ahead=1`), after the
       refresh of their replica: it reads the home weights before this iteration's train
       step, i.e. one version behind the weights batch k+1 will train;
    4. every other call on batch k, in graph order, as `compile_iteration` orders them.

    A rank outside the ahead calls' meshes skips steps 2-3 except the sends it receives, so
    training of batch k runs while batch k+1 generates on disjoint devices. The program stays
    one global order, hence deadlock-free (module docstring).
    """
    homes = home_layouts(graph, layouts)
    layouts = {name: placement(layout) for name, layout in layouts.items()}
    trained = {role for role in graph.models if graph.train_call(role) is not None}
    ahead_set = set(ahead)
    rest = [c for c in graph.calls if c.name not in ahead_set]
    order = [graph.call(n) for n in ahead] + rest
    stale = set() if first else {(c.model, layouts[c.name]) for c in graph.calls
                                 if c.model in trained and layouts[c.name] != homes[c.model]}
    # replicas are freed after their last use in this iteration's order (ahead calls come first)
    last_use: dict[tuple[str, Layout], str] = {}
    for call in order:
        layout = layouts[call.name]
        if (call.model in trained and not graph.models[call.model].is_rule
                and layout != homes[call.model]):
            last_use[(call.model, layout)] = call.name
    free_after = set(last_use.values()) if free_replicas else set()
    dataset = {key: set(range(world_size)) for key in graph.dataset_keys}
    holders: dict[str, set[int]] = {k: set(v) for k, v in dataset.items()}  # batch k
    if not prologue:  # the ahead calls made batch k in the previous iteration, on their meshes
        for name in ahead:
            for key in graph.call(name).outputs:
                holders[key] = set(layouts[name].mesh.devices)
    steps: list[Step] = []

    def run(call_name: str, have: dict[str, set[int]], batch: int, refresh: bool, free: bool) -> None:
        call = graph.call(call_name)
        layout = layouts[call.name]
        mesh = tuple(layout.mesh.devices)
        if refresh and (call.model, layout) in stale:
            home = homes[call.model]
            ranks = tuple(sorted(set(home.mesh.devices) | set(mesh)))
            steps.append(Step(StepKind.REALLOC, call.name, ranks, model=call.model, ahead=batch))
            stale.discard((call.model, layout))
        _sends(steps, call.name, call.inputs, mesh, have, batch)
        steps.append(Step(StepKind.RUN, call.name, mesh, model=call.model, ahead=batch))
        for key in call.outputs:
            have[key] = set(mesh)
        if free and call.name in free_after:
            steps.append(Step(StepKind.FREE, call.name, mesh, model=call.model, ahead=batch))

    if prologue:
        for name in ahead:  # batch k with the current weights (refreshed when stale)
            run(name, holders, 0, refresh=True, free=False)
    for consumer in rest:  # 2. batch k's generated keys to every rank that reads them
        keys = [k for k in dict.fromkeys(consumer.inputs) if graph.producer(k) in ahead_set]
        _sends(steps, consumer.name, keys, tuple(layouts[consumer.name].mesh.devices), holders, 0)
    if not last:
        upcoming: dict[str, set[int]] = {k: set(v) for k, v in dataset.items()}
        for name in ahead:
            run(name, upcoming, 1, refresh=True, free=True)
    for call in rest:
        run(call.name, holders, 0, refresh=True, free=True)
        if call.kind is CallKind.TRAIN:
            stale.update((c.model, layouts[c.name]) for c in graph.calls_of(call.model)
                         if layouts[c.name] != layouts[call.name])
    return tuple(steps)


def _sends(steps: list[Step], call: str, keys: tuple[str, ...] | list[str], mesh: tuple[int, ...],
           holders: dict[str, set[int]], batch: int) -> None:
    """Send steps giving every rank of `mesh` the `keys` it lacks (round robin over the holders)."""
    for key in dict.fromkeys(keys):
        have = holders[key]
        senders = sorted(have)
        needers = [d for d in mesh if d not in have]
        for i, dst in enumerate(needers):
            src = senders[i % len(senders)]
            steps.append(Step(StepKind.SEND, call, (src, dst), key=key, src=src, dst=dst, ahead=batch))
        have.update(needers)
