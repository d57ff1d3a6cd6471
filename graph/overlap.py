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

**Inter-stage fusion** (`plan.fusion`, RLHFuse): a generate call sends the samples that
finish in chunks to the inference calls reading them on other devices, which score each
chunk while the long tail is still generating. `stream_candidates` says which edges can
stream; the plan lists those that do (`Plan.streamed`).
"""

from __future__ import annotations

from collections.abc import Mapping

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



# --------------------------------------------------------------------------- fusion

FUSION_MODES = ("off", "inter", "intra", "all", "auto")
"""Values of `plan.fusion`: inter streams samples from a generate call into the inference calls
reading them; intra would fuse two train calls' pipeline schedules (not implemented); all is
both; auto lets the planner decide per edge."""


def check_fusion(fusion: object, off_policy_steps: int = 0) -> str:
    """The validated `plan.fusion` value."""
    if fusion not in FUSION_MODES:
        raise OverlapError(f"plan.fusion={fusion!r} is not one of {', '.join(FUSION_MODES)}")
    if fusion in ("intra", "all"):
        raise OverlapError(f"plan.fusion={fusion}: the fused train schedule (intra-stage fusion) is not "
                           "implemented; use plan.fusion=inter or auto (train calls on disjoint devices "
                           "already run side by side)")
    if fusion == "inter" and off_policy_steps:
        raise OverlapError("plan.fusion=inter streams a batch's samples within its iteration, but "
                           "train.off_policy_steps=1 generates the next batch ahead; set one of them off "
                           "(plan.fusion=auto plans no streaming with off-policy)")
    return str(fusion)


def stream_candidates(graph: DataflowGraph, meshes: Mapping[str, tuple[int, ...]]) -> tuple[tuple[str, str], ...]:
    """(generate call, inference call) edges whose samples can stream: the inference call reads
    the generate call's sequences (and otherwise only its other outputs or dataset keys), and
    runs on devices disjoint from the generate call's (so it can work while generation goes on)."""
    out = []
    for gen in graph.calls:
        if gen.kind is not CallKind.GENERATE:
            continue
        gen_mesh = set(meshes[gen.name])
        for consumer in graph.calls:
            if consumer.kind is not CallKind.INFERENCE or not consumer.inputs:
                continue
            if consumer.inputs[0] not in gen.outputs:
                continue
            if any(k not in gen.outputs and k not in graph.dataset_keys for k in consumer.inputs):
                continue
            if gen_mesh & set(meshes[consumer.name]):
                continue
            out.append((gen.name, consumer.name))
    return tuple(out)


def streamed_edges(graph: DataflowGraph, meshes: Mapping[str, tuple[int, ...]], fusion: str,
                   off_policy_steps: int = 0) -> tuple[tuple[str, str], ...]:
    """The edges `plan.fusion` streams without a search: every candidate for inter, none for off
    (auto is decided by the planner, which starts from none)."""
    check_fusion(fusion, off_policy_steps)
    if fusion == "inter":
        return stream_candidates(graph, meshes)
    return ()
