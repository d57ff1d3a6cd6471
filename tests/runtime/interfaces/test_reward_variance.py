"""GRPOVI's reward adjustment against hand-worked cases and brute-force vertex enumeration."""

import itertools

import numpy as np
import pytest

from runtime.interfaces.reward_variance import increase_variance, increase_variance_group


def brute_force(r, p, low, high):
    """Best vertex of the feasible polytope, enumerating active constraint sets (independent of the solver)."""
    n = len(r)
    p = p / p.sum()
    eq_rows, eq_rhs = [p], [p @ r]
    for i, j in itertools.combinations(range(n), 2):
        if r[i] == r[j]:
            row = np.zeros(n)
            row[i], row[j] = 1, -1
            eq_rows.append(row)
            eq_rhs.append(0.0)
    ineq = []  # rows a with a @ z >= b
    for i in range(n):
        e = np.eye(n)[i]
        ineq += [(e, low), (-e, -high)]
    for i, j in itertools.permutations(range(n), 2):
        if r[i] > r[j]:
            ineq.append((np.eye(n)[i] - np.eye(n)[j], 0.0))
    best, best_z = -np.inf, None
    for size in range(n + 1):
        for active in itertools.combinations(range(len(ineq)), size):
            A = np.array(eq_rows + [ineq[k][0] for k in active])
            b = np.array(eq_rhs + [ineq[k][1] for k in active])
            if np.linalg.matrix_rank(A) < n:
                continue
            z, *_ = np.linalg.lstsq(A, b, rcond=None)
            if np.abs(A @ z - b).max() > 1e-9:
                continue
            if all(a @ z >= bb - 1e-9 for a, bb in ineq):
                value = p @ (z * z)
                if value > best + 1e-12:
                    best, best_z = value, z
    return best, best_z


def check_feasible(r, p, z, low, high):
    p = p / p.sum()
    assert np.all(z >= low - 1e-9) and np.all(z <= high + 1e-9)
    assert abs(p @ z - p @ r) < 1e-9
    for i, j in itertools.permutations(range(len(r)), 2):
        if r[i] > r[j]:
            assert z[i] >= z[j] - 1e-9
        if r[i] == r[j]:
            assert z[i] == z[j]


def test_hand_worked_example():
    # r = (0.2, 0.5, 0.9), uniform weights, bounds [0, 1]: mean 1.6/3. Sorted descending, the top
    # response takes M = 1; the middle one t solves (1 + t + 0)/3 = 1.6/3, so t = 0.6; the last takes 0.
    z = increase_variance_group(np.array([0.2, 0.5, 0.9]), 0.0, 1.0)
    np.testing.assert_allclose(z, [0.0, 0.6, 1.0], atol=1e-12)
    # the variance rises from 0.0822 to 0.1689 with the same mean
    assert np.var([0.2, 0.5, 0.9]) == pytest.approx(0.082222, abs=1e-5)
    assert np.var(z) == pytest.approx(0.168889, abs=1e-5)


def test_binary_rewards_are_already_optimal():
    # rule-based 0/1 rewards already have the largest variance the constraints allow
    r = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    np.testing.assert_allclose(increase_variance_group(r, 0.0, 1.0), r)


def test_all_equal_rewards_stay_put():
    np.testing.assert_allclose(increase_variance_group(np.full(4, 0.3), 0.0, 1.0), np.full(4, 0.3))


@pytest.mark.parametrize("seed", range(60))
def test_matches_brute_force_on_random_groups(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 6))
    low, high = sorted(rng.uniform(-2, 2, size=2))
    r = rng.uniform(low, high, size=n)
    if seed % 3 == 0:  # tied rewards must stay tied
        r[1:] = np.where(rng.random(n - 1) < 0.5, r[0], r[1:])
    p = rng.uniform(0.1, 1.0, size=n) if seed % 2 else np.ones(n)
    z = increase_variance_group(r, low, high, p)
    check_feasible(r, p, z, low, high)
    best, best_z = brute_force(r, p, low, high)
    ours = (p / p.sum()) @ (z * z)
    assert ours == pytest.approx(best, abs=1e-9)
    assert ours >= (p / p.sum()) @ (r * r) - 1e-12  # never lowers the second moment


def test_batch_of_groups_and_errors():
    r = np.array([0.2, 0.5, 0.9, 1.0, 0.0, 1.0])
    z = increase_variance(r, 3, 0.0, 1.0)
    np.testing.assert_allclose(z, [0.0, 0.6, 1.0, 1.0, 0.0, 1.0], atol=1e-12)
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        increase_variance(r, 4, 0.0, 1.0)
    with pytest.raises(ValueError, match="outside \\[reward_min, reward_max\\]"):
        increase_variance_group(np.array([0.0, 2.0]), 0.0, 1.0)
    with pytest.raises(ValueError, match="reward_min < reward_max"):
        increase_variance_group(np.array([0.5]), 1.0, 1.0)
    with pytest.raises(ValueError, match="weights must be non-negative"):
        increase_variance_group(np.array([0.5, 0.6]), 0.0, 1.0, np.array([-1.0, 1.0]))


def test_grpovi_rewards_feed_group_advantages():
    """The tensor path grpo_actor takes with variance_increase: adjusted rewards, then advantages."""
    import torch

    from runtime.interfaces.reward_variance import adjusted_group_rewards
    from runtime.interfaces.rl_math import group_advantages

    rewards = torch.tensor([0.2, 0.5, 0.9, 1.0, 0.0, 1.0])
    adjusted = adjusted_group_rewards(rewards, 3, 0.0, 1.0)
    assert torch.allclose(adjusted, torch.tensor([0.0, 0.6, 1.0, 1.0, 0.0, 1.0]))
    # by hand: (0, 0.6, 1) has mean 0.5333 and sample std sqrt(0.50667 / 2) = 0.50332, so the
    # advantages are (-1.0596, 0.1325, 0.9272); the middle response now sits above the mean
    after = group_advantages(adjusted, 3)
    assert torch.allclose(after[:3], torch.tensor([-1.0596, 0.1325, 0.9272]), atol=1e-4)
    # the second group (already 0/1) is unchanged
    assert torch.equal(after[3:], group_advantages(rewards, 3)[3:])
