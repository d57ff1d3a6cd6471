"""The Advantage Model (Peng et al. 2023): its pairwise loss worked by hand, the am_pairwise
interface on a table "model" whose score at position t is table[token t], and the
advantage-form reward (last-token minus last-prompt-token score)."""

from __future__ import annotations

import math

import pytest
import torch

from graph.catalog import AdvantagePairwiseArgs
from runtime.data.batch import SeqBatch
from runtime.interfaces import CallContext, run_interface
from runtime.interfaces.inference import last_token_scores, prompt_end_scores
from runtime.interfaces.rl_math import advantage_model_loss
from tests.runtime.interfaces.test_train import _BigramEngine


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_advantage_model_loss_by_hand() -> None:
    # a_c = 3 - 1 = 2, a_r = 0 - 1 = -1; rank = log(1 + e^-3); center = ((2 - 1) / 2)^2 = 0.25;
    # bound (m = 1.5): (0.5^2 + 0^2) / 2 = 0.125
    t = advantage_model_loss(torch.tensor([3.0]), torch.tensor([0.0]), torch.tensor([1.0]),
                             bound=1.5, center_coef=2.0, bound_coef=4.0)
    assert t["a_chosen"].item() == 2.0 and t["a_rejected"].item() == -1.0
    assert t["rank"].item() == pytest.approx(_softplus(-3.0))
    assert t["center"].item() == pytest.approx(0.25)
    assert t["bound"].item() == pytest.approx(0.125)
    assert t["loss"].item() == pytest.approx(_softplus(-3.0) + 2.0 * 0.25 + 4.0 * 0.125)


def test_ranking_term_is_the_reward_model_loss_whatever_the_baseline() -> None:
    """b(x) cancels in a_c - a_r: the rank term equals -log sigmoid(r_c - r_r) for any b."""
    rc, rr = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([1.3, -4.0, 2.5])
    for b in (-7.0, 0.0, 3.5):
        t = advantage_model_loss(rc, rr, torch.full((3,), b), bound=10.0, center_coef=0.0, bound_coef=0.0)
        assert torch.allclose(t["loss"], -torch.nn.functional.logsigmoid(rc - rr))


def test_centering_and_bound_gradients_push_the_right_way() -> None:
    """d center / d b = -(a_c + a_r) / 2 * ... : with both advantages positive the baseline
    rises; a bounded score beyond m is pulled back."""
    b = torch.tensor([0.0], requires_grad=True)
    advantage_model_loss(torch.tensor([2.0]), torch.tensor([1.0]), b, bound=10.0,
                         center_coef=1.0, bound_coef=0.0)["loss"].sum().backward()
    # center = ((2 - b + 1 - b) / 2)^2 -> d/db = -(3 - 2b) = -3 at b = 0 (rank term: 0)
    assert b.grad.item() == pytest.approx(-3.0)
    s = torch.tensor([4.0], requires_grad=True)
    advantage_model_loss(s, torch.tensor([0.0]), torch.tensor([0.0]), bound=2.5,
                         center_coef=0.0, bound_coef=1.0)["bound"].sum().backward()
    assert s.grad.item() == pytest.approx(4.0 - 2.5)  # d/ds (s - m)^2 / 2


PAIRS = ([1, 2, 3], [1, 2, 4], [5, 6, 3, 3], [5, 6, 2, 1])
PROMPTS = [2, 2, 2, 2]


def test_scores_at_last_token_and_last_prompt_token() -> None:
    b = SeqBatch.from_lists([[1, 2, 3], [4, 5]], [2, 1])
    out = torch.arange(10.0).reshape(2, 5, 1)  # out[row, t] = 5 row + t
    assert last_token_scores(b, out).tolist() == [2.0, 6.0]
    assert prompt_end_scores(b, out).tolist() == [1.0, 5.0]


def test_am_pairwise_loss_and_gradient_by_hand() -> None:
    """score(x, y) = table[last token], b(x) = table[last prompt token]; the interface's loss
    is the mean over pairs of the hand formula, and so is its gradient."""
    engine = _BigramEngine(value_head=True, micro_batches=2, seed=3)
    batch = SeqBatch.from_lists([list(s) for s in PAIRS], PROMPTS)
    args = AdvantagePairwiseArgs(bound=0.5, center_coef=0.7, bound_coef=1.3)
    out = run_interface("am_pairwise", engine, batch, args, CallContext())

    table = engine.table.detach().clone().requires_grad_(True)
    total, acc = torch.zeros(()), 0.0
    for c, r in ((PAIRS[0], PAIRS[1]), (PAIRS[2], PAIRS[3])):
        b = table[c[1], 0]
        a_c, a_r = table[c[-1], 0] - b, table[r[-1], 0] - b
        over = (torch.relu(a_c.abs() - 0.5) ** 2 + torch.relu(a_r.abs() - 0.5) ** 2) / 2
        total = total + torch.nn.functional.softplus(-(a_c - a_r)) + 0.7 * ((a_c + a_r) / 2) ** 2 + 1.3 * over
        acc += float(a_c > a_r)
    total = total / 2
    total.backward()
    assert out["loss"] == pytest.approx(total.item(), abs=1e-6)
    assert out["accuracy"] == pytest.approx(acc / 2)
    assert torch.allclose(engine.trainer.steps[0]["grad"], table.grad, atol=1e-6)


def test_am_args_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="bound must be > 0"):
        AdvantagePairwiseArgs(bound=0.0)
    with pytest.raises(ValueError, match="center_coef"):
        AdvantagePairwiseArgs(center_coef=-1.0)
