"""Compiling a plan into the ordered steps of one iteration, and each rank's share of them.

A step is plain data: what to do, for which call, and which ranks take part.

- `realloc`: refresh model M's replica in the call's layout from M's home layout (the
  ranks of both layouts execute the cost model's TransferPlan);
- `send`: rank `src` sends data key `key` to rank `dst`, which lacks it;
- `run`: the call's mesh runs it;
- `free`: the call's mesh drops the storage of a trained model's replica after its last
  use (the next iteration's `realloc` rewrites all of it).

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
from collections.abc import Mapping
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

    def __post_init__(self) -> None:
        if not isinstance(self.kind, StepKind):
            raise TypeError(f"bug: step kind {self.kind!r} is not a StepKind")

    def __str__(self) -> str:
        if self.kind is StepKind.SEND:
            return f"send {self.key} {self.src}->{self.dst} for {self.call}"
        if self.kind is StepKind.RUN:
            return f"run {self.call} on {list(self.ranks)}"
        return f"{self.kind.value} {self.model} for {self.call} on {list(self.ranks)}"


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
                      first: bool, free_replicas: bool = True) -> tuple[Step, ...]:
    """The global step order of one iteration."""
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
        layout = layouts[call.name]
        mesh = tuple(layout.mesh.devices)
        if (call.model, layout) in stale:
            home = homes[call.model]
            ranks = tuple(sorted(set(home.mesh.devices) | set(mesh)))
            steps.append(Step(StepKind.REALLOC, call.name, ranks, model=call.model))
            stale.discard((call.model, layout))
        for key in dict.fromkeys(call.inputs):
            have = holders[key]
            senders = sorted(have)
            needers = [d for d in mesh if d not in have]
            for i, dst in enumerate(needers):
                src = senders[i % len(senders)]
                steps.append(Step(StepKind.SEND, call.name, (src, dst), key=key, src=src, dst=dst))
            have.update(needers)
        steps.append(Step(StepKind.RUN, call.name, mesh, model=call.model))
        for key in call.outputs:
            holders[key] = set(mesh)
        if call.name in free_after:
            steps.append(Step(StepKind.FREE, call.name, mesh, model=call.model))
        if call.kind is CallKind.TRAIN:
            stale.update((c.model, layouts[c.name]) for c in graph.calls_of(call.model)
                         if layouts[c.name] != layout)
    return tuple(steps)


def rank_program(steps: tuple[Step, ...], rank: int) -> tuple[Step, ...]:
    """The steps `rank` takes part in, in the global order."""
    return tuple(s for s in steps if rank in s.ranks)
