"""GRPOVI's reward-variance increase (arXiv 2505.23247), solved exactly. Pure numpy.

For one prompt's group of rewards r with weights p (uniform, or the initial policy's
probabilities of the responses), find adjusted rewards z that maximise the second
moment sum_i p_i z_i^2 subject to

    m <= z_i <= M,   sum_i p_i z_i = sum_i p_i r_i,   z keeps the order of r.

"Keeps the order" here means r_i > r_j implies z_i >= z_j and r_i = r_j implies
z_i = z_j, so tied rewards stay tied.

Why the solution is a single threshold. Merge tied rewards into blocks and sort the
blocks by decreasing reward. The monotone box {M >= z_1 >= ... >= z_k >= m} is a
simplex whose vertices are the threshold vectors (M,..,M,m,..,m); cutting it with the
mean hyperplane leaves a polytope whose extreme points lie on the simplex's edges:
(M x a, t x (b - a), m x (k - b)). The objective is convex, so its maximum is at one
of them. If b - a >= 2, the middle run at the constant t can be replaced by a run
(M.., t', m..) with the same weighted sum and a strictly larger second moment (for a
fixed mean, the constant run has the least second moment), so the maximum has at
most one fractional block: z = (M x a, t, m x (k - a - 1)). The mean constraint then
fixes a: the prefix sums M*P(<a) + m*P(>=a) increase with a and tile [m, M] * P, so
exactly one a admits t in [m, M]. The cost is a sort plus a linear scan: O(n log n).
"""

from __future__ import annotations

import numpy as np


def increase_variance_group(rewards: np.ndarray, low: float, high: float,
                            weights: np.ndarray | None = None) -> np.ndarray:
    """Adjusted rewards of one group (see the module docstring)."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"rewards of one group must be a non-empty vector, got shape {r.shape}")
    if not low < high:
        raise ValueError(f"reward bounds must satisfy reward_min < reward_max, got {low} and {high}")
    p = np.full(r.shape, 1.0 / r.size) if weights is None else np.asarray(weights, dtype=np.float64)
    if p.shape != r.shape or np.any(p < 0) or not np.isfinite(p).all() or p.sum() <= 0:
        raise ValueError("weights must be non-negative, finite, not all zero, one per reward")
    tol = 1e-9 * max(1.0, abs(low), abs(high))
    if r.min() < low - tol or r.max() > high + tol:
        raise ValueError(
            f"rewards span [{r.min():g}, {r.max():g}], outside [reward_min, reward_max] = "
            f"[{low:g}, {high:g}]; widen the bounds (graph.train.reward_min / reward_max)"
        )
    p = p / p.sum()
    values, inverse = np.unique(r, return_inverse=True)  # ascending distinct rewards
    block_p = np.bincount(inverse, weights=p, minlength=values.size)[::-1]  # descending
    target = float(p @ r)
    z_blocks = _threshold_solution(block_p, target, low, high)
    return z_blocks[::-1][inverse]


def _threshold_solution(block_p: np.ndarray, target: float, low: float, high: float) -> np.ndarray:
    """z per block (blocks by decreasing reward): M for the first a, one t, m for the rest."""
    k = block_p.size
    before = np.concatenate([[0.0], np.cumsum(block_p)[:-1]])  # P(< a)
    after = 1.0 - before - block_p  # P(> a)
    z = np.full(k, low)
    for a in range(k):
        if block_p[a] <= 0:
            continue
        t = (target - high * before[a] - low * after[a]) / block_p[a]
        if low - 1e-12 <= t <= high + 1e-12:
            z[:a] = high
            z[a] = min(max(t, low), high)
            z[a + 1:] = low
            return _fill_zero_weight(z, block_p)
    raise AssertionError("no feasible threshold; the mean lies outside [low, high]")


def _fill_zero_weight(z: np.ndarray, block_p: np.ndarray) -> np.ndarray:
    """Zero-weight blocks take the value of the nearest weighted block above them."""
    out = z.copy()
    last = None
    for i in range(out.size):
        if block_p[i] > 0:
            last = out[i]
        elif last is not None:
            out[i] = last
    return out


def increase_variance(rewards: np.ndarray, group_size: int, low: float, high: float,
                      weights: np.ndarray | None = None) -> np.ndarray:
    """Adjust a flat batch of rewards, `group_size` consecutive responses per prompt."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or r.size % group_size:
        raise ValueError(f"{r.size} rewards do not split into groups of {group_size}")
    w = None if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1, group_size)
    out = np.empty_like(r)
    for g, group in enumerate(r.reshape(-1, group_size)):
        out[g * group_size:(g + 1) * group_size] = increase_variance_group(
            group, low, high, None if w is None else w[g])
    return out


def adjusted_group_rewards(rewards, group_size: int, low: float, high: float):
    """GRPOVI's rewards for a torch tensor of consecutive groups (uniform weights in a group).

    The paper weights a group's responses by the initial policy's probabilities; with
    uniform weights the adjustment keeps each group's mean reward exactly.
    """
    import torch

    adjusted = increase_variance(rewards.detach().double().cpu().numpy(), group_size, low, high)
    return torch.as_tensor(adjusted, dtype=rewards.dtype, device=rewards.device)

