"""LoRA in the cost model: the adapters in the parameter manifest (shapes and TP cuts worked
by hand), adapters-only refresh plans (bytes = what each destination lacks, counted by
hand), and the estimator's memory and reallocation price of a LoRA model."""

from __future__ import annotations

import pytest

from cost_model.estimator import AnalyticCostModel
from cost_model.hardware import GiB, HardwareSpec
from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.placement.params import VALUE_HEAD, param_manifest, stage_params
from graph.placement.transfer import plan_transfer, transfer_flows
from graph.spec import Call, CallKind, LoraSpec, ModelArch, ModelSpec

LLAMA = ModelArch(family="llama", num_layers=2, hidden_size=64, ffn_hidden_size=128, num_heads=8,
                  num_kv_heads=4, vocab_size=128)
GPT2 = ModelArch(family="gpt2", num_layers=2, hidden_size=32, ffn_hidden_size=128, num_heads=4,
                 num_kv_heads=4, vocab_size=64, qkv_bias=True, tied_embeddings=True)
LORA = LoraSpec(rank=4, alpha=8.0)
H, F, R, QKV = 64, 128, 4, (8 + 2 * 4) * 8  # llama: head_dim 8, fused qkv rows 128
# per layer, by hand: A [r, in] and B [out, r] of qkv (64 -> 128), proj (64 -> 64),
# fc1 (64 -> 2 * 128, gate and up), fc2 (128 -> 64)
PER_LAYER = R * ((H + QKV) + (H + H) + (H + 2 * F) + (F + H))
COLUMN_B_AND_ROW_A = R * (QKV + H + 2 * F + F)  # the TP-cut halves of the adapters


def _layout(dp: int, tp: int, pp: int, start: int = 0) -> Layout:
    return Layout(mesh=DeviceMesh.span(start, dp * tp * pp), dp=dp, tp=tp, pp=pp)


def test_manifest_lists_adapters_cut_like_their_base() -> None:
    adapters = {p.name: p for p in param_manifest(LLAMA, lora=LORA) if p.adapter}
    stem = "decoder.layers.1."
    expect = {  # name: (shape, tp_dim, split)
        "self_attention.linear_qkv.lora_a": ((R, H), None, "replicated"),
        "self_attention.linear_qkv.lora_b": ((QKV, R), 0, "contiguous"),
        "self_attention.linear_proj.lora_a": ((R, H), 1, "contiguous"),
        "self_attention.linear_proj.lora_b": ((H, R), None, "replicated"),
        "mlp.linear_fc1.lora_a": ((R, H), None, "replicated"),
        "mlp.linear_fc1.lora_b": ((2 * F, R), 0, "gate_up"),
        "mlp.linear_fc2.lora_a": ((R, F), 1, "contiguous"),
        "mlp.linear_fc2.lora_b": ((H, R), None, "replicated"),
    }
    for leaf, (shape, dim, split) in expect.items():
        p = adapters[stem + leaf]
        assert (p.shape, p.tp_dim, p.split, p.layer) == (shape, dim, split, 1), leaf
    assert len(adapters) == 2 * len(expect)
    assert sum(p.numel for p in adapters.values()) == 2 * PER_LAYER
    # a TP rank's B rows of fc1 are the rows of W it holds (gate and up halves alike)
    full = {p.name: p for p in param_manifest(LLAMA, lora=LORA)}
    for tp_rank in (0, 1):
        assert (full[stem + "mlp.linear_fc1.lora_b"].shard_runs(2, tp_rank)
                == full[stem + "mlp.linear_fc1.weight"].shard_runs(2, tp_rank))
    gpt2 = {p.name: p for p in param_manifest(GPT2, lora=LORA)}
    assert gpt2[stem + "mlp.linear_fc1.lora_b"].split == "contiguous"  # no gate/up in GPT-2
    assert gpt2[stem + "mlp.linear_fc1.lora_b"].shape == (128, R)


def test_trainable_only_keeps_adapters_and_value_head() -> None:
    names = [p.name for p in param_manifest(LLAMA, value_head=True, lora=LORA, trainable_only=True)]
    assert VALUE_HEAD in names and len(names) == 16 + 1
    assert all(n == VALUE_HEAD or n.endswith((".lora_a", ".lora_b")) for n in names)
    # without LoRA every parameter trains
    assert param_manifest(LLAMA, trainable_only=True) == param_manifest(LLAMA)
    mlp = LoraSpec(rank=2, alpha=2.0, targets=("linear_fc2",))
    only = param_manifest(LLAMA, lora=mlp, trainable_only=True)
    assert [p.name for p in only] == [f"decoder.layers.{i}.mlp.linear_fc2.lora_{x}" for i in (0, 1) for x in "ab"]


def test_stage_params_of_the_trained_part() -> None:
    assert stage_params(LLAMA, value_head=True, tp=1, pp=1, lora=LORA, trainable_only=True) == (
        2 * PER_LAYER + H,)
    # tp=2, pp=2: one layer per stage; the cut halves are split, the rest replicated
    half = PER_LAYER - COLUMN_B_AND_ROW_A / 2
    assert stage_params(LLAMA, value_head=True, tp=2, pp=2, lora=LORA, trainable_only=True) == (half, half + H)


def test_refresh_plan_moves_only_what_each_destination_lacks() -> None:
    # disjoint meshes: each of the 2 destination replicas receives every adapter once
    plan = plan_transfer(LLAMA, _layout(1, 2, 1, 0), _layout(2, 1, 1, 2), value_head=True, lora=LORA,
                         trainable_only=True, dtype_bytes=2)
    assert all(op.param == VALUE_HEAD or ".lora_" in op.param for op in plan.ops)
    assert plan.bytes_total == 2 * 2 * (2 * PER_LAYER + H)
    # same devices, tp2 -> dp2: a device holds its TP shard already and receives the other half
    # of the cut adapters only (column-parallel B, row-parallel A); the rest is a local copy
    same = plan_transfer(LLAMA, _layout(1, 2, 1, 0), _layout(2, 1, 1, 0), lora=LORA,
                         trainable_only=True, dtype_bytes=4)
    for dev in (0, 1):
        got = sum(op.nbytes for op in same.ops if op.dst == dev)
        assert got == 4 * 2 * COLUMN_B_AND_ROW_A / 2
    # the full model would move far more
    full = plan_transfer(LLAMA, _layout(1, 2, 1, 0), _layout(2, 1, 1, 2), value_head=True, dtype_bytes=2)
    assert full.bytes_total > 5 * plan.bytes_total
    # the pricing form agrees on the bytes
    flows = transfer_flows(LLAMA, _layout(1, 2, 1, 0), _layout(2, 1, 1, 2), value_head=True, lora=LORA,
                           trainable_only=True, dtype_bytes=2)
    assert sum(b for _, _, b in flows) == pytest.approx(plan.bytes_total)


ROUND = HardwareSpec(name="round", devices_per_node=8, peak_flops={"bf16": 1e12}, memory_bytes=1 * GiB,
                     reserved_bytes=0, memory_bandwidth=1e9, matmul_efficiency=1.0, memory_efficiency=1.0,
                     layer_overhead_s=0.0)
CLUSTER = Cluster(num_nodes=1, devices_per_node=8)
NUM_PARAMS = 90432  # LLAMA's parameters without LoRA (see test_estimator)


def test_estimator_memory_and_refresh_of_a_lora_model() -> None:
    model = AnalyticCostModel(ROUND, CLUSTER)
    train = Call(name="train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor",
                 batch_size=4, prompt_len=0, response_len=16)
    lora_actor = ModelSpec(role="actor", arch=LLAMA, trainable=True, lora=LORA)
    b = model.call_estimate(train, lora_actor, _layout(2, 1, 1)).breakdown
    trained = 2 * PER_LAYER
    assert b["weights_bytes"] == 2 * (NUM_PARAMS + trained)  # bf16 base + adapters
    assert b["grads_bytes"] == 2 * trained  # grads of the adapters only
    assert b["optimizer_states_bytes"] == 12 * trained / 2  # Adam states of the adapters, dp=2
    plain = model.call_estimate(train, ModelSpec(role="actor", arch=LLAMA, trainable=True), _layout(2, 1, 1))
    assert plain.breakdown["optimizer_states_bytes"] == 12 * NUM_PARAMS / 2
    src, dst = _layout(1, 2, 1, 0), _layout(2, 1, 1, 2)
    move = model.realloc_estimate(lora_actor, src, dst)
    assert move.bytes_total == 2 * 2 * trained  # bf16, 2 destination replicas
    assert model.realloc_estimate(ModelSpec(role="actor", arch=LLAMA, trainable=True), src, dst).bytes_total > 5 * move.bytes_total
