"""Binding a call's keys to its interface's roles (graph.catalog says each interface's roles
by position) and what each role holds.

A role is a sequence role (the tokens themselves) or a value role over sequences, one value
per sequence or per token. A call binds its keys to roles by position, with one exception:
the key REHEARSAL_SCORES_KEY takes the `pool_scores` role wherever it stands after the
required inputs.
"""

from __future__ import annotations

from graph.catalog import get_interface
from graph.errors import GraphError

SEQUENCE_ROLES = frozenset({"prompts", "sequences", "pairs", "ptx"})
"""Roles whose data are sequences of tokens; every other role is a value over sequences.
A sequence role after a call's first input is a batch of its own (ptx: pretraining/SFT
sequences mixed into the PPO actor loss), not a field of the first input."""
PER_SEQUENCE_ROLES = frozenset({"rewards", "baseline_rewards", "answers", "pool_scores"})
"""Roles holding one value per sequence; the remaining value roles hold one per token."""
SIDE_FIELD_ROLES = frozenset({"pool_scores"})
"""Value roles over sequences other than the call's first input (pool_scores: one score per
record of the Selective Rehearsal pool): not attached to the main batch; the runtime attaches
them to the side batch they score."""
REHEARSAL_SCORES_KEY = "rehearsal_scores"
"""Data key of the pool's reward-model scores (rehearsal_rank=advantage); an input of that
name binds to the `pool_scores` role of the interface, wherever it stands after the required
inputs (so that it needs no ptx input before it)."""


def input_roles(name: str, inputs: tuple[str, ...]) -> tuple[str, ...]:
    """The role of each of a call's input keys: by position, except the `pool_scores` role,
    which only the key REHEARSAL_SCORES_KEY takes, wherever it stands after the required
    inputs (the positions after it shift back by one). Shorter than `inputs` when the call
    has more keys than roles (check_bindings refuses it)."""
    info = get_interface(name)
    roles = [r for r in info.inputs if r != "pool_scores"]
    if "pool_scores" in info.inputs and REHEARSAL_SCORES_KEY in inputs[info.required_inputs:]:
        roles.insert(inputs.index(REHEARSAL_SCORES_KEY), "pool_scores")
    return tuple(roles[: len(inputs)])


def check_bindings(name: str, inputs: tuple[str, ...], outputs: tuple[str, ...], *, where: str) -> None:
    """Raise GraphError unless a call's input/output keys fit the interface's roles."""
    info = get_interface(name)
    if not info.required_inputs <= len(inputs) <= len(info.inputs) or len(input_roles(name, inputs)) < len(inputs):
        want = (f"{len(info.inputs)}" if info.required_inputs == len(info.inputs)
                else f"{info.required_inputs} to {len(info.inputs)}")
        raise GraphError(
            f"{where}: interface {name!r} takes {want} input keys ({', '.join(info.inputs)}, by "
            f"position{'; pool_scores only as key ' + REHEARSAL_SCORES_KEY if 'pool_scores' in info.inputs else ''}), "
            f"got {len(inputs)}: {list(inputs)}"
        )
    if len(outputs) > len(info.outputs):
        raise GraphError(
            f"{where}: interface {name!r} produces at most {len(info.outputs)} output keys "
            f"({', '.join(info.outputs) or 'none'}, by position), got {len(outputs)}: {list(outputs)}"
        )
