"""Pure RL math on padded [B, T] tensors with masks (no process groups, no models).

Token alignment follows `runtime.data.batch.SeqBatch`: entry t belongs to token t (the action
that emits token t from the prefix before it). A later issue deepens this module; every
function here is unit-tested against hand-worked or brute-force numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of x where mask is true."""
    return torch.where(mask, x, torch.zeros_like(x)).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of x where mask is true (0 for an empty mask)."""
    return masked_sum(x, mask) / mask.sum().clamp(min=1)


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """Per-token KL(pi || ref) estimate from sampled tokens: k1 = log r, k3 = r' - 1 - log r'."""
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k3":
        log_ratio = ref_logp - logp
        return torch.exp(log_ratio) - 1 - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; known: k1, k3")


def token_rewards(seq_rewards: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor,
                  response_mask: torch.Tensor, *, kl_coef: float,
                  reward_clip: float = math.inf) -> torch.Tensor:
    """Per-token rewards: -kl_coef * (logp - ref_logp) on response tokens, plus the clipped
    sequence reward on each sequence's last response token."""
    r = torch.where(response_mask, -kl_coef * (logp - ref_logp), torch.zeros_like(logp))
    last = last_true_index(response_mask)
    rows = torch.arange(r.shape[0])
    has = response_mask.any(dim=1)
    clipped = seq_rewards.float().clamp(-reward_clip, reward_clip)
    r[rows[has], last[has]] += clipped[has]
    return r


def last_true_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last true entry of each row (0 for an all-false row)."""
    t = mask.shape[1]
    idx = torch.arange(t).expand_as(mask)
    return torch.where(mask, idx, torch.zeros_like(idx)).amax(dim=1)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, *, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over the masked tokens of each row.

    The value after a row's last masked token is 0 (the episode ends). Returns
    (advantages, returns = advantages + values), zero outside the mask.
    """
    b, t = rewards.shape
    adv = torch.zeros(b, t, dtype=torch.float32)
    next_value = torch.zeros(b)
    running = torch.zeros(b)
    for k in reversed(range(t)):
        m = mask[:, k]
        delta = rewards[:, k] + gamma * next_value - values[:, k]
        running = torch.where(m, delta + gamma * lam * running, running)
        next_value = torch.where(m, values[:, k].float(), next_value)
        adv[:, k] = torch.where(m, running, torch.zeros_like(running))
    returns = torch.where(mask, adv + values, torch.zeros_like(adv))
    return adv, returns


def whiten(x: torch.Tensor, mask: torch.Tensor, *, total: torch.Tensor | None = None,
           eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over masked entries; `total` = (count, sum, sum of squares) overrides
    the local statistics (pass data-parallel all-reduced ones)."""
    if total is None:
        total = torch.stack([mask.sum().float(), masked_sum(x, mask), masked_sum(x * x, mask)])
    count, s, sq = total
    mean = s / count
    var = (sq / count - mean * mean).clamp(min=0)
    return torch.where(mask, (x - mean) / torch.sqrt(var + eps), torch.zeros_like(x))


def ppo_policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, *, eps_clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token clipped-ratio loss -min(r A, clip(r) A) and whether each token was clipped."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - eps_clip, 1 + eps_clip) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return torch.where(mask, loss, torch.zeros_like(loss)), (clipped < unclipped) & mask


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                       mask: torch.Tensor, *, value_clip: float) -> torch.Tensor:
    """Per-token 0.5 * max((v - R)^2, (clip(v, old +- c) - R)^2)."""
    v_clipped = old_values + (values - old_values).clamp(-value_clip, value_clip)
    loss = 0.5 * torch.maximum((values - returns) ** 2, (v_clipped - returns) ** 2)
    return torch.where(mask, loss, torch.zeros_like(loss))


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-6) -> torch.Tensor:
    """GRPO: (r - group mean) / (group std + eps), groups = consecutive runs of group_size."""
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size}")
    g = rewards.float().reshape(-1, group_size)
    std = g.std(dim=1, unbiased=True, keepdim=True) if group_size > 1 else torch.zeros_like(g)
    return ((g - g.mean(dim=1, keepdim=True)) / (std + eps)).reshape(-1)


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """Per-pair -log sigmoid(r_chosen - r_rejected)."""
    return -F.logsigmoid(chosen - rejected)


def advantage_model_loss(score_chosen: torch.Tensor, score_rejected: torch.Tensor,
                         baseline: torch.Tensor, *, bound: float, center_coef: float,
                         bound_coef: float) -> dict[str, torch.Tensor]:
    """Per-pair Advantage-Model loss (Peng et al. 2023, arXiv 2309.10202, Sec. 3.1).

    The AM scores a response by its advantage a(x, y) = r(x, y) - E_{y'~pi_old}[r(x, y')]:
    here r = `score_*` (the head at the response's last token) and the expected reward is
    parameterised by the same head at the prompt's last token, `baseline` = b(x).
    Three terms per pair (the form used here, see docs/advantage-model.md):
    * rank:   -log sigmoid(a_c - a_r): the ranking loss written on advantages (b(x) cancels
              in the difference, so it ranks exactly as the RM loss -log sigmoid(r_c - r_r));
    * center: ((a_c + a_r) / 2)^2: the pair's mean advantage is 0, i.e. b(x) fits the
              expected reward of the prompt, so every task's scores centre at 0;
    * bound:  (relu(|a_c| - m)^2 + relu(|a_r| - m)^2) / 2: scores stay within +-m (m = bound).
    Returns the per-pair `loss` = rank + center_coef * center + bound_coef * bound, the
    three terms and the advantages `a_chosen`, `a_rejected`.
    """
    a_c = score_chosen - baseline
    a_r = score_rejected - baseline
    rank = -F.logsigmoid(a_c - a_r)
    center = ((a_c + a_r) / 2) ** 2
    over = (F.relu(a_c.abs() - bound) ** 2 + F.relu(a_r.abs() - bound) ** 2) / 2
    return {"loss": rank + center_coef * center + bound_coef * over, "rank": rank, "center": center,
            "bound": over, "a_chosen": a_c, "a_rejected": a_r}


def dpo_loss(pi_chosen: torch.Tensor, pi_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Per-pair DPO loss from summed response log-probs."""
    margin = (pi_chosen - ref_chosen) - (pi_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin)


# --------------------------------------------------------------------------- reward shaping


def adaptive_kl_coef(coef: float, observed_kl: float, *, target: float, horizon: int,
                     num_steps: int) -> float:
    """Ziegler et al. (2019) proportional controller: the coefficient for the next batch.

    error = clip(observed / target - 1, -0.2, 0.2); coef * (1 + error * num_steps / horizon),
    where num_steps counts the samples (sequences) the KL was measured on.
    """
    if target <= 0 or horizon < 1:
        raise ValueError(f"adaptive KL needs target > 0 and horizon >= 1, got {target}, {horizon}")
    error = min(max(observed_kl / target - 1.0, -0.2), 0.2)
    return coef * (1.0 + error * num_steps / horizon)


def sequence_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over sequences of the summed per-token k1 KL estimate on the masked tokens."""
    per_seq = torch.where(mask, logp - ref_logp, torch.zeros_like(logp)).sum(dim=1)
    return float(per_seq.double().mean()) if per_seq.numel() else 0.0


def merge_moments(count: float, mean: float, m2: float,
                  values: torch.Tensor) -> tuple[float, float, float]:
    """Running (count, mean, sum of squared deviations) after adding `values` (Chan et al.).

    Plain floats in and out, in float64, so the state is JSON-able and reproducible.
    """
    x = values.detach().double().flatten()
    n = float(x.numel())
    if n == 0:
        return count, mean, m2
    b_mean = float(x.mean())
    b_m2 = float(((x - b_mean) ** 2).sum())
    total = count + n
    delta = b_mean - mean
    return total, mean + delta * n / total, m2 + b_m2 + delta * delta * count * n / total


def normalize_rewards(rewards: torch.Tensor, mean: float, var: float,
                      eps: float = 1e-8) -> torch.Tensor:
    """(r - mean) / sqrt(var + eps), in the rewards' dtype."""
    return ((rewards.double() - mean) / math.sqrt(var + eps)).to(rewards.dtype)
