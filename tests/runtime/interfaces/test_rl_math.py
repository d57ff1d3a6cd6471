"""Tests of runtime/rl_math.py against hand-worked numbers and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from runtime.interfaces import rl_math


def test_gae_matches_brute_force_sum() -> None:
    rng = np.random.default_rng(0)
    r = rng.normal(size=(2, 6)).astype(np.float32)
    v = rng.normal(size=(2, 6)).astype(np.float32)
    mask = np.zeros((2, 6), bool)
    mask[0, 2:5] = True
    mask[1, 1:6] = True
    gamma, lam = 0.9, 0.8
    adv, ret = rl_math.gae(torch.tensor(r), torch.tensor(v), torch.tensor(mask), gamma=gamma, lam=lam)
    for b in range(2):
        idx = np.nonzero(mask[b])[0]
        vals = list(v[b, idx]) + [0.0]
        deltas = [r[b, t] + gamma * vals[k + 1] - vals[k] for k, t in enumerate(idx)]
        for k, t in enumerate(idx):
            want = sum((gamma * lam) ** j * deltas[k + j] for j in range(len(idx) - k))
            assert adv[b, t].item() == pytest.approx(want, abs=1e-5)
            assert ret[b, t].item() == pytest.approx(want + v[b, t], abs=1e-5)
    assert float(adv[~torch.tensor(mask)].abs().sum()) == 0.0


def test_token_rewards_put_reward_on_last_response_token() -> None:
    mask = torch.tensor([[False, True, True, False]])
    lp = torch.tensor([[0.0, -1.0, -2.0, 0.0]])
    ref = torch.tensor([[0.0, -1.5, -1.0, 0.0]])
    r = rl_math.token_rewards(torch.tensor([5.0]), lp, ref, mask, kl_coef=0.1, reward_clip=3.0)
    assert r.tolist()[0] == pytest.approx([0.0, -0.05, 0.1 + 3.0, 0.0])


def test_ppo_policy_loss_by_hand() -> None:
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, -1.0, 2.0]])
    loss, clipped = rl_math.ppo_policy_loss(logp, old, adv, torch.ones(1, 3, dtype=torch.bool), eps_clip=0.2)
    # ratio 1.5, A=1 -> min(1.5, 1.2) = 1.2; ratio 0.5, A=-1 -> min(-0.5, -0.8) = -0.8; 1.1*2 = 2.2
    assert loss.tolist()[0] == pytest.approx([-1.2, 0.8, -2.2], abs=1e-6)
    assert clipped.tolist()[0] == [True, True, False]


def test_clipped_value_loss_by_hand() -> None:
    v, old, ret = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.5, 0.0]]), torch.tensor([[0.0, 1.0]])
    loss = rl_math.clipped_value_loss(v, old, ret, torch.ones(1, 2, dtype=torch.bool), value_clip=0.2)
    # token 0: max((1-0)^2, (0.7-0)^2)/2 = 0.5; token 1: 0.5 * 1
    assert loss.tolist()[0] == pytest.approx([0.5, 0.5])


def test_group_advantages_and_pairwise_losses() -> None:
    adv = rl_math.group_advantages(torch.tensor([1.0, 0.0, 2.0, 2.0]), 2)
    s = math.sqrt(0.5)
    assert adv.tolist() == pytest.approx([0.5 / s, -0.5 / s, 0.0, 0.0], abs=1e-5)
    bt = rl_math.bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]))
    assert bt.item() == pytest.approx(math.log(1 + math.exp(-1.0)))
    d = rl_math.dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                         torch.tensor([-2.0]), beta=0.5)
    assert d.item() == pytest.approx(math.log(1 + math.exp(-0.5 * 2.0)))


def test_kl_estimators_and_whiten() -> None:
    lp, ref = torch.tensor([-1.0]), torch.tensor([-1.5])
    assert rl_math.kl_estimate(lp, ref, "k1").item() == pytest.approx(0.5)
    assert rl_math.kl_estimate(lp, ref, "k3").item() == pytest.approx(math.exp(-0.5) - 1 + 0.5)
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    m = torch.tensor([[True, True, True, False]])
    w = rl_math.whiten(x, m)
    assert w.tolist()[0][:3] == pytest.approx([-1.2247, 0.0, 1.2247], abs=1e-3)
    assert w[0, 3].item() == 0.0



def test_clipped_value_loss_takes_the_larger_branch() -> None:
    # token 0: v = 2 (old 0, clipped to 0.2), R = 1: unclipped (2-1)^2 = 1 beats clipped
    # (0.2-1)^2 = 0.64 -> 0.5; token 1: v = -0.5 clipped to -0.2, R = -1: unclipped 0.25
    # loses to clipped 0.64 -> 0.32
    v, old, ret = torch.tensor([[2.0, -0.5]]), torch.tensor([[0.0, 0.0]]), torch.tensor([[1.0, -1.0]])
    loss = rl_math.clipped_value_loss(v, old, ret, torch.ones(1, 2, dtype=torch.bool), value_clip=0.2)
    assert loss.tolist()[0] == pytest.approx([0.5, 0.32])


def test_gae_by_hand_three_tokens() -> None:
    # rewards (0, 0, 1), values (0.5, 0.2, 0.4), gamma 0.9, lam 0.5, value after the end 0
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.2, 0.4]])
    adv, ret = rl_math.gae(r, v, torch.ones(1, 3, dtype=torch.bool), gamma=0.9, lam=0.5)
    d2 = 1.0 - 0.4
    d1 = 0.0 + 0.9 * 0.4 - 0.2
    d0 = 0.0 + 0.9 * 0.2 - 0.5
    a2, a1 = d2, d1 + 0.45 * d2
    a0 = d0 + 0.45 * a1
    assert adv.tolist()[0] == pytest.approx([a0, a1, a2])
    assert ret.tolist()[0] == pytest.approx([a0 + 0.5, a1 + 0.2, a2 + 0.4])


def test_adaptive_kl_coef_by_hand() -> None:
    # error clip(kl / target - 1, +-0.2); coef * (1 + error * n / horizon)
    assert rl_math.adaptive_kl_coef(0.1, 9.0, target=6.0, horizon=100, num_steps=10) == pytest.approx(0.1 * 1.02)
    assert rl_math.adaptive_kl_coef(0.1, 6.6, target=6.0, horizon=100, num_steps=10) == pytest.approx(0.1 * 1.01)
    assert rl_math.adaptive_kl_coef(0.1, 0.0, target=6.0, horizon=100, num_steps=10) == pytest.approx(0.1 * 0.98)
    assert rl_math.adaptive_kl_coef(0.1, 6.0, target=6.0, horizon=100, num_steps=10) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="target > 0"):
        rl_math.adaptive_kl_coef(0.1, 1.0, target=0.0, horizon=100, num_steps=10)


def test_sequence_kl_sums_tokens_and_averages_sequences() -> None:
    lp = torch.tensor([[0.0, -1.0, -1.0], [0.0, -2.0, 0.0]])
    ref = torch.tensor([[0.0, -1.5, -2.0], [0.0, -1.0, 0.0]])
    mask = torch.tensor([[False, True, True], [False, True, False]])
    assert rl_math.sequence_kl(lp, ref, mask) == pytest.approx(((0.5 + 1.0) + (-1.0)) / 2)


def test_running_moments_match_numpy_over_batches() -> None:
    rng = np.random.default_rng(3)
    state = (0.0, 0.0, 0.0)
    seen: list[float] = []
    for size in (5, 1, 7, 3):
        x = rng.normal(2.0, 3.0, size=size)
        seen.extend(x.tolist())
        state = rl_math.merge_moments(*state, torch.tensor(x, dtype=torch.float32))
        count, mean, m2 = state
        assert count == len(seen)
        assert mean == pytest.approx(np.mean(np.float32(seen)), rel=1e-6)
        assert m2 / count == pytest.approx(np.var(np.float32(seen)), rel=1e-5)
    z = rl_math.normalize_rewards(torch.tensor([1.0, 4.0]), 2.0, 4.0)
    assert z.tolist() == pytest.approx([-0.5, 1.0])
