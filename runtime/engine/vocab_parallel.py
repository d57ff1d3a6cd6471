"""Log-probabilities and entropy from vocab-parallel logits, with the model's own TP group.

Each TP rank holds logits for a contiguous slice of the (padded) vocabulary. Sums over the
vocabulary are all-reduced in the given group with Megatron's `reduce_from` mapping
(forward all-reduce, backward identity), so gradients are exact. Entries of the padded
vocabulary (id >= true vocab size) are masked out.
"""

from __future__ import annotations

from typing import Any

import torch


def _reduce(x: torch.Tensor, group: Any) -> torch.Tensor:
    from megatron.core.tensor_parallel.mappings import reduce_from_tensor_model_parallel_region

    if group is None or group.size() == 1:
        return x
    return reduce_from_tensor_model_parallel_region(x, group=group)


def _max(x: torch.Tensor, group: Any) -> torch.Tensor:
    m = x.detach().amax(dim=-1)
    if group is not None and group.size() > 1:
        torch.distributed.all_reduce(m, op=torch.distributed.ReduceOp.MAX, group=group)
    return m


def _rank(group: Any) -> int:
    return 0 if group is None else group.rank()


def mask_padded_vocab(logits: torch.Tensor, vocab_size: int, group: Any) -> torch.Tensor:
    """Set logits of padded vocabulary entries to -inf (no-op when nothing is padded)."""
    local = logits.shape[-1]
    start = _rank(group) * local
    if start + local <= vocab_size:
        return logits
    ids = torch.arange(start, start + local, device=logits.device)
    return logits.masked_fill(ids >= vocab_size, float("-inf"))


def log_softmax_stats(logits: torch.Tensor, group: Any) -> torch.Tensor:
    """log-sum-exp over the whole vocabulary, [...]."""
    m = _max(logits, group)
    sum_exp = _reduce(torch.exp(logits - m.unsqueeze(-1)).sum(dim=-1), group)
    return m + torch.log(sum_exp)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, group: Any, *,
                   vocab_size: int, temperature: float = 1.0) -> torch.Tensor:
    """log p(target) for every position: logits [..., V/tp], targets [...] (global ids).
    Without TP (one rank holds the whole vocabulary) it is torch's fused log-softmax."""
    if group is None or group.size() == 1:
        whole = logits[..., :vocab_size].float() / temperature
        return torch.log_softmax(whole, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    logits = mask_padded_vocab(logits.float() / temperature, vocab_size, group)
    local = logits.shape[-1]
    start = _rank(group) * local
    in_range = (targets >= start) & (targets < start + local)
    local_ids = (targets - start).clamp(0, local - 1)
    picked = torch.gather(logits, -1, local_ids.unsqueeze(-1)).squeeze(-1)
    picked = _reduce(picked * in_range, group)
    return picked - log_softmax_stats(logits, group)


def entropy(logits: torch.Tensor, group: Any, *, vocab_size: int) -> torch.Tensor:
    """Entropy of the softmax over the whole vocabulary at every position."""
    logits = mask_padded_vocab(logits.float(), vocab_size, group)
    lse = log_softmax_stats(logits, group)
    probs = torch.exp(logits - lse.unsqueeze(-1))
    finite = logits.masked_fill(torch.isinf(logits), 0.0)  # 0 * -inf would poison gradients
    weighted = (probs * finite).sum(dim=-1)
    return lse - _reduce(weighted, group)


def gather_vocab(logits: torch.Tensor, group: Any, *, vocab_size: int) -> torch.Tensor:
    """Full-vocabulary logits on every TP rank (no gradient), padding removed."""
    if group is not None and group.size() > 1:
        parts = [torch.empty_like(logits) for _ in range(group.size())]
        torch.distributed.all_gather(parts, logits.contiguous(), group=group)
        logits = torch.cat(parts, dim=-1)
    return logits[..., :vocab_size]
