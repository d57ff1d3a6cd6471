"""Which calls of a graph overlap across iterations: one-step off-policy training (pure: no torch).

With `train.off_policy_steps: 1` the parameter-version edge from the actor's train call
to its generate calls is relaxed by one: the generation of iteration k+1's batch runs
with the weights of before iteration k's train step, so it may run at the same time as
iteration k's training on other devices. Those generate calls run *ahead*: in the step
order of iteration k (and the simulator's task order) they come before the rest of the
iteration and produce the next batch; their consumers read the batch they produced one
iteration earlier. The behaviour policy's log-probabilities (the generate call's
`old_logp`) are those of the generating weights, so the importance ratio of the PPO,
GRPO and ReMax losses is taken against the behaviour policy, as the algorithm needs.

`ahead_calls` is the one definition the runtime's program and the planner's simulator
share.
"""

from __future__ import annotations

from graph.dataflow import DataflowGraph
from graph.errors import UserError
from graph.spec import CallKind

OFF_POLICY_STEPS = (0, 1)
"""Values `train.off_policy_steps` takes."""


class OverlapError(UserError):
    """An off-policy or fusion setting that the graph cannot honour."""


def check_off_policy_steps(value: object) -> int:
    """The validated `train.off_policy_steps` value."""
    if isinstance(value, bool) or value not in OFF_POLICY_STEPS:
        raise OverlapError(f"train.off_policy_steps={value!r} is not supported; use 0 (on-policy) or 1 "
                           "(generation runs one weight version behind, overlapping training)")
    return int(value)  # type: ignore[call-overload]


def ahead_calls(graph: DataflowGraph, off_policy_steps: int) -> tuple[str, ...]:
    """Generate calls that run one batch ahead (empty when on-policy), in graph order.

    A call runs ahead when it generates with a trained model. Its inputs must come from
    the dataset (the prompts): a generate call that consumed another call's output could
    not start before that call's iteration.
    """
    check_off_policy_steps(off_policy_steps)
    if off_policy_steps == 0:
        return ()
    ahead = tuple(c.name for c in graph.calls
                  if c.kind is CallKind.GENERATE and graph.train_call(c.model) is not None)
    if not ahead:
        raise OverlapError("train.off_policy_steps=1 needs a generate call on a trained model (the actor); "
                           "this graph has none, so set train.off_policy_steps=0")
    for name in ahead:
        call = graph.call(name)
        for key in call.inputs:
            if key not in graph.dataset_keys:
                raise OverlapError(
                    f"train.off_policy_steps=1: generate call {name!r} consumes {key!r}, produced by call "
                    f"{graph.producer(key)!r}; a call running one batch ahead may read dataset keys only "
                    "(set train.off_policy_steps=0)")
    return ahead

