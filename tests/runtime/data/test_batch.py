"""Tests of runtime/batch.py: masks, token-balanced splits, concat/reorder, pickling."""

from __future__ import annotations

import itertools
import pickle

import pytest
import torch

from runtime.data.batch import SeqBatch


def _batch(lens: list[int], prompts: list[int] | None = None) -> SeqBatch:
    seqs = [[10 * i + j + 1 for j in range(n)] for i, n in enumerate(lens)]
    b = SeqBatch.from_lists(seqs, prompts or [1] * len(lens), ids=[100 + i for i in range(len(lens))])
    return b.with_fields(token_fields={"lp": b.input_ids.float() * 0.5},
                         seq_fields={"r": torch.arange(len(lens)).float()})


def test_masks_follow_prompt_and_sequence_lengths() -> None:
    b = _batch([4, 2], [1, 2])
    assert b.input_ids.tolist() == [[1, 2, 3, 4], [11, 12, 0, 0]]
    assert b.prompt_mask().tolist() == [[True, False, False, False], [True, True, False, False]]
    assert b.response_mask().tolist() == [[False, True, True, True], [False, False, False, False]]
    assert b.response(0) == [2, 3, 4] and b.tokens(1) == [11, 12]
    assert b.num_tokens == 6


def test_split_is_token_balanced_like_brute_force() -> None:
    lens = [9, 1, 7, 3, 5, 5, 2, 8]
    b = _batch(lens)
    parts = b.split_indices(2)
    assert sorted(i for p in parts for i in p) == list(range(len(lens)))
    loads = [sum(lens[i] for i in p) for p in parts]
    best = min(abs(sum(lens[i] for i in c) * 2 - sum(lens))
               for c in itertools.combinations(range(8), 4))
    assert abs(loads[0] - loads[1]) == best
    assert all(len(p) == 4 for p in parts)


def test_split_keeps_units_whole() -> None:
    b = _batch([3, 4, 9, 2, 5, 5])
    for part in b.split_indices(3, unit=2):
        assert len(part) == 2 and part[0] % 2 == 0 and part[1] == part[0] + 1


def test_split_concat_reorder_roundtrip() -> None:
    b = _batch([3, 7, 2, 6, 4], [1, 2, 1, 3, 2])
    back = SeqBatch.concat(b.split(2)).reorder(b.ids)
    assert torch.equal(back.input_ids, b.input_ids)
    assert torch.equal(back.token_fields["lp"], b.token_fields["lp"])
    assert torch.equal(back.seq_fields["r"], b.seq_fields["r"])
    assert back.ids == b.ids and torch.equal(back.prompt_lens, b.prompt_lens)


def test_pickles() -> None:
    b = _batch([3, 5])
    again = pickle.loads(pickle.dumps(b))
    assert torch.equal(again.input_ids, b.input_ids) and again.ids == b.ids


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="ids has 1 entries"):
        SeqBatch(input_ids=torch.zeros(2, 3, dtype=torch.long), seq_lens=torch.tensor([1, 2]),
                 prompt_lens=torch.tensor([1, 1]), ids=(0,))
    with pytest.raises(ValueError, match="cannot split into 3 parts"):
        _batch([2, 3]).split(3)
    with pytest.raises(ValueError, match="not in the batch"):
        _batch([2, 3]).reorder([100, 999])
    with pytest.raises(ValueError, match="token field 'x'"):
        _batch([2]).with_fields(token_fields={"x": torch.zeros(3)})
