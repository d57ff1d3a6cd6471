"""The cost model's parameter manifest describes exactly the shards the engine holds.

Reallocation applies the cost model's TransferPlan to the engine's shards by name, so
names, global shapes and TP cuts must agree for every family, with or without a value
head and with tied embeddings.
"""

import pytest

from cost_model.params import param_manifest
from graph.spec import ModelArch, ModelSpec
from runtime.launch import LaunchSpec, launch

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


def _engine_params(ctx):
    from cost_model.layout import DeviceMesh, Layout
    from runtime.engine import build_engine

    layout = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    out = {}
    for key, arch in ARCHS.items():
        for value_head in (False, True):
            spec = ModelSpec(role="m", arch=arch, trainable=True, value_head=value_head)
            engine = build_engine(spec, layout, ctx.rank)
            out[(key, value_head)] = {
                name: (tuple(s.global_shape), s.spec.dim, s.spec.stride)
                for name, s in engine.named_local_shards().items()
            }
    return out


def test_engine_shards_match_the_manifest(tmp_path):
    found = launch(_engine_params, (), LaunchSpec(nproc_per_node=1, log_dir=str(tmp_path)))[0]
    for (key, value_head), engine in found.items():
        manifest = {p.name: p for p in param_manifest(ARCHS[key], value_head=value_head)}
        assert set(engine) == set(manifest), (key, value_head, set(engine) ^ set(manifest))
        for name, (shape, dim, stride) in engine.items():
            info = manifest[name]
            assert shape == info.shape, (key, name)
            assert dim == info.tp_dim, (key, name)
            assert (stride == 2) == (info.split == "gate_up"), (key, name)
