"""Pure math of the policy-gradient family: RLOO, REINFORCE++, GSPO, Dr. GRPO, DAPO.

Padded [B, T] tensors with masks, as in `runtime.interfaces.rl_math` (entry t belongs to
token t). Sequences of one group are consecutive runs of `group_size`. Every function is
unit-tested against numbers worked by hand or by a plain Python loop
(tests/runtime/interfaces/test_pg_math.py).

Sources:
- RLOO: Ahmadian et al. 2024, "Back to Basics: Revisiting REINFORCE Style Optimization for
  Learning from Human Feedback in LLMs" (arXiv 2402.14740): leave-one-out baseline.
- REINFORCE++: Hu 2025, "REINFORCE++: A Simple and Efficient Approach for Aligning Large
  Language Models" (arXiv 2501.03262): token-level KL penalty in the reward, return-to-go,
  global batch advantage normalisation (with a group-mean baseline for group_size > 1).
- GSPO: Zheng et al. 2025, "Group Sequence Policy Optimization" (arXiv 2507.18071):
  length-normalised sequence importance ratio, clipped per sequence.
- Dr. GRPO: Liu et al. 2025, "Understanding R1-Zero-Like Training: A Critical Perspective"
  (arXiv 2503.20783): advantage r - group mean (no std), loss summed over tokens and divided
  by a constant (the generation budget), not by each response's length.
- DAPO: Yu et al. 2025, "DAPO: An Open-Source LLM Reinforcement Learning System at Scale"
  (arXiv 2503.14476): clip-higher (eps_low, eps_high), token-level loss aggregation,
  soft overlong punishment, dynamic sampling (groups with equal rewards dropped).
"""

from __future__ import annotations

import torch

from graph.catalog import LOSS_AGGREGATIONS


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    if group_size < 1 or rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not form groups of {group_size}")
    return rewards.double().reshape(-1, group_size)


def rloo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RLOO: r_i minus the mean of the OTHER k-1 rewards of its group (k = group_size >= 2)."""
    if group_size < 2:
        raise ValueError(f"RLOO needs group_size >= 2, got {group_size}")
    g = _groups(rewards, group_size)
    others = (g.sum(dim=1, keepdim=True) - g) / (group_size - 1)
    return (g - others).reshape(-1).to(torch.float32)


def group_mean_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dr. GRPO: r_i minus its group's mean, with no division by the group's std."""
    g = _groups(rewards, group_size)
    return (g - g.mean(dim=1, keepdim=True)).reshape(-1).to(torch.float32)


def returns_to_go(token_rewards: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Undiscounted sum of the rewards from token t to the end of its row (0 off the mask)."""
    r = torch.where(mask, token_rewards, torch.zeros_like(token_rewards))
    to_go = torch.flip(torch.cumsum(torch.flip(r, [1]), 1), [1])
    return torch.where(mask, to_go, torch.zeros_like(to_go))


def reinforce_pp_advantages(seq_rewards: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor,
                            mask: torch.Tensor, *, kl_coef: float, group_size: int = 1,
                            eps: float = 1e-8) -> torch.Tensor:
    """REINFORCE++ token advantages.

    1. group_size > 1 (REINFORCE++-baseline): subtract each group's mean reward;
    2. per-token reward: -kl_coef * (logp - ref_logp) on every response token, plus the
       sequence reward on the row's last response token;
    3. A_t = sum of rewards from t to the end (gamma = 1);
    4. global normalisation: (A - mean) / std over every response token of the WHOLE batch
       (population std), not per group.
    """
    rewards = seq_rewards.double()
    if group_size > 1:
        g = _groups(rewards, group_size)
        rewards = (g - g.mean(dim=1, keepdim=True)).reshape(-1)
    tok = torch.where(mask, -kl_coef * (logp.double() - ref_logp.double()), torch.zeros(mask.shape, dtype=torch.float64))
    t = mask.shape[1]
    last = torch.where(mask, torch.arange(t).expand_as(mask), torch.zeros_like(mask, dtype=torch.long)).amax(dim=1)
    has = mask.any(dim=1)
    rows = torch.arange(mask.shape[0])
    tok[rows[has], last[has]] += rewards[has]
    adv = returns_to_go(tok, mask)
    n = mask.sum().clamp(min=1)
    mean = adv[mask].sum() / n
    var = ((adv - mean) ** 2)[mask].sum() / n
    out = torch.where(mask, (adv - mean) / torch.sqrt(var + eps), torch.zeros_like(adv))
    return out.to(torch.float32)


def overlong_penalty(response_lens: torch.Tensor, *, max_len: int, buffer: int,
                     penalty: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment, added to the sequence reward.

    0 for |y| <= max_len - buffer; falling linearly to -penalty over the buffer,
    ((max_len - buffer) - |y|) / buffer * penalty; -penalty beyond max_len.
    """
    if buffer < 1 or buffer > max_len:
        raise ValueError(f"overlong buffer must be in [1, max_len={max_len}], got {buffer}")
    lens = response_lens.double()
    soft = ((max_len - buffer) - lens) / buffer * penalty
    out = torch.where(lens <= max_len - buffer, torch.zeros_like(lens), soft)
    return torch.where(lens > max_len, torch.full_like(lens, -penalty), out).to(torch.float32)


def clipped_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                       mask: torch.Tensor, *, eps_low: float, eps_high: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) (DAPO's clip-higher when
    eps_high > eps_low), and whether each token was clipped."""
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    return torch.where(mask, loss, torch.zeros_like(loss)), (clipped < unclipped) & mask


def sequence_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GSPO's s_i = exp(mean over the response tokens of log(pi / pi_old)), one per row."""
    diff = torch.where(mask, logp - old_logp, torch.zeros_like(logp))
    return torch.exp(diff.sum(dim=1) / mask.sum(dim=1).clamp(min=1))


def gspo_sequence_loss(logp: torch.Tensor, old_logp: torch.Tensor, seq_advantages: torch.Tensor,
                       mask: torch.Tensor, *, eps_low: float, eps_high: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence -min(s A, clip(s, 1 - eps_low, 1 + eps_high) A) with GSPO's sequence
    ratio s, and whether each sequence was clipped; rows without response tokens give 0."""
    s = sequence_ratio(logp, old_logp, mask)
    unclipped = s * seq_advantages
    clipped = s.clamp(1 - eps_low, 1 + eps_high) * seq_advantages
    loss = -torch.minimum(unclipped, clipped)
    has = mask.any(dim=1)
    return torch.where(has, loss, torch.zeros_like(loss)), (clipped < unclipped) & has


def aggregate(token_loss: torch.Tensor, mask: torch.Tensor, mode: str, *, max_len: int = 0) -> torch.Tensor:
    """The summed loss of a micro-batch whose division by `units(mode, ...)` over the whole
    batch gives the aggregated loss:

    - token_mean (DAPO): sum over every response token / number of response tokens;
    - seq_mean_token_mean (GRPO's paper): mean over sequences of each one's token mean;
    - seq_mean_token_sum_norm (Dr. GRPO): mean over sequences of each one's token SUM
      divided by the constant `max_len` (the generation budget).
    """
    x = torch.where(mask, token_loss, torch.zeros_like(token_loss))
    if mode == "token_mean":
        return x.sum()
    if mode == "seq_mean_token_mean":
        per_seq = x.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        return per_seq.sum()
    if mode == "seq_mean_token_sum_norm":
        if max_len < 1:
            raise ValueError(f"seq_mean_token_sum_norm needs max_len >= 1, got {max_len}")
        return x.sum() / max_len
    raise ValueError(f"unknown loss aggregation {mode!r}; known: {', '.join(LOSS_AGGREGATIONS)}")


def units(mode: str, mask: torch.Tensor) -> int:
    """What `aggregate`'s sums are divided by: response tokens (token_mean) or sequences."""
    if mode == "token_mean":
        return int(mask.sum())
    if mode in LOSS_AGGREGATIONS:
        return int(mask.shape[0])
    raise ValueError(f"unknown loss aggregation {mode!r}; known: {', '.join(LOSS_AGGREGATIONS)}")


def varied_groups(rewards: torch.Tensor, group_size: int, *, tol: float = 0.0) -> torch.Tensor:
    """DAPO's dynamic-sampling filter: per group, whether its rewards are NOT all equal
    (max - min > tol). A group with equal rewards has zero advantage and no gradient."""
    g = _groups(rewards, group_size)
    return (g.amax(dim=1) - g.amin(dim=1)) > tol
