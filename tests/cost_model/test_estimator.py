"""AnalyticCostModel: hand-worked terms, feasibility, generation, and published figures."""

from __future__ import annotations

import dataclasses
import math

import pytest

from cost_model.estimate_text import format_estimate
from cost_model.estimator import AnalyticCostModel, mfu
from cost_model.hardware import GiB, HardwareSpec, preset
from graph.catalog import GenerateArgs, PPOActorArgs
from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.placement.params import param_manifest
from graph.spec import Call, CallKind, ModelArch, ModelSpec

TINY = ModelArch(family="llama", num_layers=2, hidden_size=64, ffn_hidden_size=128, num_heads=8,
                 num_kv_heads=4, vocab_size=128)  # 90432 parameters (see test_shapes)
ROUND = HardwareSpec(name="round", devices_per_node=8, peak_flops={"bf16": 1e12}, memory_bytes=1 * GiB,
                     reserved_bytes=0, memory_bandwidth=1e9, matmul_efficiency=1.0, memory_efficiency=1.0,
                     layer_overhead_s=0.0)
CLUSTER = Cluster(num_nodes=1, devices_per_node=8)
ACTOR = ModelSpec(role="actor", arch=TINY, trainable=True)
LLAMA7B = ModelArch(family="llama", num_layers=32, hidden_size=4096, ffn_hidden_size=11008, num_heads=32,
                    num_kv_heads=32, vocab_size=32000)
LLAMA70B = ModelArch(family="llama", num_layers=80, hidden_size=8192, ffn_hidden_size=28672, num_heads=64,
                     num_kv_heads=8, vocab_size=32000)


def _layout(dp: int, tp: int, pp: int, mb: int = 1, start: int = 0) -> Layout:
    return Layout(mesh=DeviceMesh.span(start, dp * tp * pp), dp=dp, tp=tp, pp=pp, micro_batches=mb)


def _train(batch: int, seq: int, args: object = None) -> Call:
    return Call(name="train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor", args=args,
                batch_size=batch, prompt_len=0, response_len=seq)


def test_train_memory_terms_by_hand() -> None:
    est = AnalyticCostModel(ROUND, CLUSTER).call_estimate(_train(4, 16), ACTOR, _layout(2, 1, 1))
    b = est.breakdown
    assert b["weights_bytes"] == 2 * 90432  # bf16
    assert b["grads_bytes"] == 2 * 90432  # bf16 grad buffer
    assert b["optimizer_states_bytes"] == 12 * 90432 / 2  # fp32 master + m + v, sharded over dp=2
    # 4 sequences / dp 2 = 2 per micro-batch, 32 tokens; 2 layers * 1664 bytes per token
    assert b["activations_bytes"] == 32 * 2 * 1664
    assert b["logits_bytes"] == 32 * 128 * 6  # bf16 logits + fp32 copy
    assert est.peak_bytes == pytest.approx(sum(v for k, v in b.items() if k.endswith("_bytes")))
    assert est.resident_bytes == 2 * 90432 + 2 * 90432 + 6 * 90432
    # without the distributed optimizer every replica keeps all 12 bytes/param
    plain = AnalyticCostModel(ROUND, CLUSTER, distributed_optimizer=False)
    assert plain.call_estimate(_train(4, 16), ACTOR, _layout(2, 1, 1)).breakdown["optimizer_states_bytes"] == 12 * 90432


def test_train_time_terms_by_hand() -> None:
    est = AnalyticCostModel(ROUND, CLUSTER).call_estimate(_train(4, 16), ACTOR, _layout(1, 1, 1))
    # 64 tokens; per layer per token 73728 + 256 * 8.5 = 75904 FLOPs; 2 layers; head 2*64*8192
    forward = 64 * 2 * 75904 + 2 * 64 * 8192
    assert est.breakdown["compute_s"] == pytest.approx(3 * forward / 1e12)
    # Adam: 32 bytes of traffic per parameter at 1 GB/s
    assert est.breakdown["optimizer_s"] == pytest.approx(90432 * 32 / 1e9)
    assert est.breakdown["dp_grad_sync_s"] == 0 and est.breakdown["pipeline_bubble_s"] == 0
    # ppo_epochs x mini_batches optimizer steps: 2 epochs double everything
    twice = AnalyticCostModel(ROUND, CLUSTER).call_estimate(
        _train(4, 16, PPOActorArgs(ppo_epochs=2)), ACTOR, _layout(1, 1, 1))
    assert twice.time_s == pytest.approx(2 * est.time_s)
    # a measured compute speed at the model's layer size (hidden 64) divides the FLOPs' time, layers and head
    fast = AnalyticCostModel(ROUND.replace(compute_speed_by_hidden={64: 2.5}), CLUSTER).call_estimate(
        _train(4, 16), ACTOR, _layout(1, 1, 1))
    assert fast.breakdown["compute_s"] == pytest.approx(3 * forward / 1e12 / 2.5)
    assert fast.breakdown["optimizer_s"] == est.breakdown["optimizer_s"]
    # a decode step's passes take the decode speed instead (generation: prefill at 2.5x, decode at 0.5x)
    gen = Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate", batch_size=4,
               prompt_len=8, response_len=8)
    fast_reads = ROUND.replace(memory_bandwidth=1e18)  # decode steps compute-bound, no overheads: times scale
    base = AnalyticCostModel(fast_reads, CLUSTER).call_estimate(gen, ACTOR, _layout(1, 1, 1)).breakdown
    both = AnalyticCostModel(fast_reads.replace(compute_speed_by_hidden={64: 2.5}, decode_speed_by_hidden={64: 0.5}),
                             CLUSTER).call_estimate(gen, ACTOR, _layout(1, 1, 1)).breakdown
    assert both["prefill_s"] == pytest.approx(base["prefill_s"] / 2.5)
    assert both["decode_s"] == pytest.approx(base["decode_s"] / 0.5)


def test_pipeline_bubble_and_dp_sync() -> None:
    hw = preset("a100-80g")
    cm = AnalyticCostModel(hw, CLUSTER)
    est = cm.call_estimate(_train(64, 512), ACTOR, _layout(1, 1, 2, mb=4))
    per_mb = (est.breakdown["compute_s"] + est.breakdown["tp_comm_s"] + est.breakdown["pp_p2p_s"]) / 4
    assert est.breakdown["pipeline_bubble_s"] == pytest.approx(1 * per_mb)  # (pp - 1) stage times
    est = cm.call_estimate(_train(64, 512), ACTOR, _layout(4, 1, 1))
    # reduce-scatter of bf16 grads + all-gather of bf16 params over 4 ranks: 2 * 3/4 * 2 bytes/param
    wire = 2 * 0.75 * 2 * 90432 / hw.link_bandwidth(False)
    assert est.breakdown["dp_grad_sync_s"] == pytest.approx(wire + 2 * 3 * hw.intra_node_latency)


def test_generation_terms_by_hand() -> None:
    gen = Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate",
               args=GenerateArgs(max_new_tokens=8, num_samples=2), batch_size=2, prompt_len=8,
               response_len=4, max_new_tokens=8)
    est = AnalyticCostModel(ROUND, CLUSTER).call_estimate(gen, ACTOR, _layout(1, 1, 1))
    # 2 prompts x 2 samples = 4 sequences; decode reads bf16 weights (180864 bytes) and the KV cache
    # of 4 sequences x mean context 8 + 4/2 = 10 tokens x 2 layers x 128 bytes = 10240 bytes per step;
    # 4 new tokens take the prefill and 3 decode steps
    assert est.breakdown["decode_s"] == pytest.approx(3 * (180864 + 10240) / 1e9)
    # prefill: 32 prompt tokens, ctx 4.5: 2 layers x 32 x (73728 + 1152) + head for 4 last tokens
    assert est.breakdown["prefill_s"] == pytest.approx((2 * 32 * 74880 + 2 * 4 * 8192) / 1e12)
    # the KV cache is sized by max_new_tokens: 4 sequences x (8 + 8) tokens x 256 bytes
    assert est.breakdown["kv_cache_bytes"] == 4 * 16 * 256
    assert est.resident_bytes == 180864


def test_generation_is_memory_bound_and_uses_expected_length() -> None:
    cm = AnalyticCostModel(preset("a100-80g"), CLUSTER)
    model = ModelSpec(role="actor", arch=LLAMA7B)

    def gen(batch: int, expected: int) -> Call:
        return Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate",
                    args=GenerateArgs(max_new_tokens=512), batch_size=batch, prompt_len=128,
                    response_len=expected, max_new_tokens=512)

    one = cm.call_estimate(gen(8, 256), model, _layout(1, 1, 1))
    two = cm.call_estimate(gen(16, 256), model, _layout(1, 1, 1))
    # decoding re-reads the weights every step: twice the batch costs far less than twice the time
    assert two.breakdown["decode_s"] < 1.2 * one.breakdown["decode_s"]
    short = cm.call_estimate(gen(8, 128), model, _layout(1, 1, 1))
    assert short.breakdown["decode_s"] < 0.6 * one.breakdown["decode_s"]
    assert short.breakdown["kv_cache_bytes"] == one.breakdown["kv_cache_bytes"]


def test_rule_reward_is_free_and_structural_infeasibility() -> None:
    cm = AnalyticCostModel(ROUND, CLUSTER)
    rule = ModelSpec(role="reward", arch=None, rule="math")
    call = Call(name="rew", model="reward", kind=CallKind.INFERENCE, interface="rule_reward",
                batch_size=4, prompt_len=8, response_len=8)
    est = cm.call_estimate(call, rule, _layout(1, 1, 1))
    assert est.time_s == 0 and est.peak_bytes == 0 and est.resident_bytes == 0 and est.feasible
    bad = cm.call_estimate(_train(4, 16), ACTOR, _layout(1, 8, 1))
    assert not bad.feasible and "num_kv_heads=4 is not divisible by tp=8" in bad.reason
    bad = cm.call_estimate(_train(4, 16), ACTOR, _layout(4, 1, 1, mb=2))
    assert not bad.feasible and "cannot fill dp=4 x micro_batches=2" in bad.reason
    with pytest.raises(ValueError, match="prompt_len"):
        cm.call_estimate(_train(4, 0), ACTOR, _layout(1, 1, 1))


def test_infeasible_verdict_names_the_overflowing_term() -> None:
    hw = preset("a100-80g")
    cm = AnalyticCostModel(hw, Cluster(num_nodes=1, devices_per_node=8))
    model = ModelSpec(role="actor", arch=LLAMA70B, trainable=True)
    est = cm.call_estimate(_train(8, 1024), model, _layout(1, 8, 1))
    assert not est.feasible
    assert est.reason.startswith("optimizer states ")  # 12 bytes x 69e9 / 8 ranks ~ 96 GiB
    over = (est.peak_bytes - hw.usable_memory_bytes) / GiB
    assert f"by {over:.1f} GiB" in est.reason and "(largest: optimizer states)" in est.reason
    text = format_estimate(est, "train 70B")
    assert "INFEASIBLE" in text and "optimizer_states" in text


def test_70b_param_and_adam_memory_matches_zero_paper() -> None:
    # ZeRO (Rajbhandari et al., SC'20, section 3.1): mixed-precision Adam keeps 16 bytes per
    # parameter (2 fp16 params + 2 fp16 grads + 12 fp32 master/momentum/variance), e.g. 120 GB
    # for 7.5B parameters; for a 70B model, 16 x 70e9 = 1.12 TB. Summed over all devices of an
    # layout without DP (TP8: the 8 devices hold disjoint shards) the resident memory must agree
    # to within the replicated norms (< 1%); it does not fit, and the verdict says so.
    cm = AnalyticCostModel(preset("h200"), Cluster(num_nodes=1, devices_per_node=8))
    model = ModelSpec(role="actor", arch=LLAMA70B, trainable=True)
    est = cm.call_estimate(_train(64, 1024), model, _layout(1, 8, 1))
    assert not est.feasible
    total = est.resident_bytes * 8
    assert LLAMA70B.num_params() == pytest.approx(69.0e9, rel=0.01)
    assert total == pytest.approx(16 * LLAMA70B.num_params(), rel=0.01)
    assert 1.09e12 < total < 1.13e12


def test_llama7b_mfu_on_8_a100_matches_public_reports() -> None:
    # MosaicML llm-foundry, scripts/train/benchmarking/README.md: a 7B model at seq 2048 on
    # 8x A100-80GB trains at 64% MFU (no activation checkpointing) and on 8x A100-40GB at 51%
    # (with checkpointing); Megatron-LM (Narayanan et al., SC'21) reports 44-52% of peak on A100s.
    # The best layout the estimator finds must come within 15% of the 64% (the same goal as the
    # CPU validation's; the A100 preset is fitted to Megatron's and this run's MFUs together).
    cm = AnalyticCostModel(preset("a100-80g"), Cluster(num_nodes=1, devices_per_node=8))
    model = ModelSpec(role="actor", arch=LLAMA7B, trainable=True)
    call = _train(256, 2048)
    best = 0.0
    for dp, tp, pp in [(8, 1, 1), (4, 2, 1), (2, 4, 1), (2, 2, 2), (1, 8, 1)]:
        for seqs_per_mb in (1, 2):
            lay = _layout(dp, tp, pp, mb=256 // dp // seqs_per_mb)
            est = cm.call_estimate(call, model, lay)
            if est.feasible:
                best = max(best, mfu(call, model, est, lay, cm.hardware))
    assert abs(best / 0.64 - 1) <= 0.15, best
    assert not math.isnan(best)


def test_call_micro_batches_is_a_lower_bound() -> None:
    cm = AnalyticCostModel(preset("a100-80g"), CLUSTER)
    call = Call(name="train", model="actor", kind=CallKind.TRAIN, interface="sft", batch_size=16,
                response_len=64, micro_batches=4)
    low = cm.call_estimate(call, ACTOR, _layout(1, 1, 2, mb=1))
    assert low == cm.call_estimate(call, ACTOR, _layout(1, 1, 2, mb=4))
    assert low != cm.call_estimate(call, ACTOR, _layout(1, 1, 2, mb=8))


def test_recompute_trades_compute_for_activations() -> None:
    call = _train(16, 256)
    base = AnalyticCostModel(ROUND, CLUSTER).call_estimate(call, ACTOR, _layout(1, 1, 1, mb=4))
    rec = AnalyticCostModel(ROUND, CLUSTER, recompute=True).call_estimate(call, ACTOR, _layout(1, 1, 1, mb=4))
    assert rec.breakdown["compute_s"] == pytest.approx(base.breakdown["compute_s"] * 4 / 3)
    # 4 seqs x 256 tokens per micro-batch: 2 layers' inputs (64 x 2 bytes) + one layer's full activations
    assert rec.breakdown["activations_bytes"] == 1024 * (2 * 128 + 1664)
    assert base.breakdown["activations_bytes"] == 1024 * 2 * 1664


def test_tp_across_nodes_pays_the_slower_link() -> None:
    call = _train(16, 256)
    inside = AnalyticCostModel(preset("a100-80g"), Cluster(num_nodes=2, devices_per_node=4))
    across = AnalyticCostModel(preset("a100-80g"), Cluster(num_nodes=4, devices_per_node=2))
    a = inside.call_estimate(call, ACTOR, _layout(1, 4, 1)).breakdown["tp_comm_s"]
    b = across.call_estimate(call, ACTOR, _layout(1, 4, 1)).breakdown["tp_comm_s"]
    assert b > 4 * a > 0  # the vocabulary-parallel loss all-reduces are latency-bound: 4x, not 10x


def test_realloc_estimate_pads_the_vocabulary_and_is_free_in_place() -> None:
    gpt2 = ModelArch(family="gpt2", num_layers=2, hidden_size=64, ffn_hidden_size=256, num_heads=8,
                     num_kv_heads=8, vocab_size=50257, tied_embeddings=True)
    cm = AnalyticCostModel(preset("a100-80g"), CLUSTER)
    model = ModelSpec(role="actor", arch=gpt2)
    assert cm.realloc_estimate(model, _layout(1, 2, 1), _layout(1, 2, 1)).bytes_total == 0
    move = cm.realloc_estimate(model, _layout(1, 2, 1), _layout(1, 4, 1, start=4))
    # disjoint meshes: the whole model moves once, vocabulary padded to 512 * 99 = 50688 rows, and
    # each of the 4 destination TP ranks receives its own copy of the replicated parameters
    replicated = sum(p.numel for p in param_manifest(gpt2) if p.tp_dim is None)
    whole = gpt2.num_params() + (50688 - 50257) * 64 + 3 * replicated
    assert move.bytes_total == pytest.approx(2 * whole)


OVERHEADS = ROUND.replace(micro_batch_overhead_s=0.01, train_step_overhead_s=0.02, optimizer_param_time_s=1e-6,
                          decode_step_overhead_s=0.003, decode_sample_overhead_s=0.001,
                          call_overhead_s={"train": 0.1, "inference": 0.05, "generate": 0.2},
                          call_dp_overhead_s={"train": 0.01}, call_seq_overhead_s={"inference": 0.001})


def test_fixed_overhead_terms_by_hand() -> None:
    plain, over = AnalyticCostModel(ROUND, CLUSTER), AnalyticCostModel(OVERHEADS, CLUSTER)
    a, b = (m.call_estimate(_train(4, 16), ACTOR, _layout(2, 1, 1)).breakdown for m in (plain, over))
    assert b["compute_s"] - a["compute_s"] == pytest.approx(3 * 0.01)  # one micro-batch, 3 passes
    assert b["step_overhead_s"] == pytest.approx(0.02) and "step_overhead_s" not in a
    assert b["call_overhead_s"] == pytest.approx(0.1 + 1 * 0.01)  # dp=2: one extra rank
    assert b["optimizer_s"] == pytest.approx(90432 / 2 * 1e-6)  # distributed optimizer: half the params
    inf = Call(name="lp", model="actor", kind=CallKind.INFERENCE, interface="logprobs", batch_size=8,
               prompt_len=8, response_len=8)
    a, b = (m.call_estimate(inf, ACTOR, _layout(1, 1, 1, mb=2)).breakdown for m in (plain, over))
    assert b["compute_s"] - a["compute_s"] == pytest.approx(2 * 0.01)
    assert b["call_overhead_s"] == pytest.approx(0.05 + 8 * 0.001)  # 8 sequences on the one rank
    gen = Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate",
               args=GenerateArgs(max_new_tokens=8, num_samples=2), batch_size=2, prompt_len=8,
               response_len=4, max_new_tokens=8)
    a, b = (m.call_estimate(gen, ACTOR, _layout(1, 1, 1)).breakdown for m in (plain, over))
    # 3 decode steps of 4 sequences: micro-batch 0.01 + step 0.003 + 4 x 0.001 each; one prefill
    # pass, which samples the first token: 0.01 + 0.003 + 4 x 0.001
    assert b["decode_s"] - a["decode_s"] == pytest.approx(3 * (0.01 + 0.003 + 4 * 0.001))
    assert b["prefill_s"] - a["prefill_s"] == pytest.approx(0.01 + 0.003 + 4 * 0.001)
    assert b["call_overhead_s"] == pytest.approx(0.2)
    # the cost model tells the simulator how many cores the devices share
    assert over.host_cores == 0.0 and AnalyticCostModel(ROUND.replace(host_cores=2.0), CLUSTER).host_cores == 2.0


def test_bad_overhead_fields_are_named() -> None:
    with pytest.raises(ValueError, match=r"call_overhead_s\['trian'\]"):
        ROUND.replace(call_overhead_s={"trian": 0.1})
    with pytest.raises(ValueError, match="host_cores must be >= 0"):
        ROUND.replace(host_cores=-1.0)


def test_moves_pay_their_fixed_overheads() -> None:
    hw = ROUND.replace(data_overhead_s=0.01, realloc_overhead_s=0.02, realloc_peer_overhead_s=0.005)
    plain, over = AnalyticCostModel(ROUND, CLUSTER), AnalyticCostModel(hw, CLUSTER)
    gen = Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate", outputs=("seq",),
               batch_size=4, prompt_len=8, response_len=8, max_new_tokens=8)
    inf = Call(name="lp", model="ref", kind=CallKind.INFERENCE, interface="logprobs", inputs=("seq",),
               batch_size=4, prompt_len=8, response_len=8)
    one = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    three = Layout(mesh=DeviceMesh.span(1, 3), dp=3, tp=1, pp=1)
    # one sender serialises the batch three times, one send after another
    diff = over.data_estimate(gen, inf, "seq", one, three).time_s - plain.data_estimate(gen, inf, "seq", one,
                                                                                        three).time_s
    assert diff == pytest.approx(3 * 0.01)
    two, other_two = _layout(2, 1, 1), _layout(2, 1, 1, start=2)
    diff = (over.data_estimate(gen, inf, "seq", two, other_two).time_s
            - plain.data_estimate(gen, inf, "seq", two, other_two).time_s)
    assert diff == pytest.approx(0.01)  # two senders, one send each
    # a reallocation pays its overhead even when every copy is local (dp2 -> tp2 on the same ranks)
    est = over.realloc_estimate(ACTOR, _layout(2, 1, 1), _layout(1, 2, 1))
    assert est.bytes_total == 0 and est.time_s == pytest.approx(0.02)
    # tp2 on [0, 1] -> one replica on [2]: rank 2 gathers from both: 2 peers; the link part as without
    base = plain.realloc_estimate(ACTOR, _layout(1, 2, 1), _layout(1, 1, 1, start=2)).time_s
    est = over.realloc_estimate(ACTOR, _layout(1, 2, 1), _layout(1, 1, 1, start=2))
    assert est.time_s - base == pytest.approx(0.02 + 2 * 0.005)


def test_a_rule_reward_costs_its_host_work_per_sequence() -> None:
    from graph.spec import ModelSpec as Spec

    hw = preset("cpu-gloo").replace(rule_call_overhead_s=1e-3, rule_seq_overhead_s=5e-5)
    call = Call(name="rew", model="reward", kind=CallKind.INFERENCE, interface="rule_reward", batch_size=128,
                prompt_len=8, response_len=2)
    est = AnalyticCostModel(hw, CLUSTER).call_estimate(call, Spec(role="reward", arch=None, rule="r"),
                                                      _layout(1, 1, 1))
    assert est.time_s == pytest.approx(1e-3 + 128 * 5e-5) and est.peak_bytes == 0.0


def test_ptx_and_selective_rehearsal_are_priced_as_extra_training_sequences() -> None:
    """compute is linear in the tokens of a step: 4 rollouts of 8 + 8 tokens, plus 4 ptx
    sequences, plus 2 clusters x 1 kept rollout rehearsed, plus the selection's forward of
    the 4 prompts every 2 iterations (8 of 16 tokens, 1 of 3 passes): 4 + 2 + 4/2 * 8/16 / 3."""
    model = AnalyticCostModel(ROUND, CLUSTER)

    def compute(args: object, inputs: tuple[str, ...] = ()) -> float:
        call = Call(name="train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor", args=args,
                    batch_size=4, prompt_len=8, response_len=8, inputs=inputs)
        return model.call_estimate(call, ACTOR, _layout(1, 1, 1)).breakdown["compute_s"]

    base = compute(PPOActorArgs())
    sr = PPOActorArgs(rehearsal_coef=0.1, rehearsal_every=2, rehearsal_clusters=2, rehearsal_per_cluster=1)
    assert compute(sr) == pytest.approx(base * (4 + 2 + 2 * 0.5 / 3) / 4)
    ptx = ("seq", "logp", "ref", "score", "values", "ptx")
    assert compute(PPOActorArgs(ptx_coef=0.5), ptx) == pytest.approx(base * 2)


def test_in_pass_tp_collectives_pay_the_fitted_extra_by_hand() -> None:
    """At tp > 1 every in-pass collective the estimator counts pays tp_collective_extra: two per
    layer per forward-equivalent, the sampling all-gather per decoded token, the log-prob
    all-reduces of the head; tp = 1 and GPU presets pay nothing."""
    extra = ROUND.replace(tp_collective_overhead_s=1e-3, tp_step_overhead_s=2e-4)
    per = 1e-3 + 2 * 2e-4  # tp 2: an all-reduce has 2 ring steps
    gen = Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate",
               args=GenerateArgs(max_new_tokens=4), batch_size=4, prompt_len=8, response_len=4, max_new_tokens=4)
    base = AnalyticCostModel(ROUND, CLUSTER).call_estimate(gen, ACTOR, _layout(1, 2, 1)).breakdown
    more = AnalyticCostModel(extra, CLUSTER).call_estimate(gen, ACTOR, _layout(1, 2, 1)).breakdown
    # prefill: 2 layers x 2 + the all-gather = 5 collectives; 3 decode steps of 5 each
    assert more["prefill_s"] - base["prefill_s"] == pytest.approx(5 * per)
    assert more["decode_s"] - base["decode_s"] == pytest.approx(3 * 5 * per)
    inf = Call(name="lp", model="ref", kind=CallKind.INFERENCE, interface="logprobs", batch_size=4,
               prompt_len=8, response_len=8)
    base = AnalyticCostModel(ROUND, CLUSTER).call_estimate(inf, ACTOR, _layout(1, 2, 1)).breakdown
    more = AnalyticCostModel(extra, CLUSTER).call_estimate(inf, ACTOR, _layout(1, 2, 1)).breakdown
    assert more["tp_comm_s"] - base["tp_comm_s"] == pytest.approx((2 * 2 + 3) * per)  # + the head's 3 all-reduces
    assert AnalyticCostModel(extra, CLUSTER).call_estimate(inf, ACTOR, _layout(2, 1, 1)).breakdown.get(
        "tp_comm_s", 0.0) == 0.0
    assert preset("h100-80g").tp_collective_extra(8) == 0.0


def test_a_data_pool_selection_is_priced_by_the_pool_size() -> None:
    """rehearsal_source=data with a pool of 30 pairs reselected every 5 iterations (2 clusters x
    1 kept): per iteration the actor embeds 30/5 = 6 prompts (8 of 16 tokens: 3 sequences'
    worth) and, ranking by likelihood, forwards the 6 whole pairs: (3 + 6) forward passes of 3
    = 3 sequences; with 4 rollouts and 2 rehearsed: (4 + 2 + 3) / 4 of the plain update. Ranked
    by advantage, the actor only embeds: (4 + 2 + 1) / 4; the reward model's `pool_scores` call
    forwards the 30 pairs once per 5 iterations: the compute of an inference of 6 pairs."""
    from graph.catalog import AdvantageModelArgs, PoolScoresArgs

    model = AnalyticCostModel(ROUND, CLUSTER)

    def compute(args: object) -> float:
        call = Call(name="train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor", args=args,
                    batch_size=4, prompt_len=8, response_len=8)
        return model.call_estimate(call, ACTOR, _layout(1, 1, 1)).breakdown["compute_s"]

    base = compute(PPOActorArgs())
    pool = dict(rehearsal_coef=0.1, rehearsal_every=5, rehearsal_clusters=2, rehearsal_per_cluster=1,
                rehearsal_source="data", rehearsal_path="pool.jsonl", rehearsal_pool_size=30)
    assert compute(PPOActorArgs(**pool)) == pytest.approx(base * (4 + 2 + 3) / 4)
    assert compute(PPOActorArgs(**pool, rehearsal_rank="advantage")) == pytest.approx(base * (4 + 2 + 1) / 4)
    # the pool's size unknown (0: a call built by hand): the batch, as for rollouts
    unknown = {**pool, "rehearsal_pool_size": 0}
    assert compute(PPOActorArgs(**unknown)) == pytest.approx(base * (4 + 2 + (4 / 5 * 0.5 + 4 / 5) / 3) / 4)

    reward = ModelSpec(role="reward", arch=TINY, value_head=True)

    def scoring(interface: str, args: object, batch: int) -> float:
        call = Call(name="score", model="reward", kind=CallKind.INFERENCE, interface=interface, args=args,
                    batch_size=batch, prompt_len=8, response_len=8)
        return model.call_estimate(call, reward, _layout(1, 1, 1)).breakdown["compute_s"]

    assert scoring("pool_scores", PoolScoresArgs(every=5), 30) == pytest.approx(
        scoring("advantage_model", AdvantageModelArgs(), 6))
    assert scoring("pool_scores", PoolScoresArgs(every=1), 30) == pytest.approx(
        scoring("advantage_model", AdvantageModelArgs(), 30))


def test_a_pool_scorer_costs_its_whole_call_once_per_period() -> None:
    """On hardware with call overheads too: scoring 30 pairs every 5 iterations costs a fifth of
    an advantage_model call on the 30 pairs, overhead included (in between it returns cached scores)."""
    from graph.catalog import AdvantageModelArgs, PoolScoresArgs

    model = AnalyticCostModel(preset("cpu-gloo").replace(call_overhead_s={"inference": 2e-3}), CLUSTER)
    reward = ModelSpec(role="reward", arch=TINY, value_head=True)

    def time(interface: str, args: object) -> float:
        call = Call(name="score", model="reward", kind=CallKind.INFERENCE, interface=interface, args=args,
                    batch_size=30, prompt_len=8, response_len=8)
        return model.call_estimate(call, reward, _layout(1, 1, 1)).time_s

    whole = time("advantage_model", AdvantageModelArgs())
    plain = AnalyticCostModel(preset("cpu-gloo"), CLUSTER).call_estimate(
        Call(name="s", model="reward", kind=CallKind.INFERENCE, interface="advantage_model", batch_size=30,
             prompt_len=8, response_len=8), reward, _layout(1, 1, 1)).time_s
    assert whole == pytest.approx(plain + 2e-3)
    assert time("pool_scores", PoolScoresArgs(every=5)) == pytest.approx(whole / 5)


def test_the_pool_generation_is_priced_once_per_period_by_hand() -> None:
    """rehearsal_rank=advantage_policy: `pool_generate` answers 4 pool prompts (8 tokens, 4 new)
    every 2 iterations. Per iteration it costs half the generation of test_generation_terms_by_hand
    (4 sequences there too): decode 3 steps x (180864 weight bytes + 4 x 10 x 2 x 128 KV bytes) /
    1e9 B/s, prefill (2 layers x 32 tokens x 74880 + 4 last tokens' head 2 x 8192) / 1e12, both
    halved; its KV cache is held in full while it runs. The actor reading the responses trains on
    its kept set only: the same compute as rehearsal_rank=advantage."""
    from graph.catalog import PoolGenerateArgs

    model = AnalyticCostModel(ROUND, CLUSTER)
    gen = Call(name="rehearsal_gen", model="actor", kind=CallKind.GENERATE, interface="pool_generate",
               args=PoolGenerateArgs(max_new_tokens=8, every=2), batch_size=4, prompt_len=8, response_len=4,
               max_new_tokens=8)
    est = model.call_estimate(gen, ACTOR, _layout(1, 1, 1))
    assert est.breakdown["decode_s"] == pytest.approx(3 * (180864 + 4 * 10 * 2 * 128) / 1e9 / 2)
    assert est.breakdown["prefill_s"] == pytest.approx((2 * 32 * 74880 + 2 * 4 * 8192) / 1e12 / 2)
    assert est.breakdown["kv_cache_bytes"] == 4 * 16 * 256
    every_time = model.call_estimate(dataclasses.replace(gen, args=PoolGenerateArgs(max_new_tokens=8, every=1)),
                                     ACTOR, _layout(1, 1, 1))
    assert est.time_s == pytest.approx(every_time.time_s / 2)
    # on hardware with call overheads, the overhead is paid once per period too
    cpu = AnalyticCostModel(preset("cpu-gloo").replace(call_overhead_s={"generate": 4e-3}), CLUSTER)
    assert cpu.call_estimate(gen, ACTOR, _layout(1, 1, 1)).time_s == pytest.approx(
        cpu.call_estimate(dataclasses.replace(gen, interface="generate", args=GenerateArgs(max_new_tokens=8)),
                          ACTOR, _layout(1, 1, 1)).time_s / 2)

    def compute(rank: str, inputs: tuple[str, ...]) -> float:
        args = PPOActorArgs(rehearsal_coef=0.1, rehearsal_every=5, rehearsal_clusters=2, rehearsal_per_cluster=1,
                            rehearsal_source="data", rehearsal_path="pool.jsonl", rehearsal_pool_size=30,
                            rehearsal_rank=rank)
        call = Call(name="train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor", args=args,
                    inputs=("seq", "lp", "ref", "rewards", "values", *inputs), batch_size=4, prompt_len=8,
                    response_len=8)
        return model.call_estimate(call, ACTOR, _layout(1, 1, 1)).breakdown["compute_s"]

    assert compute("advantage_policy", ("rehearsal_scores", "rehearsal_responses")) == pytest.approx(
        compute("advantage", ("rehearsal_scores",)))


def test_workers_of_one_node_computing_at_once_pay_the_corun_speed_by_hand() -> None:
    # co-run measured on 2 workers: compute 0.8, decode 0.5, memory 0.25 of alone; no cache
    # recorded, so every size shares (a cache is tested below)
    hw = ROUND.replace(corun_workers=2, corun_speed_by_hidden={64: 0.8}, corun_decode_speed_by_hidden={64: 0.5},
                       corun_memory_speed=0.25)
    plain, shared = AnalyticCostModel(ROUND, CLUSTER), AnalyticCostModel(hw, CLUSTER)
    a, b = (m.call_estimate(_train(4, 16), ACTOR, _layout(2, 1, 1)).breakdown for m in (plain, shared))
    assert b["compute_s"] == pytest.approx(a["compute_s"] / 0.8)
    assert b["optimizer_s"] == pytest.approx(a["optimizer_s"] / 0.25)  # a stream over the optimizer states
    assert b["dp_grad_sync_s"] == pytest.approx(a["dp_grad_sync_s"])  # collectives are measured co-running
    # one worker alone computes at its own speed
    one = [m.call_estimate(_train(4, 16), ACTOR, _layout(1, 1, 1)).breakdown for m in (plain, shared)]
    assert one[1] == pytest.approx(one[0])
    # workers on different nodes do not share: dp 2 across two nodes of one device each
    apart = Cluster(num_nodes=2, devices_per_node=1)
    c, d = (AnalyticCostModel(h, apart).call_estimate(_train(4, 16), ACTOR, _layout(2, 1, 1)).breakdown
            for h in (ROUND.replace(devices_per_node=1), hw.replace(devices_per_node=1)))
    assert d["compute_s"] == pytest.approx(c["compute_s"])
    # generation: the prefill at the compute co-run speed, decode steps at the decode one (compute-bound)
    gen = Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate", batch_size=4,
               prompt_len=8, response_len=8)
    fast_reads = {"memory_bandwidth": 1e18}
    e, f = (AnalyticCostModel(h.replace(**fast_reads), CLUSTER).call_estimate(gen, ACTOR, _layout(2, 1, 1)).breakdown
            for h in (ROUND, hw))
    assert f["prefill_s"] == pytest.approx(e["prefill_s"] / 0.8)
    assert f["decode_s"] == pytest.approx(e["decode_s"] / 0.5)
    # decode steps bound by their reads: the reads at the memory co-run speed
    slow_reads = {"memory_bandwidth": 1e3, "peak_flops": {"bf16": 1e18}}
    g, h2 = (AnalyticCostModel(h.replace(**slow_reads), CLUSTER).call_estimate(gen, ACTOR, _layout(2, 1, 1))
             .breakdown for h in (ROUND, hw))
    assert h2["decode_s"] == pytest.approx(g["decode_s"] / 0.25, rel=1e-6)
    # two workers whose weights fit in the cache together do not slow each other down
    cached = AnalyticCostModel(hw.replace(cache_bytes=1e9), CLUSTER).call_estimate(_train(4, 16), ACTOR,
                                                                                   _layout(2, 1, 1)).breakdown
    assert cached["compute_s"] == pytest.approx(a["compute_s"])


def test_fp32_parameters_have_fp32_gradients_by_hand() -> None:
    # on CPU the parameters are fp32, so is the gradient buffer (grad_bytes=2 would halve it)
    cpu = AnalyticCostModel(ROUND.replace(peak_flops={"fp32": 1e12}), CLUSTER, dtype="fp32")
    est = cpu.call_estimate(_train(4, 16), ACTOR, _layout(2, 1, 1)).breakdown
    assert est["grads_bytes"] == 4 * 90432 and est["weights_bytes"] == 4 * 90432
    # the dp-2 reduce-scatter moves half the fp32 gradients, the all-gather half the fp32 parameters
    wire = 2 * 0.5 * 4 * 90432 / ROUND.link_bandwidth(False)
    assert est["dp_grad_sync_s"] == pytest.approx(wire + 2 * ROUND.intra_node_latency)
    # bf16 parameters keep the bf16 gradient buffer unless grad_reduce_in_fp32 (grad_bytes=4)
    assert AnalyticCostModel(ROUND, CLUSTER).call_estimate(_train(4, 16), ACTOR, _layout(2, 1, 1)) \
        .breakdown["grads_bytes"] == 2 * 90432
