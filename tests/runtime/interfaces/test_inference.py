"""Tests of runtime/interfaces/inference.py that need no model: rule rewards, alignment."""

from __future__ import annotations

import pytest
import torch

from graph.catalog import RuleRewardArgs
from runtime.data.batch import SeqBatch
from runtime.interfaces import CallContext, run_interface
from runtime.interfaces.inference import last_token_scores, shifted_values

VOCAB = {1: "What is 2+3?", 2: " 5", 3: " 6", 4: " so", 9: ""}  # 9: EOS


def _decode(ids: list[int]) -> str:
    return "".join(VOCAB[i] for i in (ids[: ids.index(9)] if 9 in ids else ids))


def test_rule_reward_scores_each_response() -> None:
    b = SeqBatch.from_lists([[1, 2], [1, 3], [1, 4, 2]], [1, 1, 1])
    out = run_interface("rule_reward", None, b, RuleRewardArgs(correct=2.0, wrong=-1.0),
                        CallContext(rule="arithmetic_exact", decode=_decode))
    assert out.seq_fields["rewards"].tolist() == [2.0, -1.0, 2.0]


def test_rule_reward_scales_partial_scores_and_reports_accuracy() -> None:
    b = SeqBatch.from_lists([[1, 2], [1, 3], [1, 4]], [1, 1, 1])  # " 5" exact, " 6" off by one, " so"
    out = run_interface("rule_reward", None, b, RuleRewardArgs(correct=2.0, wrong=-1.0),
                        CallContext(rule="arithmetic_partial", decode=_decode))
    off_by_one = 0.1 + 0.4 / 2 + 0.1  # number, closeness, a lone number (runtime.rewards.rules)
    assert out.seq_fields["rewards"].tolist() == pytest.approx([2.0, -1.0 + 3.0 * off_by_one, -1.0])
    assert out.seq_fields["accuracy"].tolist() == [1.0, 0.0, 0.0]


def test_unfinished_responses_score_a_fraction() -> None:
    """A response that ends at EOS keeps its score; one cut without EOS gets unfinished_scale of it."""
    b = SeqBatch.from_lists([[1, 2, 9], [1, 2, 4], [1, 3, 9], [1, 4, 2]], [1, 1, 1, 1])
    ctx = CallContext(rule="arithmetic_exact", decode=_decode, eos_ids=(9,))
    out = run_interface("rule_reward", None, b, RuleRewardArgs(unfinished_scale=0.5), ctx)
    # " 5" EOS: 1; " 5 so": cut, 0.5; " 6" EOS: wrong, 0; " so 5": cut, 0.5
    assert out.seq_fields["rewards"].tolist() == [1.0, 0.5, 0.0, 0.5]
    assert out.seq_fields["accuracy"].tolist() == [1.0, 0.0, 0.0, 0.0]
    out = run_interface("rule_reward", None, b, RuleRewardArgs(), ctx)  # the default ignores stopping
    assert out.seq_fields["rewards"].tolist() == [1.0, 1.0, 0.0, 1.0]
    out = run_interface("rule_reward", None, b, RuleRewardArgs(unfinished_scale=0.5, eos_bonus=0.25), ctx)
    assert out.seq_fields["rewards"].tolist() == [1.25, 0.5, 0.25, 0.5]  # the bonus goes to every stop
    with pytest.raises(ValueError, match="unfinished_scale must be in"):
        RuleRewardArgs(unfinished_scale=1.5)


def test_rule_reward_needs_rule_and_decoder() -> None:
    b = SeqBatch.from_lists([[1, 2]], [1])
    with pytest.raises(ValueError, match="needs the model's rule name"):
        run_interface("rule_reward", None, b, RuleRewardArgs(), CallContext())


def test_value_alignment() -> None:
    out = torch.tensor([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])
    assert shifted_values(out).tolist() == [[0.0, 1.0, 2.0], [0.0, 4.0, 5.0]]
    b = SeqBatch.from_lists([[1, 2, 3], [1, 2]], [1, 1])
    assert last_token_scores(b, out).tolist() == [3.0, 5.0]
