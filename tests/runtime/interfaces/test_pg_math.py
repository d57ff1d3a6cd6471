"""The policy-gradient family's math against numbers worked by hand or by plain loops."""

import math

import pytest
import torch

from runtime.interfaces import pg_math


def test_rloo_leave_one_out_by_hand():
    # group (1, 0, 0, 1): the others' means are 1/3, 2/3, 2/3, 1/3
    adv = pg_math.rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 4.0, 6.0, 8.0]), 4)
    want = [1 - 1 / 3, 0 - 2 / 3, 0 - 2 / 3, 1 - 1 / 3,
            2 - 6, 4 - 16 / 3, 6 - 14 / 3, 8 - 4]
    assert adv.tolist() == pytest.approx(want)
    with pytest.raises(ValueError, match="group_size >= 2"):
        pg_math.rloo_advantages(torch.tensor([1.0]), 1)


def test_dr_grpo_subtracts_the_mean_without_dividing_by_std():
    adv = pg_math.group_mean_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0, 3.0, 5.0]), 3)
    assert adv.tolist() == pytest.approx([2 / 3, -1 / 3, -1 / 3, -8 / 3, 1 / 3, 7 / 3])


def test_returns_to_go_by_hand():
    r = torch.tensor([[0.0, 1.0, 2.0, 3.0], [5.0, 1.0, 1.0, 9.0]])
    mask = torch.tensor([[False, True, True, True], [True, True, False, False]])
    assert pg_math.returns_to_go(r, mask).tolist() == [[0, 6, 5, 3], [6, 1, 0, 0]]


def _reinforce_pp_loop(rewards, logp, ref, mask, kl_coef, group_size):
    """REINFORCE++ written out with Python lists."""
    b, t = len(mask), len(mask[0])
    if group_size > 1:
        rewards = list(rewards)
        for g in range(0, b, group_size):
            m = sum(rewards[g:g + group_size]) / group_size
            for i in range(g, g + group_size):
                rewards[i] -= m
    adv = [[0.0] * t for _ in range(b)]
    for i in range(b):
        idx = [k for k in range(t) if mask[i][k]]
        tok = {k: -kl_coef * (logp[i][k] - ref[i][k]) for k in idx}
        tok[idx[-1]] += rewards[i]
        for k in idx:
            adv[i][k] = sum(tok[j] for j in idx if j >= k)
    flat = [adv[i][k] for i in range(b) for k in range(t) if mask[i][k]]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / len(flat))
    return [[(adv[i][k] - mean) / std if mask[i][k] else 0.0 for k in range(t)] for i in range(b)]


@pytest.mark.parametrize("group_size", [1, 2])
def test_reinforce_pp_against_a_plain_loop(group_size):
    g = torch.Generator().manual_seed(0)
    logp, ref = -torch.rand(4, 5, generator=g), -torch.rand(4, 5, generator=g)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 1, 1, 1], [0, 0, 1, 0, 0], [0, 1, 1, 0, 0]]).bool()
    rewards = torch.tensor([1.0, 0.0, 0.5, 2.0])
    got = pg_math.reinforce_pp_advantages(rewards, logp, ref, mask, kl_coef=0.1, group_size=group_size)
    want = _reinforce_pp_loop(rewards.tolist(), logp.tolist(), ref.tolist(), mask.tolist(), 0.1, group_size)
    assert got.tolist() == [pytest.approx(row, abs=1e-5) for row in want]


def test_reinforce_pp_global_normalisation_by_hand():
    # no KL: advantages are the rewards on every token; tokens 1, 1, 3 -> mean 5/3, std sqrt(8/9)
    mask = torch.tensor([[True, True], [True, False]])
    zeros = torch.zeros(2, 2)
    got = pg_math.reinforce_pp_advantages(torch.tensor([1.0, 3.0]), zeros, zeros, mask, kl_coef=0.0)
    s = math.sqrt(8 / 9)
    assert got.tolist() == [pytest.approx([(1 - 5 / 3) / s, (1 - 5 / 3) / s], abs=1e-6),
                            pytest.approx([(3 - 5 / 3) / s, 0.0], abs=1e-6)]


def test_overlong_penalty_by_hand():
    # max 10, buffer 4: free up to 6, then -1/4, -2/4, -3/4, -4/4 (x penalty 0.5); beyond max -0.5
    lens = torch.tensor([3, 6, 7, 8, 10, 12])
    got = pg_math.overlong_penalty(lens, max_len=10, buffer=4, penalty=0.5)
    assert got.tolist() == pytest.approx([0, 0, -0.125, -0.25, -0.5, -0.5])
    with pytest.raises(ValueError, match="overlong buffer"):
        pg_math.overlong_penalty(lens, max_len=4, buffer=5)


def test_clip_higher_by_hand():
    # ratios e^0.3 = 1.35, e^-0.3 = 0.741 with eps_low 0.2, eps_high 0.28
    logp = torch.tensor([[0.3, 0.3, -0.3, -0.3]])
    old = torch.zeros(1, 4)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, clipped = pg_math.clipped_token_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28)
    r_up, r_down = math.exp(0.3), math.exp(-0.3)
    # A>0, r high: min(1.35, 1.28) -> 1.28 clipped; A<0, r high: min(-1.35, -1.28) = -1.35
    # A>0, r low: min(0.741, 0.8) = 0.741; A<0, r low: min(-0.741, -0.8) = -0.8 clipped
    assert loss.tolist()[0] == pytest.approx([-1.28, r_up, -r_down, 0.8])
    assert clipped.tolist()[0] == [True, False, False, True]


def test_gspo_sequence_ratio_and_clipping_by_hand():
    logp = torch.tensor([[0.0, 0.1, 0.3, 0.0], [0.0, -0.2, 0.0, 0.0]])
    old = torch.zeros(2, 4)
    mask = torch.tensor([[False, True, True, False], [False, True, True, True]])
    s = pg_math.sequence_ratio(logp, old, mask)
    assert s.tolist() == pytest.approx([math.exp(0.2), math.exp(-0.2 / 3)])
    loss, clipped = pg_math.gspo_sequence_loss(logp, old, torch.tensor([1.0, -2.0]), mask,
                                               eps_low=0.01, eps_high=0.02)
    # row 0: min(1.2214, 1.02) = 1.02 (clipped); row 1: min(-2 * 0.9355, -2 * 0.99) = -1.98 (clipped)
    assert loss.tolist() == pytest.approx([-1.02, 1.98])
    assert clipped.tolist() == [True, True]
    # the gradient reaches every response token of a row, scaled by 1/|y|
    lp = logp.clone().requires_grad_(True)
    pg_math.sequence_ratio(lp, old, mask).sum().backward()
    assert lp.grad[1].tolist() == pytest.approx([0, math.exp(-0.2 / 3) / 3, math.exp(-0.2 / 3) / 3,
                                                 math.exp(-0.2 / 3) / 3])


def test_aggregations_by_hand():
    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    # token mean: (1+2+3+4) / 4 tokens
    assert float(pg_math.aggregate(x, mask, "token_mean")) / pg_math.units("token_mean", mask) == 2.5
    # GRPO: mean over sequences of token means = (2 + 4) / 2
    assert float(pg_math.aggregate(x, mask, "seq_mean_token_mean")) / pg_math.units("seq_mean_token_mean", mask) == 3.0
    # Dr. GRPO: (6/5 + 4/5) / 2 with a budget of 5 tokens
    got = float(pg_math.aggregate(x, mask, "seq_mean_token_sum_norm", max_len=5))
    assert got / pg_math.units("seq_mean_token_sum_norm", mask) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        pg_math.aggregate(x, mask, "token_sum")


def test_varied_groups_marks_groups_with_equal_rewards():
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.5, 0.5, 0.5, 0.5])
    assert pg_math.varied_groups(rewards, 4).tolist() == [True, True, False]
    all_equal = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    assert pg_math.varied_groups(all_equal, 4).tolist() == [False, False]
    assert pg_math.varied_groups(rewards, 2).tolist() == [False, True, True, False, False, False]
