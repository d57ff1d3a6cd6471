"""Tests of runtime/interfaces/train.py that need no Megatron model (the training itself is
checked layout against layout in tests/runtime/engine/test_model_engine.py).

`_BigramEngine` stands in for an engine: its "model" is a learnable table of next-token
logits (logits at position t = table[token t]), and its trainer does what Megatron's
schedule does with a loss function (each micro-batch's loss divided by the number of
micro-batches, summed, backward; reports summed), recording every step. So the loss the
optimizer sees, and its gradient, can be checked against formulas worked by hand.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from graph.catalog import PPOActorArgs, PPOCriticArgs
from runtime.data.batch import SeqBatch
from runtime.interfaces import CallContext, run_interface
from runtime.interfaces.train import _field, loss_mask, shape_rewards

VOCAB = 7


class _Trainer:
    def __init__(self, engine: _BigramEngine) -> None:
        self.engine = engine
        self.steps: list[dict[str, Any]] = []

    def train_step(self, mbs: list[SeqBatch], loss_fn: Any, args: Any) -> dict[str, float]:
        table = self.engine.table
        table.grad = None
        total = torch.zeros(())
        reports: dict[str, float] = {}
        for mb in mbs:
            loss, rep = loss_fn(mb, self.engine.forward(mb))
            total = total + loss / len(mbs)
            for k, v in rep.items():
                reports[k] = reports.get(k, 0.0) + float(v)
        total.backward()
        self.steps.append({"ids": [list(mb.ids) for mb in mbs], "grad": table.grad.clone(),
                           "objective": float(total.detach())})
        return reports


class _BigramEngine:
    def __init__(self, *, value_head: bool = False, micro_batches: int = 1, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        width = 1 if value_head else VOCAB
        self.table = torch.randn(VOCAB, width, generator=g).requires_grad_(True)
        self.spec = SimpleNamespace(trainable=True, value_head=value_head, role="critic" if value_head else "actor")
        self.arch = SimpleNamespace(vocab_size=VOCAB)
        self.layout = SimpleNamespace(dp=1, micro_batches=micro_batches)
        self.pgc = SimpleNamespace(dp=None, tp=None)
        self.state: dict[str, Any] = {}
        self.trainer = _Trainer(self)

    def forward(self, mb: SeqBatch) -> torch.Tensor:
        return self.table[mb.input_ids]

    def logprobs(self, batch: SeqBatch) -> torch.Tensor:
        """log p(token t | token t-1) at every t >= 1 (0 at t = 0), without gradient."""
        with torch.no_grad():
            lp = torch.log_softmax(self.table[batch.input_ids[:, :-1]], -1)
            picked = lp.gather(-1, batch.input_ids[:, 1:, None])[..., 0]
        return torch.nn.functional.pad(picked, (1, 0))


RL_SEQS = ([1, 2, 3, 4, 5], [2, 6, 1], [3, 3, 0, 2, 6, 5], [4, 1, 2, 2])
RL_PROMPTS = [2, 1, 3, 2]
PTX_SEQS = ([5, 4, 3, 2], [1, 6], [2, 2, 4, 1, 3])
PTX_PROMPTS = [1, 1, 2]


def _rl_batch(engine: _BigramEngine, rewards: list[float]) -> SeqBatch:
    b = SeqBatch.from_lists([list(s) for s in RL_SEQS], RL_PROMPTS)
    old = torch.where(loss_mask(b), engine.logprobs(b), 0.0)
    return b.with_fields(token_fields={"logprobs": old, "ref_logprobs": old.clone(),
                                       "values": torch.zeros_like(old)},
                         seq_fields={"rewards": torch.tensor(rewards)})


def test_loss_mask_skips_prompt_padding_and_position_zero() -> None:
    b = SeqBatch.from_lists([[1, 2, 3], [4, 5]], [1, 0])
    assert loss_mask(b).tolist() == [[False, True, True], [False, True, False]]


def test_missing_field_is_named() -> None:
    b = SeqBatch.from_lists([[1, 2, 3]], [1])
    with pytest.raises(ValueError, match="lacks field 'ref_logprobs'"):
        _field(b, "ref_logprobs", "dpo")


def test_ptx_mixed_loss_and_gradient_by_hand() -> None:
    """ratio 1, no KL, gamma = lam = 1, zero values: every response token's advantage is its
    sequence's reward, so the PPO loss is -sum_i R_i n_i / sum_i n_i; the ptx loss is the mean
    cross-entropy of the ptx answer tokens. Two micro-batches of unequal token counts."""
    engine = _BigramEngine(micro_batches=2)
    rewards = [1.0, -2.0, 0.5, 3.0]
    batch = _rl_batch(engine, rewards)
    ptx = SeqBatch.from_lists([list(s) for s in PTX_SEQS], PTX_PROMPTS)
    coef = 0.7
    args = PPOActorArgs(kl_coef=0.0, gamma=1.0, lam=1.0, whiten_advantages=False, ptx_coef=coef,
                        reward_clip=100.0)
    out = run_interface("ppo_actor", engine, batch, args, CallContext(side_inputs={"ptx": ptx}))

    n = [len(s) - p for s, p in zip(RL_SEQS, RL_PROMPTS)]  # response tokens: 3, 2, 3, 2
    pg = -sum(r * k for r, k in zip(rewards, n)) / sum(n)
    table = engine.table.detach()
    ce = [-math.log(torch.softmax(table[s[t - 1]], -1)[s[t]].item())
          for s, p in zip(PTX_SEQS, PTX_PROMPTS) for t in range(p, len(s))]
    ptx_mean = sum(ce) / len(ce)
    assert out["pg_loss"] == pytest.approx(pg, abs=1e-6)
    assert out["ptx_loss"] == pytest.approx(ptx_mean, abs=1e-6)
    assert out["loss"] == pytest.approx(pg + coef * ptx_mean, abs=1e-6)
    step = engine.trainer.steps[0]
    assert step["objective"] == pytest.approx(pg + coef * ptx_mean, abs=1e-6)
    assert len(step["ids"]) == 4  # 2 PPO + 2 ptx micro-batches

    # the gradient the optimizer sees: d/dtable of -sum(A logp)/N_rl + coef * sum(-logp)/N_ptx
    table = engine.table.detach().clone().requires_grad_(True)
    obj = torch.zeros(())
    for s, p, r in zip(RL_SEQS, RL_PROMPTS, rewards):
        for t in range(p, len(s)):
            obj = obj - r * torch.log_softmax(table[s[t - 1]], -1)[s[t]] / sum(n)
    for s, p in zip(PTX_SEQS, PTX_PROMPTS):
        for t in range(p, len(s)):
            obj = obj - coef * torch.log_softmax(table[s[t - 1]], -1)[s[t]] / len(ce)
    obj.backward()
    assert torch.allclose(step["grad"], table.grad, atol=1e-6)


def test_epochs_and_mini_batches_step_over_each_mini_batch_per_epoch() -> None:
    engine = _BigramEngine()
    batch = _rl_batch(engine, [1.0, 0.0, 1.0, 0.0])
    ptx = SeqBatch.from_lists([list(s) for s in PTX_SEQS] + [[1, 2, 3]], PTX_PROMPTS + [1],
                              ids=[10, 11, 12, 13])
    args = PPOActorArgs(ppo_epochs=3, mini_batches=2, ptx_coef=0.1)
    out = run_interface("ppo_actor", engine, batch, args, CallContext(side_inputs={"ptx": ptx}))
    steps = engine.trainer.steps
    assert out["steps"] == 6 and len(steps) == 6
    for epoch in range(3):
        seen = [i for s in steps[2 * epoch:2 * epoch + 2] for mb in s["ids"] for i in mb]
        assert sorted(seen) == [0, 1, 2, 3, 10, 11, 12, 13]  # each epoch: every sequence once
    # mini-batches are the same in every epoch: two sequences of each kind per step
    assert [s["ids"] for s in steps[:2]] == [s["ids"] for s in steps[2:4]]
    assert all(sum(len(mb) for mb in s["ids"]) == 4 for s in steps)


def test_ptx_coef_without_ptx_input_raises() -> None:
    engine = _BigramEngine()
    with pytest.raises(ValueError, match="ptx_coef=0.5 but the call has no ptx input"):
        run_interface("ppo_actor", engine, _rl_batch(engine, [1.0] * 4), PPOActorArgs(ptx_coef=0.5))


def _kl_batch(shift: float, rewards: list[float]) -> SeqBatch:
    b = SeqBatch.from_lists([list(s) for s in RL_SEQS], RL_PROMPTS)
    mask = loss_mask(b)
    old = torch.where(mask, torch.full(mask.shape, -1.0), 0.0)
    return b.with_fields(token_fields={"logprobs": old, "ref_logprobs": old - shift,
                                       "values": torch.zeros(mask.shape)},
                         seq_fields={"rewards": torch.tensor(rewards)})


def test_adaptive_kl_controller_by_hand() -> None:
    """KL per token = shift; 10 response tokens over 4 sequences -> measured KL 2.5 * shift."""
    args = PPOActorArgs(kl_coef=0.1, adaptive_kl_target=1.0, adaptive_kl_horizon=20)
    state: dict[str, Any] = {}
    coefs = []
    for shift in (0.8, 0.4, 0.41):  # KL 2.0 (error +0.2), 1.0 (0), 1.025 (+0.025)
        _, stats = shape_rewards(state, _kl_batch(shift, [0.0] * 4), args)
        coefs.append(stats["kl_coef"])
        assert stats["ref_kl"] == pytest.approx(2.5 * shift)
    c1 = 0.1 * (1 + 0.2 * 4 / 20)
    c3 = c1 * (1 + 0.025 * 4 / 20)
    assert coefs == pytest.approx([0.1, c1, c1])
    assert state["ppo/kl_coef"] == pytest.approx(c3)
    assert all(isinstance(v, float) for v in state.values())  # JSON-able plain floats


def test_reward_normalisation_and_clip_by_hand() -> None:
    args = PPOActorArgs(kl_coef=0.0, normalize_reward=True, reward_clip=1.0)
    state: dict[str, Any] = {}
    shape_rewards(state, _kl_batch(0.0, [1.0, 2.0, 3.0, 4.0]), args)
    rewards, stats = shape_rewards(state, _kl_batch(0.0, [5.0, 6.0, 7.0, 8.0]), args)
    # running over 1..8: mean 4.5, population variance 5.25
    assert stats["reward_running_mean"] == pytest.approx(4.5)
    assert stats["reward_running_std"] == pytest.approx(math.sqrt(5.25))
    z = [(r - 4.5) / math.sqrt(5.25) for r in (5.0, 6.0, 7.0, 8.0)]
    want = [min(v, 1.0) for v in z]  # 0.218, 0.655, 1.091 -> 1, 1.528 -> 1
    last = [3 + 2 - 1, 1 + 2 - 1, 3 + 3 - 1, 2 + 2 - 1]  # index of each last response token
    assert [rewards[i, t].item() for i, t in enumerate(last)] == pytest.approx(want, abs=1e-6)
    assert float(rewards.abs().sum()) == pytest.approx(sum(abs(w) for w in want), abs=1e-6)


def test_actor_and_critic_shape_rewards_alike_on_their_own_engines() -> None:
    """Each engine keeps its own controller/normaliser state; fed the same batches with the
    same shared args they agree at every iteration (the critic's targets use the actor's
    coefficient and normalised rewards)."""
    shared = {"kl_coef": 0.2, "adaptive_kl_target": 0.5, "adaptive_kl_horizon": 8,
              "normalize_reward": True, "reward_clip": 1.5, "gamma": 0.9, "lam": 0.8}
    actor, critic = _BigramEngine(seed=1), _BigramEngine(value_head=True, seed=2)
    for it, shift in enumerate((0.3, 0.05, 0.2)):
        rewards = [float(it), 1.0 - it, 2.0, -1.0]
        batch = _kl_batch(shift, rewards)
        a = run_interface("ppo_actor", actor, batch, PPOActorArgs(**shared))
        c = run_interface("ppo_critic", critic, batch, PPOCriticArgs(**shared))
        assert a["kl_coef"] == c["kl_coef"]
        assert actor.state == critic.state
    assert actor.state["ppo/kl_coef"] != 0.2 and actor.state["ppo/reward_count"] == 12.0


def test_kl_as_loss_uses_the_controlled_coefficient() -> None:
    engine = _BigramEngine()
    engine.state["ppo/kl_coef"] = 0.3
    batch = _rl_batch(engine, [0.0] * 4)
    ref = batch.token_fields["logprobs"] - 0.5 * loss_mask(batch).float()
    batch = batch.with_fields(token_fields={"ref_logprobs": ref})
    out = run_interface("ppo_actor", engine, batch,
                        PPOActorArgs(kl_in_reward=False, adaptive_kl_target=1.0, whiten_advantages=False))
    # zero rewards and values: no policy gradient term; the k1 KL per token is 0.5
    assert out["kl_coef"] == 0.3 and out["kl"] == pytest.approx(0.5, abs=1e-6)
    assert out["loss"] == pytest.approx(0.3 * 0.5, abs=1e-6)


def _entropy(row: torch.Tensor) -> float:
    p = torch.softmax(row, -1)
    return float(-(p * torch.log(p)).sum())


def test_entropy_bonus_by_hand() -> None:
    """Zero rewards and values, no KL: the loss is -entropy_coef x the mean entropy of the
    next-token distribution over the response tokens."""
    engine = _BigramEngine()
    out = run_interface("ppo_actor", engine, _rl_batch(engine, [0.0] * 4),
                        PPOActorArgs(kl_coef=0.0, entropy_coef=0.25, whiten_advantages=False))
    table = engine.table.detach()
    ents = [_entropy(table[s[t - 1]]) for s, p in zip(RL_SEQS, RL_PROMPTS) for t in range(p, len(s))]
    assert out["entropy"] == pytest.approx(sum(ents) / len(ents), abs=1e-6)
    assert out["loss"] == pytest.approx(-0.25 * sum(ents) / len(ents), abs=1e-6)


def test_whitened_advantages_by_hand() -> None:
    """gamma = lam = 1, zero values: A = R on each response token; whitened over the 10 tokens,
    (A - mean) / std. At ratio 1 the loss is -mean(whitened A) = 0 and its gradient is
    -sum_t Aw_t grad logp_t / 10."""
    engine = _BigramEngine()
    rewards = [1.0, -2.0, 0.5, 3.0]
    out = run_interface("ppo_actor", engine, _rl_batch(engine, rewards),
                        PPOActorArgs(kl_coef=0.0, gamma=1.0, lam=1.0, reward_clip=100.0))
    tokens = [(s, t, r) for s, p, r in zip(RL_SEQS, RL_PROMPTS, rewards) for t in range(p, len(s))]
    adv = [r for _, _, r in tokens]
    mean = sum(adv) / len(adv)
    std = math.sqrt(sum((a - mean) ** 2 for a in adv) / len(adv))
    assert out["pg_loss"] == pytest.approx(0.0, abs=1e-6)
    table = engine.table.detach().clone().requires_grad_(True)
    obj = sum(-(r - mean) / std * torch.log_softmax(table[s[t - 1]], -1)[s[t]] for s, t, r in tokens)
    (obj / len(tokens)).backward()
    assert torch.allclose(engine.trainer.steps[0]["grad"], table.grad, atol=1e-5)


def test_policy_loss_at_a_sampling_temperature_by_hand() -> None:
    """GRPO at T = 0.5: samples drawn at T carry old log-probs log softmax(table / T), so the
    ratio is 1 (no clipping) and pg_loss = -mean(A); the k3 KL to a uniform reference and the
    gradient are those of log softmax(table / T). At T = 1 the ratio would not be 1."""
    from graph.catalog import GRPOActorArgs

    temp, kl_coef = 0.5, 0.3
    engine = _BigramEngine(seed=3)
    b = SeqBatch.from_lists([list(s) for s in RL_SEQS], RL_PROMPTS)
    mask = loss_mask(b)
    with torch.no_grad():
        lp_t = torch.log_softmax(engine.table[b.input_ids[:, :-1]] / temp, -1).gather(-1, b.input_ids[:, 1:, None])
    old = torch.where(mask, torch.nn.functional.pad(lp_t[..., 0], (1, 0)), 0.0)
    ref = torch.where(mask, torch.full_like(old, -math.log(VOCAB)), 0.0)  # a uniform reference
    batch = b.with_fields(token_fields={"logprobs": old, "ref_logprobs": ref},
                          seq_fields={"rewards": torch.tensor([1.0, 0.0, 0.0, 1.0])})
    args = GRPOActorArgs(group_size=2, kl_coef=kl_coef, kl_estimator="k3", temperature=temp)
    out = run_interface("grpo_actor", engine, batch, args)

    a = 1 / math.sqrt(0.5) * 0.5  # (r - group mean) / unbiased group std, groups (1, 0), (0, 1)
    adv = [a, -a, -a, a]
    table = engine.table.detach()
    tokens = [(s, t, adv[i]) for i, (s, p) in enumerate(zip(RL_SEQS, RL_PROMPTS)) for t in range(p, len(s))]

    def logp(tab: torch.Tensor, s: tuple[int, ...], t: int) -> torch.Tensor:
        return torch.log_softmax(tab[s[t - 1]] / temp, -1)[s[t]]

    kls = [math.exp(-math.log(VOCAB) - float(logp(table, s, t))) + math.log(VOCAB) + float(logp(table, s, t)) - 1
           for s, t, _ in tokens]
    assert out["clip_frac"] == 0.0
    assert out["pg_loss"] == pytest.approx(-sum(x for _, _, x in tokens) / len(tokens), abs=1e-5)
    assert out["kl"] == pytest.approx(sum(kls) / len(kls), abs=1e-6)
    assert out["loss"] == pytest.approx(out["pg_loss"] + kl_coef * sum(kls) / len(kls), abs=1e-5)
    # gradient: d/dtable mean_t [-A_t exp(lp_t - old_t) + kl_coef * k3(lp_t, ref)], lp at T
    tab = table.clone().requires_grad_(True)
    obj = torch.zeros(())
    for s, t, x in tokens:
        lp, lp_old = logp(tab, s, t), float(logp(table, s, t))
        log_r = -math.log(VOCAB) - lp
        obj = obj - x * torch.exp(lp - lp_old) + kl_coef * (torch.exp(log_r) - 1 - log_r)
    (obj / len(tokens)).backward()
    assert torch.allclose(engine.trainer.steps[0]["grad"], tab.grad, atol=1e-5)
