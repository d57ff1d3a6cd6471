"""Tests of runtime/binding.py: the ptx key as a batch of its own beside a call's fields."""

from __future__ import annotations

import pytest
import torch

from graph.catalog import PPOActorArgs
from graph.spec import Call, CallKind
from runtime.data.batch import SeqBatch
from runtime.data.binding import Field, assemble_inputs, ptx_payloads, side_inputs
from runtime.data.records import Record
from runtime.data.tokenizer import load_tokenizer

TRAIN = Call(name="actor_train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor",
             args=PPOActorArgs(ptx_coef=0.5), batch_size=2, prompt_len=3, response_len=2,
             inputs=("seq", "old", "ref", "rew", "val", "ptx"))


def test_ptx_is_a_side_batch_not_a_field() -> None:
    tok = load_tokenizer("char", None)
    records = [Record(index=0, prompt="1+2=", answer="3"), Record(index=1, prompt="", answer="hello")]
    ptx = ptx_payloads("prompt_answer", records, [7, 8], tok)["ptx"]
    # bos + prompt, then answer + eos; an empty prompt leaves bos alone as the prompt
    assert ptx.seq_lens.tolist() == [1 + 4 + 1 + 1, 1 + 5 + 1] and ptx.prompt_lens.tolist() == [5, 1]
    assert ptx.tokens(0) == [tok.bos_id] + tok.encode("1+2=") + tok.encode("3") + [tok.eos_id]
    seq = SeqBatch.from_lists([[1, 2, 3, 4], [1, 5, 6]], [2, 2])
    zeros = Field(True, torch.zeros(2, 4), seq.ids)
    payloads = {"seq": seq, "old": zeros, "ref": zeros, "val": zeros, "ptx": ptx,
                "rew": Field(False, torch.tensor([1.0, 0.0]), seq.ids)}
    batch = assemble_inputs(TRAIN, payloads)
    assert sorted(batch.token_fields) == ["logprobs", "ref_logprobs", "values"]
    assert sorted(batch.seq_fields) == ["rewards"]
    assert side_inputs(TRAIN, payloads) == {"ptx": ptx}
    with pytest.raises(ValueError, match="input 'ptx' \\(role ptx\\) must be sequences, got a field"):
        side_inputs(TRAIN, {**payloads, "ptx": zeros})
    with pytest.raises(ValueError, match="data.ptx.format: 'preference' is not one of prompt_answer"):
        ptx_payloads("preference", records, [7, 8], tok)
