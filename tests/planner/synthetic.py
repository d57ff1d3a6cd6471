"""Synthetic cost providers and graphs for planner tests and benchmarks.

`SyntheticCost` has closed-form costs with real trade-offs (tensor parallelism pays a
communication overhead, pipelines pay a bubble, data parallelism pays a gradient
all-reduce, crossing nodes is slower); `FixedCost` gives every call a constant time so
simulator timelines can be worked by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cost_model.provider import CallEstimate, MoveEstimate
from graph.dataflow import DataflowGraph
from graph.placement.layout import Cluster, Layout
from graph.spec import Call, CallKind, ModelArch, ModelSpec

GIB = float(1 << 30)


def arch(layers: int = 8, hidden: int = 1024, heads: int = 8, kv_heads: int = 8) -> ModelArch:
    """A small llama-like architecture."""
    return ModelArch(family="llama", num_layers=layers, hidden_size=hidden,
                     ffn_hidden_size=4 * hidden, num_heads=heads, num_kv_heads=kv_heads,
                     vocab_size=32000)


def _same_placement(a: Layout, b: Layout) -> bool:
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
        if _same_placement(src, dst) or model.arch is None:
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
        if _same_placement(src, dst):
            return MoveEstimate(time_s=0.0, bytes_total=0.0)
        nbytes = 8.0 * producer.batch_size * max(producer.seq_len, 1)
        return MoveEstimate(time_s=nbytes / self.inter_bw + self.latency_s, bytes_total=nbytes)


@dataclass
class FixedCost:
    """Constant times for hand-worked timelines: every layout of a call takes `times[call]`."""

    cluster: Cluster
    times: Mapping[str, float]
    realloc_s: float = 1.0
    data_s: float = 0.5
    resident: Mapping[str, float] = field(default_factory=dict)
    peak: Mapping[str, float] = field(default_factory=dict)
    device_memory_bytes: float = 100.0

    def call_estimate(self, call: Call, model: ModelSpec, layout: Layout) -> CallEstimate:
        return CallEstimate(time_s=self.times[call.name],
                            peak_bytes=self.peak.get(call.name, 0.0),
                            resident_bytes=self.resident.get(call.name, 0.0))

    def realloc_estimate(self, model: ModelSpec, src: Layout, dst: Layout) -> MoveEstimate:
        same = _same_placement(src, dst)
        return MoveEstimate(time_s=0.0 if same else self.realloc_s, bytes_total=0.0 if same else 1.0)

    def data_estimate(self, producer: Call, consumer: Call, key: str,
                      src: Layout, dst: Layout) -> MoveEstimate:
        same = _same_placement(src, dst)
        return MoveEstimate(time_s=0.0 if same else self.data_s, bytes_total=0.0 if same else 1.0)


def fitted_graph(*, models: list[ModelSpec], calls: list[Call], dataset_keys: tuple[str, ...]) -> DataflowGraph:
    """A DataflowGraph whose calls are padded with dataset keys up to their interface's input count.

    Planner tests use interfaces as labels; padding with dataset keys satisfies the
    interface's input roles without adding a dependency between calls.
    """
    from dataclasses import replace

    from graph.catalog import get_interface

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
