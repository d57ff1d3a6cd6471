"""Binding a call's keys to its interface's roles (graph.catalog says each interface's roles
by position) and what each role holds.

A role is a sequence role (the tokens themselves) or a value role over sequences, one value
per sequence or per token. A call binds its keys to roles by position, with one exception:
the roles of KEYED_ROLES (`pool_scores`, `pool_responses`) are taken only by their keys
(REHEARSAL_SCORES_KEY, REHEARSAL_RESPONSES_KEY), wherever those stand after the required
inputs.
"""

from __future__ import annotations

from graph.catalog import get_interface
from graph.errors import GraphError

SEQUENCE_ROLES = frozenset({"prompts", "sequences", "pairs", "ptx", "pool_responses"})
"""Roles whose data are sequences of tokens; every other role is a value over sequences.
A sequence role after a call's first input is a batch of its own (ptx: pretraining/SFT
sequences mixed into the PPO actor loss; pool_responses: the policy's responses to the
rehearsal pool's prompts), not a field of the first input."""
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
REHEARSAL_RESPONSES_KEY = "rehearsal_responses"
"""Data key of the policy's responses to the rehearsal pool's prompts (rehearsal_rank=
advantage_policy): output of the `rehearsal_gen` call, input of the scorer and, as the
`pool_responses` role, of the ppo_actor."""
KEYED_ROLES = {"pool_scores": REHEARSAL_SCORES_KEY, "pool_responses": REHEARSAL_RESPONSES_KEY}
"""Interface roles bound by key name, not position: role -> the only key that takes it."""


def input_roles(name: str, inputs: tuple[str, ...]) -> tuple[str, ...]:
    """The role of each of a call's input keys: by position, except the roles of KEYED_ROLES
    (pool_scores, pool_responses), which only their keys take, wherever they stand after the
    required inputs (the positions after them shift back). Shorter than `inputs` when the
    call has more keys than roles (check_bindings refuses it)."""
    info = get_interface(name)
    keyed = {inputs.index(key): role for role, key in KEYED_ROLES.items()
             if role in info.inputs and key in inputs[info.required_inputs:]}
    positional = iter(r for r in info.inputs if r not in KEYED_ROLES)
    roles = []
    for i in range(len(inputs)):
        role = keyed.get(i) or next(positional, None)
        if role is None:
            break
        roles.append(role)
    return tuple(roles)


def check_bindings(name: str, inputs: tuple[str, ...], outputs: tuple[str, ...], *, where: str) -> None:
    """Raise GraphError unless a call's input/output keys fit the interface's roles."""
    info = get_interface(name)
    if not info.required_inputs <= len(inputs) <= len(info.inputs) or len(input_roles(name, inputs)) < len(inputs):
        want = (f"{len(info.inputs)}" if info.required_inputs == len(info.inputs)
                else f"{info.required_inputs} to {len(info.inputs)}")
        raise GraphError(
            f"{where}: interface {name!r} takes {want} input keys ({', '.join(info.inputs)}, by "
            f"position{''.join(f'; {r} only as key {k}' for r, k in KEYED_ROLES.items() if r in info.inputs)}), "
            f"got {len(inputs)}: {list(inputs)}"
        )
    if len(outputs) > len(info.outputs):
        raise GraphError(
            f"{where}: interface {name!r} produces at most {len(info.outputs)} output keys "
            f"({', '.join(info.outputs) or 'none'}, by position), got {len(outputs)}: {list(outputs)}"
        )
