"""LoraSpec (graph/spec.py): validation with one-line messages naming the key and the fix."""

from __future__ import annotations

import pytest

from graph.spec import LoraSpec, ModelArch, ModelSpec

LLAMA = ModelArch(family="llama", num_layers=2, hidden_size=64, ffn_hidden_size=128, num_heads=8,
                  num_kv_heads=4, vocab_size=128)
LORA = LoraSpec(rank=4, alpha=8.0)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"rank": 0, "alpha": 8.0}, "lora.rank=0: must be an integer >= 1"),
    ({"rank": 4, "alpha": 0}, "lora.alpha=0: must be a number > 0"),
    ({"rank": 4, "alpha": 8.0, "targets": ("q_proj",)}, "unknown target 'q_proj'; known: linear_qkv"),
    ({"rank": 4, "alpha": 8.0, "targets": ()}, "lora.targets is empty"),
    ({"rank": 4, "alpha": 8.0, "targets": ("linear_qkv", "linear_qkv")}, "lists a target twice"),
])
def test_bad_lora_specs_are_rejected(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LoraSpec(**kwargs)


def test_lora_needs_a_trainable_model() -> None:
    assert LORA.scale == 2.0
    with pytest.raises(ValueError, match="lora is set on a model that is not trainable"):
        ModelSpec(role="ref", arch=LLAMA, lora=LORA)
