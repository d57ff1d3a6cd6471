"""The cost model's parameter manifest describes exactly the shards the engine holds.

Reallocation applies the cost model's TransferPlan to the engine's shards by name, so
names, global shapes and TP cuts must agree for every family, with or without a value
head and with tied embeddings.
"""

import pytest

from graph.placement.params import param_manifest
from graph.spec import LoraSpec, ModelArch, ModelSpec
from runtime.execution.launch import LaunchSpec, launch

pytestmark = pytest.mark.slow

ARCHS = {
    "llama": ModelArch(family="llama", num_layers=2, hidden_size=32, ffn_hidden_size=64, num_heads=4,
                       num_kv_heads=2, vocab_size=64),
    "qwen2-tied": ModelArch(family="qwen2", num_layers=2, hidden_size=32, ffn_hidden_size=64, num_heads=4,
                            num_kv_heads=2, vocab_size=64, qkv_bias=True, tied_embeddings=True),
    "gpt2": ModelArch(family="gpt2", num_layers=2, hidden_size=32, ffn_hidden_size=128, num_heads=4,
                      num_kv_heads=4, vocab_size=64, max_position_embeddings=32, qkv_bias=True,
                      tied_embeddings=True),
}

LORA = LoraSpec(rank=3, alpha=6.0)
TWO_TARGETS = LoraSpec(rank=2, alpha=2.0, targets=("linear_qkv", "linear_fc2"))


def _trainable(engine):
    return {engine.global_name(n) for n, p in engine.module.named_parameters() if p.requires_grad}


def _engine_params(ctx):
    from graph.placement.layout import DeviceMesh, Layout
    from runtime.engine.model_engine import build_engine

    layout = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    out = {}
    for key, arch in ARCHS.items():
        for value_head in (False, True):
            spec = ModelSpec(role="m", arch=arch, trainable=True, value_head=value_head,
                             lora=LORA if value_head else None)  # LoRA with and without a value head
            engine = build_engine(spec, layout, ctx.rank)
            out[(key, value_head)] = {
                name: (tuple(s.global_shape), s.spec.dim, s.spec.stride, name in _trainable(engine))
                for name, s in engine.named_local_shards().items()
            }
            if key == "llama" and not value_head:  # and a LoRA LM on two targets
                spec = ModelSpec(role="m", arch=arch, trainable=True, lora=TWO_TARGETS)
                engine = build_engine(spec, layout, ctx.rank)
                out[(key, "lora")] = {
                    name: (tuple(s.global_shape), s.spec.dim, s.spec.stride, name in _trainable(engine))
                    for name, s in engine.named_local_shards().items()
                }
    return out


def test_engine_shards_match_the_manifest(tmp_path):
    found = launch(_engine_params, (), LaunchSpec(nproc_per_node=1, log_dir=str(tmp_path)))[0]
    assert len(found) == 7
    for (key, value_head), engine in found.items():
        lora = TWO_TARGETS if value_head == "lora" else (LORA if value_head else None)
        manifest = {p.name: p for p in param_manifest(ARCHS[key], value_head=value_head is True, lora=lora)}
        trained = {p.name for p in param_manifest(ARCHS[key], value_head=value_head is True, lora=lora,
                                                  trainable_only=True)}
        assert set(engine) == set(manifest), (key, value_head, set(engine) ^ set(manifest))
        for name, (shape, dim, stride, requires_grad) in engine.items():
            info = manifest[name]
            assert shape == info.shape, (key, name)
            assert dim == info.tp_dim, (key, name)
            assert (stride == 2) == (info.split == "gate_up"), (key, name)
            assert requires_grad == (name in trained), (key, name)  # LoRA freezes the base
