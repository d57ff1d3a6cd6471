"""ModelArch read from HF configs, checked against transformers' own models."""

import pytest

from graph.spec import Call, CallKind, ModelArch, ModelSpec

TINY = dict(num_layers=2, hidden_size=64, ffn_hidden_size=96, num_heads=4, num_kv_heads=2, vocab_size=50,
            max_position_embeddings=64)


@pytest.mark.parametrize("family,extra", [
    ("llama", {}),
    ("llama", {"tied_embeddings": True, "qkv_bias": True}),
    ("qwen2", {"qkv_bias": True, "tied_embeddings": True}),
    ("gpt2", {"num_kv_heads": 4, "qkv_bias": True, "tied_embeddings": True}),
])
def test_num_params_matches_transformers(family, extra):
    transformers = pytest.importorskip("transformers")
    arch = ModelArch(family=family, **{**TINY, **extra})
    config = transformers.AutoConfig.for_model(**arch.to_hf_config())
    model = transformers.AutoModelForCausalLM.from_config(config)
    # transformers counts a tied weight once, as we do
    expected = sum(p.numel() for p in model.parameters())
    assert arch.num_params() == expected
    # and the HF config round-trips
    assert ModelArch.from_hf_config(arch.to_hf_config()) == arch


def test_from_hf_config_llama2_7b():
    # public LLaMA-2-7B config.json sizes; 6.74B parameters as published
    cfg = {"model_type": "llama", "num_hidden_layers": 32, "hidden_size": 4096, "intermediate_size": 11008,
           "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32000,
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "tie_word_embeddings": False}
    arch = ModelArch.from_hf_config(cfg)
    assert arch.head_dim == 128
    assert arch.num_params() == 6_738_415_616
    # a value head replaces the 32000x4096 LM head with a 4096-vector
    assert arch.num_params(value_head=True) == 6_738_415_616 - 32000 * 4096 + 4096


def test_from_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ModelArch.from_config_file(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ModelArch.from_config_file(tmp_path)
    with pytest.raises(ValueError, match="unsupported HF model_type 'bert'"):
        ModelArch.from_hf_config({"model_type": "bert"})


@pytest.mark.parametrize("change,message", [
    ({"family": "mamba"}, "unknown model family"),
    ({"num_heads": 3}, "not divisible by num_heads"),
    ({"num_kv_heads": 3}, "not divisible by num_kv_heads"),
    ({"num_layers": 0}, "num_layers must be a positive integer"),
])
def test_arch_validation(change, message):
    with pytest.raises(ValueError, match=message):
        ModelArch(**{"family": "llama", **TINY, **change})


def test_model_spec_rules():
    arch = ModelArch(family="llama", **TINY)
    with pytest.raises(ValueError, match="exactly one of"):
        ModelSpec(role="r", arch=arch, rule="x")
    with pytest.raises(ValueError, match="cannot be trainable"):
        ModelSpec(role="r", arch=None, rule="x", trainable=True)
    with pytest.raises(ValueError, match="not a valid name"):
        ModelSpec(role="bad role", arch=arch)
    assert ModelSpec(role="r", arch=None, rule="x").num_params == 0


def test_call_validation_and_token_counts():
    call = Call(name="c", model="m", kind=CallKind.INFERENCE, interface="logprobs", batch_size=4,
                prompt_len=10, response_len=6)
    assert call.seq_len == 16 and call.num_tokens == 64
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        Call(name="c", model="m", kind=CallKind.INFERENCE, interface="logprobs", batch_size=0)
    with pytest.raises(ValueError, match="output key twice"):
        Call(name="c", model="m", kind=CallKind.INFERENCE, interface="logprobs", outputs=("a", "a"))
    with pytest.raises(ValueError, match="kind"):
        Call(name="c", model="m", kind="generate", interface="generate")


def test_rope_theta_from_transformers5_config():
    cfg = {"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128,
           "num_attention_heads": 4, "vocab_size": 50, "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}
    assert ModelArch.from_hf_config(cfg).rope_theta == 100000.0
    assert ModelArch.from_hf_config({**cfg, "rope_theta": 500.0}).rope_theta == 500.0
