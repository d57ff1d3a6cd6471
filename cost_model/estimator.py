"""AnalyticCostModel: time and per-device memory of every call under every layout.

Implements `cost_model.provider.CostProvider`. All terms are per device and the slowest
(for time) or fullest (for memory) pipeline stage decides. Breakdown keys end in
`_s` (seconds; they sum to `time_s`) or `_bytes` (they sum to `peak_bytes`).

Model of a call (see `cost_model.shapes` for the FLOP and byte counts):
The call's `micro_batches` is a lower bound on the layout's.
- train: per optimizer step (ppo_epochs * mini_batches steps per call), a 1F1B
  pipeline over `micro_batches` micro-batches per DP rank: compute (3x forward, 4x
  with full recomputation), TP collectives (2 per layer per pass; with sequence
  parallelism an all-gather + reduce-scatter pair of the same volume), pipeline p2p,
  the bubble (pp - 1) * stage time, the DP gradient all-reduce (reduce-scatter +
  parameter all-gather with the distributed optimizer), and the Adam step (memory
  bound, 32 bytes of traffic per local parameter).
- inference: forward passes through the same pipeline.
- generate: prefill of the prompts (compute-bound), which samples the first response
  token, plus one decode step per further expected response token: each step reads the stage's weights and KV cache (memory-bound),
  pays a fixed per-layer overhead and latency-bound TP all-reduces. The KV cache is
  sized by max_new_tokens, the time by the expected response length, or, given a per-sample
  length distribution (`Call.response_lengths`), by the expected longest response of each
  static micro-batch (a batch decodes until its longest response ends).
Memory: bf16 weights, grads (param dtype, Megatron's default grad_reduce_in_fp32=False),
Adam states as fp32 master + m + v = 12 bytes/param (sharded over DP with the
distributed optimizer), activations of the micro-batches 1F1B keeps in flight, KV cache,
and logits (bf16 + an fp32 copy for the loss / log-softmax).
LoRA (`ModelSpec.lora`): weights count base + adapters, but grads, optimizer states, the
DP gradient sync and the Adam step count only the trained adapters (+ a value head), and
a refresh of a replica moves only those (the frozen base stays in every replica).
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cost_model import shapes
from cost_model.collectives import collective_time
from cost_model.datamove import (
    data_loads,
    num_sequences,
    rehearsal_embedding_sequences,
    rehearsal_scoring_sequences,
    runs_per_iteration,
    side_sequences,
)
from cost_model.hardware import DTYPE_BYTES, GiB, HardwareSpec
from cost_model.provider import CallEstimate, MoveEstimate
from cost_model.transfer_cost import price_loads
from graph.placement.layout import Cluster, Layout
from graph.placement.params import check_tp, padded_vocab, stage_params
from graph.placement.transfer import transfer_loads
from graph.spec import Call, CallKind, ModelArch, ModelSpec

ADAM_STATE_BYTES = 12  # fp32 master weights + Adam m + v (ZeRO paper, section 5.1: 12 of the 16 bytes)
ADAM_TRAFFIC_BYTES = 32  # read param32, m, v, grad; write param32, m, v, param16 (+ grad-norm read)
LOGITS_BYTES = 6  # bf16 logits + the fp32 copy the loss / log-softmax works on
HUMAN_NAMES = {
    "weights_bytes": "weights", "grads_bytes": "grads", "optimizer_states_bytes": "optimizer states",
    "activations_bytes": "activations", "kv_cache_bytes": "KV cache", "logits_bytes": "logits",
}


@dataclass(frozen=True, kw_only=True)
class EstimatorOptions:
    """How the runtime trains and serves: precision, recomputation, optimizer sharding."""

    dtype: str = "bf16"
    """Parameter and activation dtype."""
    recompute: bool = False
    """Full activation recomputation (store each layer's input only)."""
    distributed_optimizer: bool = True
    """Shard optimizer states (and the gradient reduction) over DP, Megatron's distributed optimizer."""
    sequence_parallel: bool = True
    """Megatron sequence parallelism when tp > 1 (shards norm/dropout activations)."""
    grad_bytes: int = 2
    """Bytes per gradient element (2: bf16 grad buffer; 4: grad_reduce_in_fp32); never fewer
    than the parameters' (`grad_elem_bytes`: fp32 parameters, as on CPU, have fp32 gradients)."""
    vocab_multiple: int = 128
    """Megatron pads the vocabulary to a multiple of this times tp."""

    def __post_init__(self) -> None:
        if self.dtype not in DTYPE_BYTES:
            raise ValueError(f"estimator dtype {self.dtype!r} unknown; use one of {', '.join(DTYPE_BYTES)}")
        if self.grad_bytes not in (2, 4):
            raise ValueError(f"estimator grad_bytes must be 2 or 4, got {self.grad_bytes!r}")
        if self.vocab_multiple < 1:
            raise ValueError(f"estimator vocab_multiple must be >= 1, got {self.vocab_multiple!r}")

    @property
    def dtype_bytes(self) -> int:
        """Bytes per parameter / activation element."""
        return DTYPE_BYTES[self.dtype]

    @property
    def grad_elem_bytes(self) -> int:
        """Bytes per element of the gradient buffer: `grad_bytes`, at least the parameters'."""
        return max(self.grad_bytes, self.dtype_bytes)


@dataclass(frozen=True)
class _Shape:
    """What every term needs about one call on one layout."""

    arch: ModelArch
    value_head: bool
    layout: Layout
    vocab: int
    layers_per_stage: int
    stage_params: tuple[float, ...]
    trained_params: tuple[float, ...]
    """Per stage, the parameters a train step updates (all of them without LoRA)."""


class AnalyticCostModel:
    """CostProvider from analytic formulas over a HardwareSpec (optionally calibrated)."""

    def __init__(self, hardware: HardwareSpec, cluster: Cluster, *, options: EstimatorOptions | None = None,
                 iteration_barrier: bool = False, blocking_receives: bool = False,
                 **option_values: Any) -> None:
        if options is not None and option_values:
            raise ValueError("give either options= or option keywords, not both")
        self.hardware = hardware
        self.cluster = cluster
        self.options = options or EstimatorOptions(**option_values)
        self.device_memory_bytes = hardware.usable_memory_bytes
        self.host_cores = hardware.host_cores
        """Cores a node's devices share (0: none); the simulator slows overlapping calls down."""
        self.iteration_barrier = iteration_barrier
        """The runtime synchronises all ranks at the end of every iteration (the simulator then
        does not overlap iterations)."""
        self.blocking_receives = blocking_receives
        """A rank of the runtime that receives data waits for it in its step order (sends do not
        block); the simulator then holds the receiving devices during a transfer."""
        self._realloc_cache: dict[tuple[Any, ...], MoveEstimate] = {}

    @property
    def threads_per_device(self) -> int:
        """Torch threads each worker runs with under this model."""
        return self.hardware.threads_per_device

    def thread_options(self) -> tuple[int, ...]:
        """Threads per worker a plan may choose (`HardwareSpec.thread_options`)."""
        return self.hardware.thread_options()

    def with_threads(self, threads: int, hidden: int | None = None) -> AnalyticCostModel:
        """The same model with every worker running `threads` torch threads (`HardwareSpec.with_threads`;
        `hidden`: the layer size the thread efficiency is taken at)."""
        return AnalyticCostModel(self.hardware.with_threads(threads, hidden), self.cluster, options=self.options,
                                 iteration_barrier=self.iteration_barrier, blocking_receives=self.blocking_receives)

    # ------------------------------------------------------------------ CostProvider
    def call_estimate(self, call: Call, model: ModelSpec, layout: Layout) -> CallEstimate:
        """Time and per-device memory of `call` on `model` under `layout`."""
        if model.arch is None:  # a rule-based reward: host work per sequence
            hw = self.hardware
            t = hw.rule_call_overhead_s + num_sequences(call) * hw.rule_seq_overhead_s
            return CallEstimate(time_s=t, peak_bytes=0.0, resident_bytes=0.0, breakdown={"rule_reward_s": t})
        if call.seq_len <= 0:
            raise ValueError(
                f"call {call.name!r}: prompt_len + response_len is 0; give the expected lengths so it can be priced"
            )
        if call.micro_batches > layout.micro_batches:  # the call's value is a lower bound
            layout = dataclasses.replace(layout, micro_batches=call.micro_batches)
        why = self._structural_check(call, model, layout)
        if why:
            return CallEstimate(time_s=math.inf, peak_bytes=math.inf, resident_bytes=math.inf,
                                feasible=False, reason=why)
        shape = self._shape(model, layout)
        if call.kind == CallKind.TRAIN:
            time_terms, mem_terms, resident = self._train(call, shape)
        elif call.kind == CallKind.INFERENCE:
            time_terms, mem_terms, resident = self._inference(call, shape)
        else:
            time_terms, mem_terms, resident = self._generate(call, shape)
        return self._verdict(time_terms, mem_terms, resident)

    def realloc_estimate(self, model: ModelSpec, src: Layout, dst: Layout) -> MoveEstimate:
        """Cost of moving `model`'s parameters from `src` to `dst`, priced by link.

        Prices `transfer_loads` (the loads of `transfer_flows`, the fast form of the
        TransferPlan `plan_transfer` derives: same bytes per destination and per link kind),
        with the vocabulary padded as Megatron pads it for the larger of the two TP degrees.
        """
        if model.arch is None or src == dst:
            return MoveEstimate(time_s=0.0, bytes_total=0.0)
        key = (model.arch, model.value_head, model.lora, src, dst)
        if key not in self._realloc_cache:
            vocab = padded_vocab(model.arch.vocab_size, math.lcm(src.tp, dst.tp), self.options.vocab_multiple)
            # a LoRA model's replicas keep the frozen base: only adapters (+ value head) move
            loads = transfer_loads(model.arch, src, dst, value_head=model.value_head, cluster=self.cluster,
                                   dtype_bytes=self.options.dtype_bytes, vocab_size=vocab,
                                   lora=model.lora, trainable_only=model.lora is not None)
            est = price_loads(loads, self.hardware)
            hw = self.hardware
            if hw.realloc_overhead_s > 0 or hw.realloc_peer_overhead_s > 0:  # paid even when all copies are local
                most = max((a + b for a, b in loads.peers.values()), default=0)
                extra = hw.realloc_overhead_s + most * hw.realloc_peer_overhead_s
                est = dataclasses.replace(est, time_s=est.time_s + extra)
            self._realloc_cache[key] = est
        return self._realloc_cache[key]

    def data_estimate(self, producer: Call, consumer: Call, key: str, src: Layout, dst: Layout) -> MoveEstimate:
        """Cost of moving data key `key` from `producer`'s layout to `consumer`'s."""
        loads, sends = data_loads(producer, consumer, key, src, dst, self.cluster)
        est = price_loads(loads, self.hardware)
        if est.bytes_total > 0 and self.hardware.data_overhead_s > 0:
            # every send serialises the batch on its sender, one send after another
            est = dataclasses.replace(est, time_s=est.time_s + sends * self.hardware.data_overhead_s)
        return est

    # ------------------------------------------------------------------ checks
    def _structural_check(self, call: Call, model: ModelSpec, layout: Layout) -> str:
        arch = model.arch
        assert arch is not None
        if layout.mesh.devices[-1] >= self.cluster.num_devices:
            return f"mesh {layout.mesh} uses devices outside the cluster of {self.cluster.num_devices}"
        why = check_tp(arch, layout.tp, vocab_size=padded_vocab(arch.vocab_size, layout.tp,
                                                                self.options.vocab_multiple))
        if why:
            return why
        if arch.num_layers % layout.pp:
            return f"num_layers={arch.num_layers} is not divisible by pp={layout.pp}"
        n_seq = num_sequences(call)
        minis = _mini_batches(call.args) if call.kind == CallKind.TRAIN else 1
        if n_seq < minis * layout.dp * layout.micro_batches:
            per = f" per mini-batch ({minis} mini-batches)" if minis > 1 else ""
            return (f"batch of {n_seq // minis} sequences{per} cannot fill dp={layout.dp} x "
                    f"micro_batches={layout.micro_batches}")
        return ""

    def _shape(self, model: ModelSpec, layout: Layout) -> _Shape:
        arch = model.arch
        assert arch is not None
        vocab = padded_vocab(arch.vocab_size, layout.tp, self.options.vocab_multiple)
        which = {"value_head": model.value_head, "tp": layout.tp, "pp": layout.pp, "vocab_size": vocab,
                 "lora": model.lora}
        return _Shape(arch=arch, value_head=model.value_head, layout=layout, vocab=vocab,
                      layers_per_stage=arch.num_layers // layout.pp,
                      stage_params=stage_params(arch, **which),
                      trained_params=stage_params(arch, **which, trainable_only=True))

    def _verdict(self, time_terms: dict[str, float], mem_terms: dict[str, float],
                 resident: float) -> CallEstimate:
        peak = sum(mem_terms.values())
        breakdown = {**time_terms, **mem_terms}
        cap = self.device_memory_bytes
        if peak > cap:
            parts = sorted(mem_terms.items(), key=lambda kv: -kv[1])
            listed = " + ".join(f"{HUMAN_NAMES.get(k, k)} {v / GiB:.1f} GiB" for k, v in parts if v > 0)
            reason = (f"{listed} = {peak / GiB:.1f} GiB exceed the usable {cap / GiB:.1f} GiB of "
                      f"{self.hardware.name} by {(peak - cap) / GiB:.1f} GiB "
                      f"(largest: {HUMAN_NAMES.get(parts[0][0], parts[0][0])})")
            return CallEstimate(time_s=sum(time_terms.values()), peak_bytes=peak, resident_bytes=resident,
                                breakdown=breakdown, feasible=False, reason=reason)
        return CallEstimate(time_s=sum(time_terms.values()), peak_bytes=peak, resident_bytes=resident,
                            breakdown=breakdown)

    # ------------------------------------------------------------------ building blocks
    def _group(self, layout: Layout, axis: str, dp_rank: int = 0, tp_rank: int = 0,
               pp_rank: int = 0) -> list[int]:
        """Devices of the tp / dp group through the given coordinates."""
        if axis == "tp":
            return [layout.device(dp_rank=dp_rank, tp_rank=t, pp_rank=pp_rank) for t in range(layout.tp)]
        return [layout.device(dp_rank=d, tp_rank=tp_rank, pp_rank=pp_rank) for d in range(layout.dp)]

    def _corun(self, s: _Shape, nbytes: float, *, memory: bool = False, decode: bool = False) -> float:
        """Speed of each of the layout's workers of one node computing at once (`corun_speed_at`),
        when what they read together (`nbytes` each) outgrows the last-level cache; 1 otherwise."""
        hw = self.hardware
        if hw.corun_workers < 2:
            return 1.0
        per_node: dict[int, int] = defaultdict(int)
        for d in s.layout.mesh.devices:
            per_node[self.cluster.node_of(d)] += 1
        busy = max(per_node.values())
        if busy <= 1 or (hw.cache_bytes > 0 and busy * nbytes <= hw.cache_bytes):
            return 1.0
        return hw.corun_speed_at(s.arch.hidden_size, busy, memory=memory, decode=decode)

    def _forward_pass(self, s: _Shape, stage: int, tokens: float, ctx: float, head_tokens: float,
                      passes: float, *, sampling: bool = False, decode: bool = False) -> tuple[float, float, float]:
        """(compute, tp collectives, pipeline p2p) seconds of `passes` forward-equivalents of one stage.

        At tp > 1 an LM head adds its vocabulary-parallel collectives: three small all-reduces
        (max, sum of exponentials, target logit) for log-probs, or one all-gather of the logits
        when sampling."""
        hw, opts, lay = self.hardware, self.options, s.layout
        flops = shapes.layer_forward_flops(s.arch, tokens, ctx) / lay.tp
        rate = (hw.flops(opts.dtype) * hw.compute_speed_at(s.arch.hidden_size, decode=decode)
                * self._corun(s, s.stage_params[stage] * opts.dtype_bytes, decode=decode))
        compute = s.layers_per_stage * (flops / rate + hw.layer_overhead_s)
        compute += hw.micro_batch_overhead_s
        if stage == lay.pp - 1:
            head = shapes.head_params(s.arch, value_head=s.value_head)
            head = head if s.value_head else s.vocab * s.arch.hidden_size
            compute += 2 * head_tokens * head / lay.tp / rate
        act = tokens * s.arch.hidden_size * opts.dtype_bytes
        tp_comm = 0.0
        if lay.tp > 1:
            group = self._group(lay, "tp", pp_rank=stage)
            tp_comm = 2 * s.layers_per_stage * collective_time("all_reduce", act, group, hw, self.cluster)
            count = 2 * s.layers_per_stage
            if stage == lay.pp - 1 and not s.value_head:
                if sampling:
                    tp_comm += collective_time("all_gather", head_tokens * s.vocab * 4, group, hw, self.cluster)
                    count += 1
                else:
                    tp_comm += 3 * collective_time("all_reduce", head_tokens * 4, group, hw, self.cluster)
                    count += 3
            tp_comm += count * hw.tp_collective_extra(lay.tp)  # host work and wake-ups (CPU profiles)
        p2p = 0.0
        if lay.pp > 1 and stage < lay.pp - 1:
            pair = [lay.device(dp_rank=0, tp_rank=0, pp_rank=stage),
                    lay.device(dp_rank=0, tp_rank=0, pp_rank=stage + 1)]
            shard = act / lay.tp if opts.sequence_parallel else act
            p2p = collective_time("p2p", shard, pair, hw, self.cluster)
        return compute * passes, tp_comm * passes, p2p * passes

    def _act_per_token(self, s: _Shape) -> float:
        return shapes.layer_activation_bytes_per_token(
            s.arch, tp=s.layout.tp, sequence_parallel=self.options.sequence_parallel and s.layout.tp > 1,
            dtype_bytes=self.options.dtype_bytes)

    def _logits_bytes(self, s: _Shape, tokens: float, per_elem: float = LOGITS_BYTES) -> float:
        width = 1 if s.value_head else s.vocab / s.layout.tp
        return tokens * width * per_elem

    def _overheads(self, call_: Call, lay: Layout, **extra: float) -> dict[str, float]:
        """Fixed per-call (and per-step) terms; absent when the hardware has none (GPU presets)."""
        terms = {k: v for k, v in extra.items() if v > 0}
        call = self.hardware.call_overhead(call_.kind.value, lay.dp, num_sequences(call_) / lay.dp)
        if call > 0:
            terms["call_overhead_s"] = call
        return terms

    def _worst_stage(self, per_stage: list[dict[str, float]]) -> dict[str, float]:
        return max(per_stage, key=lambda terms: sum(terms.values()))

    # ------------------------------------------------------------------ call kinds
    def _train(self, call: Call, s: _Shape) -> tuple[dict[str, float], dict[str, float], float]:
        lay, opts, hw = s.layout, self.options, self.hardware
        epochs, minis = _epochs(call.args), _mini_batches(call.args)
        steps = epochs * minis
        # the extra batches (ptx, rehearsal) train in the same steps; the rehearsal selection's
        # forwards (the pool's prompts: prompt_len of seq_len; a likelihood rank's whole pairs),
        # one pass of `passes` each, are amortised in
        passes = 4.0 if opts.recompute else 3.0
        select = (rehearsal_embedding_sequences(call) * call.prompt_len / max(call.seq_len, 1)
                  + rehearsal_scoring_sequences(call))
        embed = select / passes / max(steps, 1)
        seq_per_mb = (call.batch_size + side_sequences(call) + embed) / minis / lay.dp / lay.micro_batches
        tokens = seq_per_mb * call.seq_len
        ctx = shapes.causal_ctx(call.seq_len)
        stages = [self._forward_pass(s, k, tokens, ctx, tokens, passes) for k in range(lay.pp)]
        worst = max(range(lay.pp), key=lambda k: sum(stages[k]))
        compute, tp_comm, p2p = stages[worst]
        t_mb = compute + tp_comm + p2p
        dp_sync = optimizer = 0.0
        params_dev = max(s.trained_params)
        if lay.dp > 1:
            group = self._group(lay, "dp")
            grads = params_dev * opts.grad_elem_bytes
            if opts.distributed_optimizer:
                dp_sync = (collective_time("reduce_scatter", grads, group, hw, self.cluster)
                           + collective_time("all_gather", params_dev * opts.dtype_bytes, group, hw, self.cluster))
            else:
                dp_sync = collective_time("all_reduce", grads, group, hw, self.cluster)
        local = params_dev / (lay.dp if opts.distributed_optimizer else 1)
        if hw.optimizer_param_time_s > 0:
            optimizer = local * hw.optimizer_param_time_s
        else:
            optimizer = local * ADAM_TRAFFIC_BYTES / hw.achieved_memory_bandwidth
        optimizer /= self._corun(s, local * ADAM_TRAFFIC_BYTES, memory=True)  # a stream over the states
        m = lay.micro_batches
        time_terms = {
            "compute_s": steps * m * compute, "tp_comm_s": steps * m * tp_comm,
            "pp_p2p_s": steps * m * p2p, "pipeline_bubble_s": steps * (lay.pp - 1) * t_mb,
            "dp_grad_sync_s": steps * dp_sync, "optimizer_s": steps * optimizer,
        }
        time_terms.update(self._overheads(call, lay, step_overhead_s=steps * hw.train_step_overhead_s))
        per_stage = []
        for k in range(lay.pp):
            p, trained = s.stage_params[k], s.trained_params[k]
            in_flight = min(m, lay.pp - k)
            terms = {"weights_bytes": p * opts.dtype_bytes, "grads_bytes": trained * opts.grad_elem_bytes,
                     "optimizer_states_bytes": trained * ADAM_STATE_BYTES / (lay.dp if opts.distributed_optimizer else 1)}
            if opts.recompute:
                seq_div = lay.tp if opts.sequence_parallel else 1
                stored = s.arch.hidden_size * opts.dtype_bytes / seq_div
                act = tokens * (in_flight * s.layers_per_stage * stored + self._act_per_token(s))
            else:
                act = tokens * in_flight * s.layers_per_stage * self._act_per_token(s)
            terms["activations_bytes"] = act
            terms["logits_bytes"] = self._logits_bytes(s, tokens) if k == lay.pp - 1 else 0.0
            per_stage.append(terms)
        mem = self._worst_stage(per_stage)
        resident = mem["weights_bytes"] + mem["grads_bytes"] + mem["optimizer_states_bytes"]
        return time_terms, mem, resident

    def _inference(self, call: Call, s: _Shape) -> tuple[dict[str, float], dict[str, float], float]:
        lay, opts = s.layout, self.options
        tokens = num_sequences(call) / lay.dp / lay.micro_batches * call.seq_len
        ctx = shapes.causal_ctx(call.seq_len)
        stages = [self._forward_pass(s, k, tokens, ctx, tokens, 1.0) for k in range(lay.pp)]
        compute, tp_comm, p2p = max(stages, key=sum)
        m = lay.micro_batches
        time_terms = {"compute_s": m * compute, "tp_comm_s": m * tp_comm, "pp_p2p_s": m * p2p,
                      "pipeline_bubble_s": (lay.pp - 1) * (compute + tp_comm + p2p)}
        time_terms.update(self._overheads(call, lay))
        runs = runs_per_iteration(call)  # a pool scorer works every `every` iterations (cached in between)
        time_terms = {k: runs * v for k, v in time_terms.items()}
        per_stage = []
        for k in range(lay.pp):
            per_stage.append({
                "weights_bytes": s.stage_params[k] * opts.dtype_bytes,
                "activations_bytes": tokens * self._act_per_token(s),
                "logits_bytes": self._logits_bytes(s, tokens) if k == lay.pp - 1 else 0.0,
            })
        mem = self._worst_stage(per_stage)
        return time_terms, mem, mem["weights_bytes"]

    def _generate(self, call: Call, s: _Shape) -> tuple[dict[str, float], dict[str, float], float]:
        lay, opts, hw = s.layout, self.options, self.hardware
        n_dp = math.ceil(num_sequences(call) / lay.dp)
        m = lay.micro_batches
        b = n_dp / m
        prompt = call.prompt_len
        max_new = call.max_new_tokens or getattr(call.args, "max_new_tokens", 0) or call.response_len
        expected = call.response_len or max_new
        if call.response_lengths is not None:  # a static batch decodes until its longest response ends
            expected = call.response_lengths.expected_max(b)
        prefill = [self._forward_pass(s, k, b * max(prompt, 1), shapes.causal_ctx(prompt), b, 1.0, sampling=True)
                   for k in range(lay.pp)]
        sampling = hw.decode_step_overhead_s + b * hw.decode_sample_overhead_s  # per sampled token, per micro-batch
        t_prefill = (m + lay.pp - 1) * max(sum(x) for x in prefill) + (m * sampling if expected > 0 else 0.0)
        ctx = prompt + expected / 2
        kv_layer = shapes.kv_cache_bytes_per_token(s.arch, opts.dtype_bytes) / s.arch.num_layers / lay.tp
        step_stage = []
        for k in range(lay.pp):
            compute, tp_comm, p2p = self._forward_pass(s, k, b, ctx, b, 1.0, sampling=True, decode=True)
            read = s.stage_params[k] * opts.dtype_bytes + s.layers_per_stage * b * ctx * kv_layer
            overhead = s.layers_per_stage * hw.layer_overhead_s + hw.micro_batch_overhead_s
            last = sampling if k == lay.pp - 1 else 0.0
            reading = hw.read_time(read) / self._corun(s, read, memory=True)
            step_stage.append(max(compute - overhead, reading) + overhead + last + tp_comm + p2p)
        # n new tokens take n forward passes and n samplings: the prefill samples the first,
        # n - 1 decode steps the rest
        t_decode = max(expected - 1, 0) * max(m, lay.pp) * max(step_stage)
        time_terms = {"prefill_s": t_prefill, "decode_s": t_decode}
        time_terms.update(self._overheads(call, lay))
        runs = runs_per_iteration(call)  # a pool generation works every `every` iterations (cached in between)
        time_terms = {k: runs * v for k, v in time_terms.items()}
        per_stage = []
        for k in range(lay.pp):
            per_stage.append({
                "weights_bytes": s.stage_params[k] * opts.dtype_bytes,
                "kv_cache_bytes": n_dp * (prompt + max_new) * s.layers_per_stage * kv_layer,
                "activations_bytes": b * max(prompt, 1) * self._act_per_token(s),
                "logits_bytes": self._logits_bytes(s, n_dp, 4.0) if k == lay.pp - 1 else 0.0,
            })
        mem = self._worst_stage(per_stage)
        return time_terms, mem, mem["weights_bytes"]


def _epochs(args: Any) -> int:
    return int(getattr(args, "ppo_epochs", 1) or 1)


def _mini_batches(args: Any) -> int:
    return int(getattr(args, "mini_batches", 1) or 1)


def mfu(call: Call, model: ModelSpec, estimate: CallEstimate, layout: Layout, hardware: HardwareSpec,
        dtype: str = "bf16") -> float:
    """Model FLOPs utilisation of a train call's estimate (PaLM convention, see shapes.model_flops_per_token)."""
    if model.arch is None or call.kind != CallKind.TRAIN:
        raise ValueError(f"mfu needs a train call on a model with an architecture, got {call.name!r}")
    flops = shapes.model_flops_per_token(model.arch, call.seq_len, value_head=model.value_head)
    total = flops * call.num_tokens * _epochs(call.args)
    return total / (estimate.time_s * layout.mesh.size * hardware.peak_flops[dtype])


STREAM_PIECES = 4
"""Pieces the simulator cuts a streaming generate call into (planner.simulator's stream tasks)."""


def stream_fractions(call: Call, layout: Layout, pieces: int = STREAM_PIECES) -> list[float]:
    """Fraction of a generate call's samples finished by the end of each of `pieces` equal
    spans of decode steps (the last is 1): the CDF of the call's response lengths at j/pieces
    of the expected longest response of a static batch (ceil(sequences / dp) / micro-batches
    samples); without a distribution every sample ends with the batch."""
    dist = call.response_lengths
    if dist is None:
        return [0.0] * (pieces - 1) + [1.0]
    # a static batch: one micro-batch of a data-parallel rank, as `_generate` prices it
    longest = dist.expected_max(math.ceil(num_sequences(call) / layout.dp) / layout.micro_batches)
    return [dist.finished_by(longest * j / pieces) for j in range(1, pieces)] + [1.0]
