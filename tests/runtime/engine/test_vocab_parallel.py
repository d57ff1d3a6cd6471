"""Tests of runtime/vocab_parallel.py on one rank (group None) against torch."""

from __future__ import annotations

import torch

from runtime.engine import vocab_parallel


def test_token_logprobs_and_entropy_match_torch() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    targets = torch.randint(0, 11, (2, 5))
    lp = vocab_parallel.token_logprobs(logits, targets, None, vocab_size=11, temperature=0.7)
    ref = torch.log_softmax(logits / 0.7, -1).gather(-1, targets[..., None])[..., 0]
    assert torch.allclose(lp, ref, atol=1e-6)
    ent = vocab_parallel.entropy(logits, None, vocab_size=11)
    p = torch.softmax(logits, -1)
    assert torch.allclose(ent, -(p * torch.log(p)).sum(-1), atol=1e-5)


def test_padded_vocab_is_ignored_and_gradients_stay_finite() -> None:
    logits = torch.randn(3, 12, requires_grad=True)  # vocab 10 padded to 12
    targets = torch.tensor([1, 9, 0])
    lp = vocab_parallel.token_logprobs(logits, targets, None, vocab_size=10)
    ref = torch.log_softmax(logits[:, :10], -1).gather(-1, targets[:, None])[:, 0]
    assert torch.allclose(lp, ref, atol=1e-6)
    (lp.sum() + vocab_parallel.entropy(logits, None, vocab_size=10).sum()).backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad[:, 10:].abs().sum()) == 0.0
