"""Tests of runtime/rl_math.py against hand-worked numbers and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from runtime import rl_math


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


def test_lr_schedule() -> None:
    kw = {"lr": 1.0, "warmup_steps": 2, "total_steps": 12}
    assert rl_math.lr_at(0, schedule="constant", **kw) == 0.5
    assert rl_math.lr_at(5, schedule="constant", **kw) == 1.0
    assert rl_math.lr_at(7, schedule="linear", **kw) == pytest.approx(0.5)
    assert rl_math.lr_at(7, schedule="cosine", **kw) == pytest.approx(0.5)
    assert rl_math.lr_at(12, schedule="cosine", **kw) == pytest.approx(0.0)
