"""The Megatron parameter manifest: names, shapes, TP cuts and stage placement."""

from __future__ import annotations

import pytest

from graph.placement.params import check_tp, padded_vocab, param_manifest, stage_params
from graph.spec import ModelArch

LLAMA = ModelArch(family="llama", num_layers=4, hidden_size=64, ffn_hidden_size=96, num_heads=8,
                  num_kv_heads=4, vocab_size=128)


@pytest.mark.parametrize("family,tied,bias,value_head", [
    ("llama", False, False, False), ("llama", True, False, False), ("qwen2", False, True, True),
    ("gpt2", True, True, False), ("gpt2", True, False, True),
])
def test_manifest_counts_every_parameter_once(family: str, tied: bool, bias: bool, value_head: bool) -> None:
    arch = ModelArch(family=family, num_layers=4, hidden_size=64, ffn_hidden_size=96, num_heads=8,
                     num_kv_heads=8 if family == "gpt2" else 4, vocab_size=128, tied_embeddings=tied,
                     qkv_bias=bias)
    manifest = param_manifest(arch, value_head=value_head, pp=1)
    assert sum(p.numel for p in manifest) == arch.num_params(value_head=value_head)
    assert len({p.name for p in manifest}) == len(manifest)


def test_names_shapes_and_cuts() -> None:
    by_name = {p.name: p for p in param_manifest(LLAMA, pp=2)}
    qkv = by_name["decoder.layers.3.self_attention.linear_qkv.weight"]
    # (8 q heads + 2 * 4 kv heads) * head_dim 8 = 128 rows
    assert qkv.shape == (128, 64) and qkv.tp_dim == 0 and qkv.split == "contiguous"
    # TP2: rank 1 holds rows 64..128, i.e. query groups 2 and 3 whole (32 rows per group)
    assert qkv.shard_runs(2, 1) == ((64, 128),)
    fc1 = by_name["decoder.layers.0.mlp.linear_fc1.weight"]
    # fused gate/up: rank 1 of 2 holds gate rows 48..96 and up rows 144..192
    assert fc1.shape == (192, 64) and fc1.shard_runs(2, 1) == ((48, 96), (144, 192))
    assert fc1.local_shape(2) == (96, 64)
    # a global slice inside the up run maps after the 48 local gate rows
    assert fc1.to_local(2, 1, ((150, 160), (0, 64))) == ((54, 64), (0, 64))
    proj = by_name["decoder.layers.1.self_attention.linear_proj.weight"]
    assert proj.tp_dim == 1 and proj.shard_runs(4, 3) == ((48, 64),)
    # stages: 4 layers over pp=2 -> layers 2, 3 on stage 1, with local names 0, 1
    assert qkv.stages(2, 4) == (1,)
    assert qkv.local_name(2, 4) == "decoder.layers.1.self_attention.linear_qkv.weight"
    assert by_name["embedding.word_embeddings.weight"].stages(2, 4) == (0,)
    assert by_name["output_layer.weight"].stages(2, 4) == (1,)
    assert by_name["decoder.final_layernorm.weight"].tp_dim is None


def test_tied_copy_only_when_pipelined_and_value_head_shape() -> None:
    tied = ModelArch(family="llama", num_layers=4, hidden_size=64, ffn_hidden_size=96, num_heads=8,
                     num_kv_heads=4, vocab_size=128, tied_embeddings=True)
    assert "output_layer.weight" not in {p.name for p in param_manifest(tied, pp=1)}
    copy = {p.name: p for p in param_manifest(tied, pp=2)}["output_layer.weight"]
    assert copy.tied_to == "embedding.word_embeddings.weight" and copy.stages(2, 4) == (1,)
    head = {p.name: p for p in param_manifest(tied, value_head=True, pp=2)}["value_head.weight"]
    assert head.shape == (1, 64) and head.tp_dim is None and head.tied_to is None


def test_stage_params_and_padding() -> None:
    # pp=2, tp=2: stage 0 = embedding 128*64/2 + 2 layers; stage 1 = 2 layers + norm + head/2
    layer = sum(p.numel / (2 if p.tp_dim is not None else 1)
                for p in param_manifest(LLAMA) if p.layer == 0)
    assert stage_params(LLAMA, value_head=False, tp=2, pp=2) == (4096 + 2 * layer, 2 * layer + 64 + 4096)
    assert padded_vocab(50257, 1) == 50304 and padded_vocab(128, 2) == 256
    assert check_tp(LLAMA, 8) == "num_kv_heads=4 is not divisible by tp=8"
    with pytest.raises(ValueError, match="pp=3"):
        param_manifest(LLAMA, pp=3)
