"""Small hand-made graphs for planner tests."""

from __future__ import annotations

from graph.dataflow import DataflowGraph
from graph.placement.layout import DeviceMesh, Layout
from graph.spec import Call, CallKind, ModelArch, ModelSpec
from tests.planner.synthetic import arch, fitted_graph


def on(start: int, size: int, dp: int = 0, tp: int = 1, pp: int = 1, mb: int = 1) -> Layout:
    """Layout over [start, start + size); dp defaults to size / (tp * pp)."""
    dp = dp or size // (tp * pp)
    return Layout(mesh=DeviceMesh.span(start, size), dp=dp, tp=tp, pp=pp, micro_batches=mb)


def _call(name: str, model: str, kind: CallKind, interface: str, inputs: tuple[str, ...],
          outputs: tuple[str, ...], batch: int = 8) -> Call:
    return Call(name=name, model=model, kind=kind, interface=interface, inputs=inputs,
                outputs=outputs, batch_size=batch, prompt_len=16, response_len=16,
                max_new_tokens=16)


def gen_train_graph(a: ModelArch | None = None) -> DataflowGraph:
    """gen (actor) -> actor_train."""
    a = a or arch()
    return fitted_graph(
        models=[ModelSpec(role="actor", arch=a, trainable=True)],
        calls=[_call("gen", "actor", CallKind.GENERATE, "generate", ("prompts",), ("seq",)),
               _call("train", "actor", CallKind.TRAIN, "ppo_actor", ("seq",), ())],
        dataset_keys=("prompts",))


def fan_graph() -> DataflowGraph:
    """gen -> ref_inf, values -> actor_train, critic_train (actor and critic trained)."""
    return fitted_graph(
        models=[ModelSpec(role="actor", arch=arch(), trainable=True),
                ModelSpec(role="ref", arch=arch()),
                ModelSpec(role="critic", arch=arch(), trainable=True, value_head=True)],
        calls=[_call("gen", "actor", CallKind.GENERATE, "generate", ("prompts",), ("seq",)),
               _call("ref_inf", "ref", CallKind.INFERENCE, "logprobs", ("seq",), ("ref_logp",)),
               _call("values", "critic", CallKind.INFERENCE, "values", ("seq",), ("val",)),
               _call("actor_train", "actor", CallKind.TRAIN, "ppo_actor",
                     ("seq", "ref_logp", "val"), ()),
               _call("critic_train", "critic", CallKind.TRAIN, "ppo_critic", ("seq", "val"), ())],
        dataset_keys=("prompts",))


def frozen_replica_graph() -> DataflowGraph:
    """gen -> ref1, ref2 (both on the frozen ref) -> train."""
    return fitted_graph(
        models=[ModelSpec(role="actor", arch=arch(), trainable=True),
                ModelSpec(role="ref", arch=arch())],
        calls=[_call("gen", "actor", CallKind.GENERATE, "generate", ("prompts",), ("seq",)),
               _call("ref1", "ref", CallKind.INFERENCE, "logprobs", ("seq",), ("a",)),
               _call("ref2", "ref", CallKind.INFERENCE, "logprobs", ("seq",), ("b",)),
               _call("train", "actor", CallKind.TRAIN, "ppo_actor", ("seq", "a", "b"), ())],
        dataset_keys=("prompts",))


def rule_graph() -> DataflowGraph:
    """gen -> rule reward -> train."""
    return fitted_graph(
        models=[ModelSpec(role="actor", arch=arch(), trainable=True),
                ModelSpec(role="reward", arch=None, rule="math")],
        calls=[_call("gen", "actor", CallKind.GENERATE, "generate", ("prompts",), ("seq",)),
               _call("rew", "reward", CallKind.INFERENCE, "rule_reward", ("seq",), ("score",)),
               _call("train", "actor", CallKind.TRAIN, "ppo_actor", ("seq", "score"), ())],
        dataset_keys=("prompts",))
