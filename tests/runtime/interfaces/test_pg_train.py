"""pg_actor (RLOO, REINFORCE++, GSPO, Dr. GRPO, DAPO) on the bigram stand-in engine of
test_train: the loss and the gradient the optimizer sees against objectives written out
by hand, token by token."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from graph.catalog import PGActorArgs
from runtime.interfaces import CallContext, run_interface
from runtime.interfaces.train import loss_mask
from tests.runtime.interfaces.test_train import RL_PROMPTS, RL_SEQS, _BigramEngine, _rl_batch

N = [len(s) - p for s, p in zip(RL_SEQS, RL_PROMPTS)]  # response tokens: 3, 2, 3, 2


def _logp(table: torch.Tensor, i: int) -> torch.Tensor:
    """Summed log-probs of sequence i's response tokens under the bigram table."""
    s, p = RL_SEQS[i], RL_PROMPTS[i]
    return sum(torch.log_softmax(table[s[t - 1]], -1)[s[t]] for t in range(p, len(s)))


def _check(engine: _BigramEngine, objective, want_loss: float, out: dict[str, float]) -> None:
    table = engine.table.detach().clone().requires_grad_(True)
    obj = objective(table)
    assert float(obj.detach()) == pytest.approx(want_loss, abs=1e-5)
    obj.backward()
    step = engine.trainer.steps[0]
    assert out["pg_loss"] == pytest.approx(want_loss, abs=1e-5)
    assert step["objective"] == pytest.approx(want_loss, abs=1e-5)
    assert torch.allclose(step["grad"], table.grad, atol=1e-6)


def test_rloo_with_the_kl_in_the_reward_by_hand() -> None:
    engine = _BigramEngine(micro_batches=2)
    rewards = [1.0, 0.0, 0.0, 2.0]
    batch = _rl_batch(engine, rewards)
    mask = loss_mask(batch)
    ref = torch.where(mask, batch.token_fields["logprobs"] - 0.1, 0.0)  # k1 KL 0.1 per token
    batch = batch.with_fields(token_fields={"ref_logprobs": ref})
    args = PGActorArgs(group_size=2, advantage="rloo", kl_in_reward=True, kl_coef=0.5,
                       loss_agg="seq_mean_token_mean")
    out = run_interface("pg_actor", engine, batch, args, CallContext())
    shaped = [r - 0.5 * 0.1 * n for r, n in zip(rewards, N)]  # 0.85, -0.1, -0.15, 1.9
    adv = [shaped[0] - shaped[1], shaped[1] - shaped[0], shaped[2] - shaped[3], shaped[3] - shaped[2]]
    # ratio 1: the loss is -mean_i A_i; the gradient that of -mean_i A_i * (sum_t logp) / n_i
    want = -sum(adv) / 4
    base = [float(_logp(engine.table.detach(), i)) for i in range(4)]
    _check(engine, lambda tb: -sum(a * (_logp(tb, i) - base[i] + n) / n
                                   for i, (a, n) in enumerate(zip(adv, N))) / 4, want, out)
    assert out["ref_kl"] == pytest.approx(sum(0.1 * n for n in N) / 4)


def test_dr_grpo_divides_token_sums_by_the_budget() -> None:
    engine = _BigramEngine()
    rewards = [1.0, 0.0, 3.0, 1.0]
    batch = _rl_batch(engine, rewards)
    args = PGActorArgs(group_size=2, advantage="group_mean", loss_agg="seq_mean_token_sum_norm",
                       max_response_len=5)
    out = run_interface("pg_actor", engine, batch, args, CallContext())
    adv = [0.5, -0.5, 1.0, -1.0]  # r - group mean, no std
    want = -sum(a * n for a, n in zip(adv, N)) / (4 * 5)  # ratio 1: each token contributes -A
    base = [float(_logp(engine.table.detach(), i)) for i in range(4)]
    _check(engine, lambda tb: -sum(a * (_logp(tb, i) - base[i] + n) for i, (a, n) in enumerate(zip(adv, N))) / 20,
           want, out)


def test_dapo_overlong_shaping_and_token_mean_by_hand() -> None:
    engine = _BigramEngine(micro_batches=2)
    rewards = [1.0, 1.0, 0.0, 1.0]
    batch = _rl_batch(engine, rewards)
    # budget 3, buffer 1: the 3-token responses (0 and 2) pay the full 0.5, the 2-token ones nothing
    args = PGActorArgs(group_size=2, advantage="grpo", loss_agg="token_mean", eps_low=0.2, eps_high=0.28,
                       max_response_len=3, overlong_buffer=1, overlong_penalty=0.5)
    out = run_interface("pg_actor", engine, batch, args, CallContext())
    shaped = [0.5, 1.0, -0.5, 1.0]
    adv = []
    for g in range(2):
        pair = shaped[2 * g:2 * g + 2]
        m, s = statistics.mean(pair), statistics.stdev(pair)
        adv += [(x - m) / (s + 1e-6) for x in pair]
    want = -sum(a * n for a, n in zip(adv, N)) / sum(N)
    base = [float(_logp(engine.table.detach(), i)) for i in range(4)]
    _check(engine, lambda tb: -sum(a * (_logp(tb, i) - base[i] + n) for i, (a, n) in enumerate(zip(adv, N))) / sum(N),
           want, out)
    assert out["overlong_penalty"] == pytest.approx(-0.25)


def test_gspo_clips_a_whole_sequence_by_hand() -> None:
    engine = _BigramEngine()
    rewards = [1.0, 0.0, 0.0, 1.0]
    batch = _rl_batch(engine, rewards)
    mask = loss_mask(batch)
    # sequence 0 was sampled by a policy 0.5 nats per token less likely: s_0 = e^0.5, clipped
    old = batch.token_fields["logprobs"].clone()
    old[0] = torch.where(mask[0], old[0] - 0.5, 0.0)
    batch = batch.with_fields(token_fields={"logprobs": old})
    args = PGActorArgs(group_size=2, advantage="grpo", ratio="sequence", loss_agg="seq_mean_token_mean",
                       eps_low=3e-4, eps_high=4e-4)
    out = run_interface("pg_actor", engine, batch, args, CallContext())
    a = 0.5 / (math.sqrt(0.5) + 1e-6)  # (1 - mean 0.5) / the group's std sqrt(1/2)
    adv = [a, -a, -a, a]
    # row 0: -min(e^0.5 a, 1.0004 a) = -1.0004 a, no gradient; rows 1-3: s = 1, -A_i
    want = (-1.0004 * a + a + a - a) / 4
    base = [float(_logp(engine.table.detach(), i)) for i in range(4)]

    def objective(tb: torch.Tensor) -> torch.Tensor:
        total = torch.tensor(-1.0004 * a)
        for i in (1, 2, 3):  # s_i = exp((logp_i - old_i) / n_i), equal to 1 here
            total = total - adv[i] * torch.exp((_logp(tb, i) - base[i]) / N[i])
        return total / 4

    _check(engine, objective, want, out)
    assert out["clip_frac"] == pytest.approx(0.25)


def test_reinforce_pp_token_advantages_reach_the_loss() -> None:
    engine = _BigramEngine()
    rewards = [1.0, 0.0, 0.5, 2.0]
    batch = _rl_batch(engine, rewards)
    args = PGActorArgs(group_size=1, advantage="reinforce_pp", kl_in_reward=True, kl_coef=0.1)
    out = run_interface("pg_actor", engine, batch, args, CallContext())
    # ref == old: no KL; every token of row i carries r_i, normalised over the 10 tokens
    flat = [r for r, n in zip(rewards, N) for _ in range(n)]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((x - mean) ** 2 for x in flat) / len(flat))
    adv = [(r - mean) / std for r in rewards]
    want = -sum(a * n for a, n in zip(adv, N)) / sum(N)  # = 0: normalised advantages sum to 0
    base = [float(_logp(engine.table.detach(), i)) for i in range(4)]
    _check(engine, lambda tb: -sum(a * (_logp(tb, i) - base[i] + n) for i, (a, n) in enumerate(zip(adv, N))) / sum(N),
           want, out)


def test_bad_options_name_the_key() -> None:
    with pytest.raises(ValueError, match="advantage must be one of"):
        PGActorArgs(group_size=2, advantage="ppo")
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        PGActorArgs(group_size=1, advantage="rloo")
    with pytest.raises(ValueError, match="max_response_len"):
        PGActorArgs(group_size=2, loss_agg="seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="expected_sampling_rounds"):
        PGActorArgs(group_size=2, dynamic_sampling=True, max_sampling_rounds=2, expected_sampling_rounds=3.0)
