"""Tests of runtime/interfaces/train.py that need no model (the training itself is checked
layout against layout in tests/runtime/test_engine.py)."""

from __future__ import annotations

import pytest
import torch

from graph.interfaces import PPOActorArgs
from runtime.batch import SeqBatch
from runtime.interfaces import run_interface
from runtime.interfaces.train import _field, loss_mask


def test_loss_mask_skips_prompt_padding_and_position_zero() -> None:
    b = SeqBatch.from_lists([[1, 2, 3], [4, 5]], [1, 0])
    assert loss_mask(b).tolist() == [[False, True, True], [False, True, False]]


def test_missing_field_is_named() -> None:
    b = SeqBatch.from_lists([[1, 2, 3]], [1])
    with pytest.raises(ValueError, match="lacks field 'ref_logprobs'"):
        _field(b, "ref_logprobs", "dpo")


@pytest.mark.parametrize(("name", "args", "flag"), [
    ("ppo_actor", PPOActorArgs(ptx_coef=0.5), "ptx_coef"),
    ("ppo_actor", PPOActorArgs(adaptive_kl_target=6.0), "adaptive_kl_target"),
])
def test_unimplemented_options_raise_instead_of_being_ignored(name: str, args: object, flag: str) -> None:
    b = SeqBatch.from_lists([[1, 2, 3]] * 4, [1] * 4).with_fields(seq_fields={"rewards": torch.zeros(4)})
    with pytest.raises(ValueError, match=f"{flag} is not supported"):
        run_interface(name, None, b, args)
