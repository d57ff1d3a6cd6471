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

**Intra-stage fusion** (`plan.fusion: intra`): two train calls placed on the same devices
with the same pipeline degree (PPO's actor_train and critic_train on one mesh) run as one
step whose pipeline schedule alternates their micro-batches, so the pair pays one pipeline
fill/drain per optimizer step instead of two (`cost_model.pipeline_fusion` prices it,
`runtime.engine.fused` runs it). `intra_pairs` says which pairs fuse.
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
    pool = [c.name for c in graph.calls if c.interface == "pool_generate"]
    if pool:
        raise OverlapError(f"train.off_policy_steps=1 does not run the rehearsal pool's generation ({pool[0]!r}, "
                           "graph.train.rehearsal_rank=advantage_policy) one batch ahead; set train.off_policy_steps=0 "
                           "or graph.train.rehearsal_rank=advantage")
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
reading them; intra fuses the pipeline schedules of two train calls sharing their devices; all
is both; auto lets the planner decide per streamed edge and per fusable train pair."""


def check_fusion(fusion: object, off_policy_steps: int = 0) -> str:
    """The validated `plan.fusion` value."""
    if fusion not in FUSION_MODES:
        raise OverlapError(f"plan.fusion={fusion!r} is not one of {', '.join(FUSION_MODES)}")
    if fusion in ("inter", "all") and off_policy_steps:
        raise OverlapError(f"plan.fusion={fusion} streams a batch's samples within its iteration, but "
                           "train.off_policy_steps=1 generates the next batch ahead; set one of them off "
                           "(plan.fusion=auto plans no streaming with off-policy)")
    if fusion == "intra" and off_policy_steps:
        raise OverlapError("plan.fusion=intra with train.off_policy_steps=1 is not supported yet (the "
                           "off-policy step order does not fuse train calls); set one of them off")
    return str(fusion)


def stream_candidates(graph: DataflowGraph, meshes: Mapping[str, tuple[int, ...]]) -> tuple[tuple[str, str], ...]:
    """(generate call, inference call) edges whose samples can stream: the inference call reads
    the generate call's sequences (and otherwise only its other outputs or dataset keys), and
    runs on devices disjoint from the generate call's (so it can work while generation goes on)."""
    out = []
    for gen in graph.calls:
        if gen.kind is not CallKind.GENERATE or gen.interface == "pool_generate":  # it returns a cache most iterations
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
    if fusion in ("inter", "all"):
        return stream_candidates(graph, meshes)
    return ()


def intra_candidates(graph: DataflowGraph, meshes: Mapping[str, tuple[int, ...]],
                     shapes: Mapping[str, tuple[int, int, int]]) -> tuple[tuple[str, str], ...]:
    """Pairs (a, b) of train calls (graph order) that can fuse: same devices, same (dp, tp, pp)
    `shapes` with pp > 1 (at pp = 1 there is no bubble to fill; one pipeline group), and b can move up to a's place in the
    order (its inputs are made before a, and no call between them reads b's model). Each
    train call is in at most one pair, paired with the first later train call that fits."""
    order = [c.name for c in graph.calls]
    trains = [c.name for c in graph.calls if c.kind is CallKind.TRAIN]
    used: set[str] = set()
    out = []

    def movable(a: str, b: str) -> bool:
        ia, ib = order.index(a), order.index(b)
        made_early = all(k in graph.dataset_keys or order.index(graph.producer(k)) < ia
                         for k in graph.call(b).inputs)
        between = graph.calls[ia + 1:ib]
        return made_early and all(c.model != graph.call(b).model for c in between)

    for i, a in enumerate(trains):
        if a in used or shapes[a][2] <= 1:
            continue
        for b in trains[i + 1:]:
            if (b not in used and tuple(meshes[b]) == tuple(meshes[a]) and tuple(shapes[b]) == tuple(shapes[a])
                    and movable(a, b)):
                out.append((a, b))
                used.update((a, b))
                break
    return tuple(out)


def intra_pairs(graph: DataflowGraph, meshes: Mapping[str, tuple[int, ...]],
                shapes: Mapping[str, tuple[int, int, int]], fusion: str) -> tuple[tuple[str, str], ...]:
    """The train pairs `plan.fusion` fuses without a search: every candidate for intra and
    all, none for off and inter (auto is decided by the planner, which starts from none)."""
    if fusion in ("intra", "all"):
        return intra_candidates(graph, meshes, shapes)
    return ()
