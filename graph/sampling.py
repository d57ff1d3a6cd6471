"""Dynamic sampling (DAPO, Yu et al. 2025) as the graph sees it: which calls run again.

A train call whose arguments set `dynamic_sampling` (pg_actor) trains only on groups whose
rewards are not all equal. The executor runs the calls that produce its `rewards` input
(the reward call and, transitively, the generation feeding it: the *sampling calls*) once
per round on fresh prompts, drops groups with equal rewards, and repeats until the batch is
full or `max_sampling_rounds` rounds have run (runtime.execution.sampling). The planner
prices the sampling calls `expected_sampling_rounds` times (`expected_runs`).

Pure: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from graph.catalog import get_interface
from graph.dataflow import DataflowGraph
from graph.errors import GraphError
from graph.spec import CallKind


@dataclass(frozen=True, kw_only=True)
class DynamicSampling:
    """What the executor and the planner need to know about a graph's dynamic sampling."""

    train_call: str
    """The train call that asks for it."""
    rewards_key: str
    """The data key whose per-group equality drops a group."""
    rewards_call: str
    """The call producing it."""
    group_size: int
    """Sequences per group (per prompt)."""
    max_rounds: int
    """Most sampling rounds per iteration, the first included."""
    expected_rounds: float
    """Rounds per iteration the planner prices."""
    calls: tuple[str, ...]
    """The sampling calls, in the graph's order: they run once per round."""


def dynamic_sampling(graph: DataflowGraph) -> DynamicSampling | None:
    """The graph's dynamic sampling, or None; GraphError when the graph cannot do it."""
    askers = [c for c in graph.calls if getattr(c.args, "dynamic_sampling", False)]
    if not askers:
        return None
    if len(askers) > 1:
        raise GraphError(f"dynamic sampling is set on calls {[c.name for c in askers]}; set it on one train call")
    train = askers[0]
    roles = get_interface(train.interface).inputs
    if "rewards" not in roles or roles.index("rewards") >= len(train.inputs):
        raise GraphError(f"call {train.name!r}: dynamic sampling needs a rewards input")
    key = train.inputs[roles.index("rewards")]
    producer = graph.producer(key)
    if producer is None:
        raise GraphError(f"call {train.name!r}: dynamic sampling regenerates its rewards {key!r}, "
                         "but the dataset provides them; produce them with a reward call")
    needed = {producer}
    frontier = [producer]
    while frontier:
        call = graph.call(frontier.pop())
        for k in call.inputs:
            p = graph.producer(k)
            if p is not None and p not in needed:
                needed.add(p)
                frontier.append(p)
    calls = tuple(c.name for c in graph.calls if c.name in needed)
    if not any(graph.call(n).kind is CallKind.GENERATE for n in calls):
        raise GraphError(f"call {train.name!r}: dynamic sampling needs its rewards to come from generated "
                         f"sequences, but {key!r} depends on no generate call")
    bad = [n for n in calls if graph.call(n).kind is CallKind.TRAIN]
    if bad:
        raise GraphError(f"call {train.name!r}: dynamic sampling would rerun train calls {bad}")
    first = tuple(c.name for c in graph.calls[:len(calls)])
    if first != calls:
        raise GraphError(f"call {train.name!r}: dynamic sampling reruns {list(calls)} in rounds before the other "
                         f"calls: declare them first (the order is now {[c.name for c in graph.calls]})")
    return DynamicSampling(train_call=train.name, rewards_key=key, rewards_call=producer, group_size=train.args.group_size,
                           max_rounds=train.args.max_sampling_rounds,
                           expected_rounds=train.args.expected_sampling_rounds, calls=calls)


def expected_runs(graph: DataflowGraph) -> dict[str, float]:
    """Expected runs per iteration of every call that runs more than once (the sampling
    calls under dynamic sampling); calls not named run once."""
    ds = dynamic_sampling(graph)
    if ds is None or ds.expected_rounds == 1.0:
        return {}
    return {name: ds.expected_rounds for name in ds.calls}
