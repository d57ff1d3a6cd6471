"""Tests of runtime/checkpoint.py: validation errors before anything is built; save/read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers

from graph.spec import ModelArch
from runtime.engine import convert
from runtime.engine import hf_checkpoint as checkpoint

ARCH = ModelArch(family="qwen2", num_layers=1, hidden_size=16, ffn_hidden_size=32, num_heads=4,
                 num_kv_heads=2, vocab_size=23, qkv_bias=True, tied_embeddings=True)


def _save(path: Path, arch: ModelArch = ARCH, value_head: bool = False) -> dict:
    state = convert.random_hf_state(arch, seed=0, value_head=value_head)
    checkpoint.save_hf_checkpoint(str(path), state, arch, value_head=value_head)
    return state


def test_save_then_read_and_transformers_load(tmp_path: Path) -> None:
    state = _save(tmp_path / "m")
    checkpoint.validate_checkpoint(str(tmp_path / "m"), ARCH, value_head=False)
    back = checkpoint.read_hf_checkpoint(str(tmp_path / "m"), ARCH)
    assert all(torch.equal(back[k], v) for k, v in state.items())
    model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "m"))
    assert torch.equal(model.state_dict()["model.layers.0.self_attn.q_proj.bias"],
                       state["model.layers.0.self_attn.q_proj.bias"])


def test_value_head_saved_as_sequence_classifier(tmp_path: Path) -> None:
    state = _save(tmp_path / "rm", value_head=True)
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "rm"))
    assert torch.equal(model.state_dict()["score.weight"], state["score.weight"])


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        checkpoint.validate_checkpoint(str(tmp_path / "nope"), ARCH, value_head=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        checkpoint.validate_checkpoint(str(tmp_path / "empty"), ARCH, value_head=False)


def test_family_and_shape_mismatch(tmp_path: Path) -> None:
    _save(tmp_path / "m")
    llama = ModelArch(**{**ARCH.__dict__, "family": "llama"})
    with pytest.raises(ValueError, match="is a qwen2 model but the spec says llama"):
        checkpoint.validate_checkpoint(str(tmp_path / "m"), llama, value_head=False)
    wider = ModelArch(**{**ARCH.__dict__, "ffn_hidden_size": 48})
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["intermediate_size"] = 48  # config says 48, tensors hold 32
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"has shape \[32, 16\], the spec's architecture needs \[48, 16\]"):
        checkpoint.validate_checkpoint(str(tmp_path / "m"), wider, value_head=False)
