"""Synthetic planning instances for the planner benchmarks and tests.

`SyntheticCost` has closed-form costs with real trade-offs (tensor parallelism pays a
communication overhead, pipelines pay a bubble, data parallelism pays a gradient
all-reduce, crossing nodes is slower); the small hand-made graphs and `ppo_graph` give it
something to plan; `random_instance` draws a graph, cluster and costs small enough to
enumerate, with its exact optimum (the `search` section of `realloc bench` compares the
annealing search against it). The planner tests share these (tests/planner/synthetic.py
adds the constant-time `FixedCost`).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace
from functools import cache

from cost_model.provider import CallEstimate, MoveEstimate
from graph.catalog import get_interface
from graph.dataflow import DataflowGraph
from graph.placement.layout import Cluster, Layout
from graph.spec import Call, CallKind, ModelArch, ModelSpec
from planner.context import PlanContext
from planner.search import SearchResult, exact_search
from planner.space import SpaceOptions

GIB = float(1 << 30)


def arch(layers: int = 8, hidden: int = 1024, heads: int = 8, kv_heads: int = 8) -> ModelArch:
    """A small llama-like architecture."""
    return ModelArch(family="llama", num_layers=layers, hidden_size=hidden,
                     ffn_hidden_size=4 * hidden, num_heads=heads, num_kv_heads=kv_heads,
                     vocab_size=32000)


def same_placement(a: Layout, b: Layout) -> bool:
    """Whether two layouts put the same shards on the same devices."""
    return a.mesh == b.mesh and a.strategy == b.strategy


@dataclass
class SyntheticCost:
    """Closed-form costs: time ~ work / (devices x efficiency) + communication terms."""

    cluster: Cluster
    device_memory_bytes: float = 80 * GIB
    flops: float = 100e12
    """Effective flop/s of one device."""
    mem_bw: float = 1.5e12
    """Memory bandwidth (decoding reads every weight once per token)."""
    intra_bw: float = 100e9
    inter_bw: float = 12e9
    latency_s: float = 2e-3
    tp_overhead: float = 0.08
    """Relative slowdown per doubling of tp inside a node (x4 across nodes)."""
    calls: int = field(default=0, init=False)

    def _spans_nodes(self, layout: Layout) -> bool:
        return len(layout.mesh.nodes(self.cluster)) > 1

    def _bw(self, layout: Layout) -> float:
        return self.inter_bw if self._spans_nodes(layout) else self.intra_bw

    def call_estimate(self, call: Call, model: ModelSpec, layout: Layout) -> CallEstimate:
        self.calls += 1
        if model.arch is None:
            t = 1e-4 * call.batch_size
            return CallEstimate(time_s=t, peak_bytes=1e6, resident_bytes=0.0)
        params = float(model.num_params)
        dp, tp, pp, m = layout.dp, layout.tp, layout.pp, layout.micro_batches
        n = layout.mesh.size
        tokens = float(call.num_tokens)
        tp_cross = tp > self.cluster.devices_per_node
        tp_pen = 1.0 + self.tp_overhead * (tp.bit_length() - 1) * (4.0 if tp_cross else 1.0)
        bubble = 1.0 + (pp - 1) / m
        per_mb = self.latency_s * m * pp
        arch_ = model.arch
        act = tokens / (dp * m) * arch_.hidden_size * (arch_.num_layers / pp) * 34 / tp
        weights = 2 * params / (tp * pp)
        if call.kind is CallKind.GENERATE:
            steps = max(call.max_new_tokens, call.response_len, 1)
            decode = steps * (weights / self.mem_bw) * tp_pen * pp + steps * self.latency_s * (tp > 1)
            prefill = 2 * params * call.batch_size * call.prompt_len / (self.flops * n) * tp_pen
            time = decode * m + prefill
            kv = (call.batch_size / dp) * (call.prompt_len + steps) * arch_.num_layers / pp \
                * 2 * arch_.num_kv_heads * arch_.head_dim * 2 / min(tp, arch_.num_kv_heads)
            resident, peak = weights, weights + kv
        elif call.kind is CallKind.INFERENCE:
            time = 2 * params * tokens / (self.flops * n) * tp_pen * bubble + per_mb
            resident, peak = weights, weights + act / 8
        else:
            time = 6 * params * tokens / (self.flops * n) * tp_pen * bubble + per_mb
            if dp > 1:
                time += 2 * weights * (dp - 1) / dp / self._bw(layout)
            resident = weights + 2 * params / (tp * pp) + 12 * params / (tp * pp * dp)
            peak = resident + act
        feasible = peak <= self.device_memory_bytes
        reason = "" if feasible else (
            f"peak {peak / GIB:.2f} GiB > {self.device_memory_bytes / GIB:.2f} GiB "
            f"by {(peak - self.device_memory_bytes) / GIB:.2f} GiB")
        return CallEstimate(time_s=time, peak_bytes=peak, resident_bytes=resident,
                            breakdown={"time": time}, feasible=feasible, reason=reason)

    def realloc_estimate(self, model: ModelSpec, src: Layout, dst: Layout) -> MoveEstimate:
        if same_placement(src, dst) or model.arch is None:
            return MoveEstimate(time_s=0.0, bytes_total=0.0)
        nbytes = 2.0 * model.num_params
        cross = set(src.mesh.nodes(self.cluster)) != set(dst.mesh.nodes(self.cluster)) \
            or self._spans_nodes(src) or self._spans_nodes(dst)
        bw = self.inter_bw if cross else self.intra_bw
        senders = max(1, min(src.mesh.size, dst.mesh.size))
        time = nbytes / (bw * senders) + self.latency_s
        return MoveEstimate(time_s=time, bytes_total=nbytes,
                            bytes_inter_node=nbytes if cross else 0.0,
                            busiest_rank_bytes=nbytes / senders)

    def data_estimate(self, producer: Call, consumer: Call, key: str,
                      src: Layout, dst: Layout) -> MoveEstimate:
        if same_placement(src, dst):
            return MoveEstimate(time_s=0.0, bytes_total=0.0)
        nbytes = 8.0 * producer.batch_size * max(producer.seq_len, 1)
        return MoveEstimate(time_s=nbytes / self.inter_bw + self.latency_s, bytes_total=nbytes)


def fitted_graph(*, models: list[ModelSpec], calls: list[Call], dataset_keys: tuple[str, ...]) -> DataflowGraph:
    """A DataflowGraph whose calls are padded with dataset keys up to their interface's input count.

    Planner tests use interfaces as labels; padding with dataset keys satisfies the
    interface's input roles without adding a dependency between calls.
    """
    pads: set[str] = set()
    fitted = []
    for c in calls:
        missing = get_interface(c.interface).required_inputs - len(c.inputs)
        extra = tuple(f"pad_{i}" for i in range(max(0, missing)))
        pads.update(extra)
        fitted.append(replace(c, inputs=c.inputs + extra))
    return DataflowGraph(models=models, calls=fitted, dataset_keys=tuple(dataset_keys) + tuple(sorted(pads)))


def ppo_graph(*, actor: ModelArch | None = None, critic: ModelArch | None = None,
              ref: ModelArch | None = None, reward: ModelArch | None = None,
              batch_size: int = 64, prompt_len: int = 128, response_len: int = 128,
              rule_reward: bool = False) -> DataflowGraph:
    """The six-call PPO graph (or five calls with a rule-based reward)."""
    actor = actor or arch()
    critic = critic or arch()
    ref = ref or actor
    reward = reward or critic
    lens = {"batch_size": batch_size, "prompt_len": prompt_len, "response_len": response_len}
    models = [
        ModelSpec(role="actor", arch=actor, trainable=True),
        ModelSpec(role="critic", arch=critic, trainable=True, value_head=True),
        ModelSpec(role="ref", arch=ref),
        ModelSpec(role="reward", arch=None, rule="math") if rule_reward
        else ModelSpec(role="reward", arch=reward, value_head=True),
    ]
    calls = [
        Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate",
             inputs=("prompts",), outputs=("seq", "logp"), max_new_tokens=response_len, **lens),
        Call(name="rew", model="reward", kind=CallKind.INFERENCE,
             interface="rule_reward" if rule_reward else "reward_model",
             inputs=("seq",), outputs=("score",), **lens),
        Call(name="ref_inf", model="ref", kind=CallKind.INFERENCE, interface="logprobs",
             inputs=("seq",), outputs=("ref_logp",), **lens),
        Call(name="values", model="critic", kind=CallKind.INFERENCE, interface="values",
             inputs=("seq",), outputs=("val",), **lens),
        Call(name="actor_train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor",
             inputs=("seq", "logp", "ref_logp", "score", "val"), outputs=(), **lens),
        Call(name="critic_train", model="critic", kind=CallKind.TRAIN, interface="ppo_critic",
             inputs=("seq", "score", "val"), outputs=(), **lens),
    ]
    return fitted_graph(models=models, calls=calls, dataset_keys=("prompts",))


# --------------------------------------------------------------------------- small graphs


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


# --------------------------------------------------------------------------- random instances


CLUSTERS = ((1, 2), (1, 4), (2, 2), (1, 8), (2, 4))


@cache
def random_instance(seed: int, *, max_plans: int = 6000) -> tuple[PlanContext, SearchResult]:
    """A graph, cluster and synthetic costs drawn from `seed` (at most `max_plans` plans), with
    its exact optimum."""
    rng = random.Random(seed)
    for _ in range(50):
        nodes, dpn = rng.choice(CLUSTERS)
        cluster = Cluster(num_nodes=nodes, devices_per_node=dpn)
        size = rng.choice([(8, 1024, 8, 8), (16, 2048, 16, 4), (24, 3072, 24, 8)])
        pick = rng.randrange(4)
        graph: DataflowGraph = (gen_train_graph(arch(*size)) if pick == 0 else
                                (fan_graph, frozen_replica_graph, rule_graph)[pick - 1]())
        cost = SyntheticCost(cluster, device_memory_bytes=rng.choice([2, 8, 16, 80]) * GIB,
                             inter_bw=rng.choice([5e9, 25e9]), tp_overhead=rng.choice([0.03, 0.15]))
        ctx = PlanContext(graph, cost, space_options=SpaceOptions(micro_batch_choices=rng.choice([1, 2])))
        try:
            sizes = [len(s.candidates) for s in ctx.spaces.values()]
        except ValueError:
            continue
        if math.prod(sizes) > max_plans:
            continue
        try:
            return ctx, exact_search(ctx.sim, ctx.spaces)
        except ValueError:  # no feasible plan at all: draw again
            continue
    raise RuntimeError(f"seed {seed}: no feasible instance of at most {max_plans} plans in 50 draws")
