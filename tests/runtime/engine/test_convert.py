"""Tests of runtime/convert.py: fused layouts, TP sharding, HF <-> Megatron round trips."""

from __future__ import annotations

import pytest
import torch

from graph.spec import ModelArch
from runtime.engine import convert


def _arch(family: str, **kw: object) -> ModelArch:
    base = dict(family=family, num_layers=2, hidden_size=24, ffn_hidden_size=40, num_heads=6,
                num_kv_heads=2, vocab_size=31, max_position_embeddings=16)
    if family == "gpt2":
        base.update(num_kv_heads=6, qkv_bias=True, tied_embeddings=True)
    base.update(kw)
    if family == "gpt2":
        base["num_kv_heads"] = base["num_heads"]
    return ModelArch(**base)


def test_fused_qkv_orders_heads_by_query_group() -> None:
    arch = _arch("llama")  # 6 q heads, 2 groups, head_dim 4
    d = arch.head_dim
    q = torch.arange(6 * d).float().reshape(6 * d, 1)
    k = 100 + torch.arange(2 * d).float().reshape(2 * d, 1)
    v = 200 + torch.arange(2 * d).float().reshape(2 * d, 1)
    fused = convert._fuse_qkv(q, k, v, arch)
    want = torch.cat([q[: 3 * d], k[:d], v[:d], q[3 * d:], k[d:], v[d:]])
    assert torch.equal(fused, want)
    assert all(torch.equal(a, b) for a, b in zip(convert._split_qkv(fused, arch), (q, k, v)))


def test_gpt2_qkv_interleave_per_head() -> None:
    arch = _arch("gpt2", num_heads=2, hidden_size=4)
    w = torch.arange(12).float().reshape(12, 1)  # [q(4); k(4); v(4)], head_dim 2
    inter = convert._interleave_gpt2_qkv(w, arch)
    assert inter.flatten().tolist() == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]
    assert torch.equal(convert._deinterleave_gpt2_qkv(inter, arch), w)


@pytest.mark.parametrize("tp", [1, 2, 4])
def test_strided_shards_hold_gate_and_up_slices(tp: int) -> None:
    f = 8
    full = torch.arange(2 * f).float().reshape(2 * f, 1)  # [gate 0..7; up 8..15]
    spec = convert.ShardSpec(dim=0, stride=2)
    shards = [convert.shard(full, spec, tp, r) for r in range(tp)]
    n = f // tp
    for r, s in enumerate(shards):
        assert s.flatten().tolist() == list(range(r * n, (r + 1) * n)) + list(range(f + r * n, f + (r + 1) * n))
    assert torch.equal(convert.unshard(shards, spec), full)
    for r, s in enumerate(shards):
        rows = [i for a, b in convert.shard_ranges(spec, 2 * f, tp, r) for i in range(a, b)]
        assert torch.equal(full[rows], s)


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("value_head", [False, True])
def test_hf_megatron_roundtrip_is_exact(family: str, value_head: bool) -> None:
    arch = _arch(family, qkv_bias=True, tied_embeddings=family != "llama")
    hf = convert.random_hf_state(arch, seed=1, value_head=value_head)
    mg = convert.hf_to_megatron(hf, arch, value_head=value_head)
    back = convert.megatron_to_hf(mg, arch, value_head=value_head)
    assert sorted(back) == sorted(hf)
    assert all(torch.equal(back[k], hf[k]) for k in hf)


def test_vocab_padding_roundtrip() -> None:
    arch = _arch("llama")
    emb = torch.randn(31, 24)
    padded = convert.pad_vocab("embedding.word_embeddings.weight", emb, arch, 4)
    assert padded.shape == (32, 24) and float(padded[31].abs().sum()) == 0.0
    assert torch.equal(convert.unpad_vocab("embedding.word_embeddings.weight", padded, arch), emb)
    assert convert.shard_spec("decoder.layers.0.mlp.linear_fc2.weight", "llama").dim == 1
    assert convert.shard_spec("decoder.layers.0.input_layernorm.weight", "llama").dim is None


def test_random_init_is_deterministic_per_name() -> None:
    arch = _arch("qwen2", qkv_bias=True)
    a = convert.random_hf_state(arch, seed=3, value_head=False)
    b = convert.random_hf_state(arch, seed=3, value_head=False)
    c = convert.random_hf_state(arch, seed=4, value_head=False)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])
    assert torch.equal(a["model.norm.weight"], torch.ones(24))
