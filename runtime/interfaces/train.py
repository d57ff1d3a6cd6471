"""Train interfaces: sft, rw_pairwise, ppo_actor, ppo_critic, grpo_actor, remax_actor, dpo.

Every step goes through Megatron's pipeline schedule, DDP and distributed optimizer
(`runtime.pipeline.Trainer`). Losses are means over the WHOLE batch (tokens for token
losses, pairs or sequences for sequence losses): each micro-batch returns its loss sum
scaled by (micro-batches x dp / global units), which the schedule's 1/micro-batches and
DDP's 1/dp turn into the exact global mean -- the same at every layout.

Fields read from the batch (the executor maps data keys onto them):
`logprobs` (old policy), `ref_logprobs`, `values` (old critic values), `rewards` (sequence),
`baseline_rewards` (ReMax, sequence). Pairs are consecutive (chosen, rejected) sequences.
Returns the mean over optimizer steps of `loss` and the interface's statistics.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from graph.interfaces import (
    DPOArgs,
    GRPOActorArgs,
    OptimArgs,
    PPOActorArgs,
    PPOCriticArgs,
    ReMaxActorArgs,
    RewardPairwiseArgs,
    SFTArgs,
)
from runtime import rl_math, vocab_parallel
from runtime.batch import SeqBatch
from runtime.interfaces.dp import local_part
from runtime.interfaces.inference import last_token_scores, shifted_logprobs, shifted_values
from runtime.interfaces.registry import CallContext, register
from runtime.pipeline import Trainer, all_reduce_sum, micro_batch_split
from runtime.reward_variance import adjusted_group_rewards

Terms = Callable[[SeqBatch, torch.Tensor], dict[str, torch.Tensor]]
"""(micro-batch, output) -> summed terms; key 'loss' is optimised, the rest reported."""


def loss_mask(mb: SeqBatch) -> torch.Tensor:
    """Response tokens that have a prediction (position >= 1)."""
    return mb.response_mask() & (mb.positions() >= 1)


def _field(mb: SeqBatch, key: str, interface: str) -> torch.Tensor:
    if key in mb.token_fields:
        return mb.token_fields[key]
    if key in mb.seq_fields:
        return mb.seq_fields[key]
    raise ValueError(f"{interface}: the batch lacks field {key!r}; produce it with an earlier "
                     f"call (fields present: {sorted({**mb.token_fields, **mb.seq_fields})})")


def _trainer(engine: Any, args: OptimArgs, ctx: CallContext) -> Trainer:
    if not engine.spec.trainable:
        raise ValueError(f"model {engine.spec.role!r} is not trainable; set trainable: true")
    if engine.trainer is None:
        engine.trainer = Trainer(engine, args, total_steps=ctx.total_steps)
    return engine.trainer


def _step(engine: Any, trainer: Trainer, batch: SeqBatch, terms: Terms, args: OptimArgs, *,
          unit: int, count: Callable[[SeqBatch], int], micro_batches: int = 0) -> dict[str, float]:
    """One optimizer step on this replica's mini-batch; losses normalised globally."""
    total_units = float(all_reduce_sum(torch.tensor(float(count(batch))), engine.pgc.dp))
    if total_units == 0:
        raise ValueError("train step with no loss tokens: every response is empty")
    mbs = micro_batch_split(batch, micro_batches or engine.layout.micro_batches, unit=unit)
    scale = len(mbs) * engine.layout.dp / total_units

    def loss_fn(mb: SeqBatch, out: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        t = terms(mb, out)
        report = {k: (v.detach() / total_units).clone() for k, v in t.items()}
        return t["loss"] * scale, report

    return trainer.train_step(mbs, loss_fn, args)


def _train(engine: Any, batch: SeqBatch, args: OptimArgs, ctx: CallContext, terms: Terms, *,
           unit: int = 1, count: Callable[[SeqBatch], int] | None = None,
           epochs: int = 1, mini_batches: int = 1) -> dict[str, float]:
    """Optimizer steps over the FULL batch: mini-batches are cut from the whole batch (so
    they are the same at every layout), then each is split over data parallelism."""
    trainer = _trainer(engine, args, ctx)
    count = count or (lambda b: int(loss_mask(b).sum()))
    minis = batch.split(mini_batches, unit=unit) if mini_batches > 1 else [batch]
    history: list[dict[str, float]] = []
    for _ in range(epochs):
        for mini in minis:
            part = local_part(engine, mini, unit=unit)
            history.append(_step(engine, trainer, part, terms, args, unit=unit, count=count,
                                 micro_batches=ctx.micro_batches))
    out = {k: sum(h[k] for h in history) / len(history) for k in history[0]}
    out["steps"] = float(len(history))
    return out


def _lp(engine: Any, mb: SeqBatch, out: torch.Tensor) -> torch.Tensor:
    return shifted_logprobs(engine, mb, out)


@register("sft")
def sft(engine: Any, batch: SeqBatch, args: SFTArgs, ctx: CallContext) -> dict[str, float]:
    """Cross-entropy on response tokens (all tokens after the first when prompt_len is 0)."""

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = loss_mask(mb).to(out.device)
        return {"loss": rl_math.masked_sum(-_lp(engine, mb, out), mask)}

    return _train(engine, batch, args, ctx, terms)


def _pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[0::2], x[1::2]


@register("rw_pairwise")
def rw_pairwise(engine: Any, batch: SeqBatch, args: RewardPairwiseArgs,
                ctx: CallContext) -> dict[str, float]:
    """Bradley-Terry loss on (chosen, rejected) pairs scored at their last token."""
    if not engine.spec.value_head:
        raise ValueError(f"rw_pairwise needs a value head on model {engine.spec.role!r}")

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        chosen, rejected = _pairs(last_token_scores(mb, out))
        return {"loss": rl_math.bradley_terry_loss(chosen, rejected).sum(),
                "accuracy": (chosen > rejected).float().sum()}

    return _train(engine, batch, args, ctx, terms, unit=2, count=lambda b: b.size // 2)


@register("dpo")
def dpo(engine: Any, batch: SeqBatch, args: DPOArgs, ctx: CallContext) -> dict[str, float]:
    """DPO on (chosen, rejected) pairs; needs token field `ref_logprobs`."""

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = loss_mask(mb).to(out.device)
        zero = torch.zeros((), device=out.device)
        pi = torch.where(mask, _lp(engine, mb, out), zero).sum(dim=1)
        ref = torch.where(mask, _field(mb, "ref_logprobs", "dpo").to(out.device), zero).sum(dim=1)
        pc, pr = _pairs(pi)
        rc, rr = _pairs(ref)
        return {"loss": rl_math.dpo_loss(pc, pr, rc, rr, beta=args.beta).sum(),
                "accuracy": ((pc - rc) > (pr - rr)).float().sum()}

    return _train(engine, batch, args, ctx, terms, unit=2, count=lambda b: b.size // 2)


def ppo_targets(part: SeqBatch, *, kl_coef: float, gamma: float, lam: float,
                reward_clip: float, whiten: bool) -> SeqBatch:
    """Adds token fields `advantages` and `returns` (GAE on KL-penalised rewards), computed
    over the whole batch on every rank (cheap), so whitening needs no communication."""
    mask = loss_mask(part)
    old = _field(part, "logprobs", "ppo")
    ref = _field(part, "ref_logprobs", "ppo")
    rewards = rl_math.token_rewards(_field(part, "rewards", "ppo"), old, ref, mask,
                                    kl_coef=kl_coef, reward_clip=reward_clip)
    values = part.token_fields.get("values", torch.zeros_like(old))
    adv, ret = rl_math.gae(rewards, values, mask, gamma=gamma, lam=lam)
    if whiten:
        adv = rl_math.whiten(adv, mask)
    return part.with_fields(token_fields={"advantages": adv, "returns": ret})


def _policy_terms(engine: Any, eps_clip: float, kl_coef: float, kl_estimator: str,
                  entropy_coef: float) -> Terms:
    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = loss_mask(mb).to(out.device)
        lp = _lp(engine, mb, out)
        old = mb.token_fields["logprobs"].to(out.device)
        pg, clipped = rl_math.ppo_policy_loss(lp, old, mb.token_fields["advantages"].to(out.device),
                                              mask, eps_clip=eps_clip)
        result = {"pg_loss": pg.sum(), "clip_frac": clipped.float().sum()}
        loss = pg.sum()
        if kl_coef:
            ref = _field(mb, "ref_logprobs", "policy loss").to(out.device)
            kl = rl_math.masked_sum(rl_math.kl_estimate(lp, ref, kl_estimator), mask)
            result["kl"] = kl
            loss = loss + kl_coef * kl
        if entropy_coef:
            ent = vocab_parallel.entropy(out[:, :-1], engine.pgc.tp, vocab_size=engine.arch.vocab_size)
            ent = rl_math.masked_sum(torch.nn.functional.pad(ent, (1, 0)), mask)
            result["entropy"] = ent
            loss = loss - entropy_coef * ent
        result["loss"] = loss
        return result

    return terms


def _unsupported(interface: str, **flags: Any) -> None:
    on = [k for k, v in flags.items() if v]
    if on:
        raise ValueError(f"{interface}: {', '.join(on)} is not supported by this runtime yet; "
                         "leave it at its default")


@register("ppo_actor")
def ppo_actor(engine: Any, batch: SeqBatch, args: PPOActorArgs, ctx: CallContext) -> dict[str, float]:
    """PPO clipped-ratio update; KL in the reward or as a loss term; entropy bonus."""
    _unsupported("ppo_actor", adaptive_kl_target=args.adaptive_kl_target > 0,
                 normalize_reward=args.normalize_reward, ptx_coef=args.ptx_coef > 0)
    prepared = ppo_targets(batch, kl_coef=args.kl_coef if args.kl_in_reward else 0.0, gamma=args.gamma,
                       lam=args.lam, reward_clip=args.reward_clip, whiten=args.whiten_advantages)
    terms = _policy_terms(engine, args.eps_clip, 0.0 if args.kl_in_reward else args.kl_coef,
                          "k1", args.entropy_coef)
    return _train(engine, prepared, args, ctx, terms, epochs=args.ppo_epochs,
                  mini_batches=args.mini_batches)


@register("ppo_critic")
def ppo_critic(engine: Any, batch: SeqBatch, args: PPOCriticArgs, ctx: CallContext) -> dict[str, float]:
    """Clipped value loss toward GAE returns; needs `values`, `rewards`, `logprobs`, `ref_logprobs`."""
    if not engine.spec.value_head:
        raise ValueError(f"ppo_critic needs a value head on model {engine.spec.role!r}")

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = loss_mask(mb).to(out.device)
        v = shifted_values(out)
        loss = rl_math.clipped_value_loss(v, mb.token_fields["values"].to(out.device),
                                          mb.token_fields["returns"].to(out.device), mask,
                                          value_clip=args.value_clip)
        return {"loss": loss.sum()}

    prepared = ppo_targets(batch, kl_coef=args.kl_coef, gamma=args.gamma,
                       lam=args.lam, reward_clip=float("inf"), whiten=False)
    return _train(engine, prepared, args, ctx, terms, epochs=args.ppo_epochs,
                  mini_batches=args.mini_batches)


@register("grpo_actor")
def grpo_actor(engine: Any, batch: SeqBatch, args: GRPOActorArgs, ctx: CallContext) -> dict[str, float]:
    """GRPO: group-normalised sequence advantages, clipped ratio, KL loss to the reference."""
    prepared = batch
    rewards = _field(prepared, "rewards", "grpo_actor")
    if args.variance_increase:  # GRPOVI: raise each group's reward variance, same mean and order
        rewards = adjusted_group_rewards(rewards, args.group_size, args.reward_min, args.reward_max)
    adv_seq = rl_math.group_advantages(rewards, args.group_size)
    mask = loss_mask(prepared)
    adv = torch.where(mask, adv_seq[:, None].expand_as(mask), torch.zeros(mask.shape))
    prepared = prepared.with_fields(token_fields={"advantages": adv})
    terms = _policy_terms(engine, args.eps_clip, args.kl_coef, args.kl_estimator, 0.0)
    return _train(engine, prepared, args, ctx, terms, unit=args.group_size, epochs=args.ppo_epochs,
                  mini_batches=args.mini_batches)


@register("remax_actor")
def remax_actor(engine: Any, batch: SeqBatch, args: ReMaxActorArgs, ctx: CallContext) -> dict[str, float]:
    """ReMax: REINFORCE with the greedy response's reward (`baseline_rewards`) as baseline."""
    prepared = batch
    mask = loss_mask(prepared)
    old, ref = _field(prepared, "logprobs", "remax_actor"), _field(prepared, "ref_logprobs", "remax_actor")
    tok = rl_math.token_rewards(_field(prepared, "rewards", "remax_actor")
                                - _field(prepared, "baseline_rewards", "remax_actor"),
                                old, ref, mask, kl_coef=args.kl_coef)
    to_go = torch.flip(torch.cumsum(torch.flip(tok, [1]), 1), [1])
    prepared = prepared.with_fields(token_fields={"advantages": torch.where(mask, to_go, torch.zeros_like(to_go))})

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        m = loss_mask(mb).to(out.device)
        lp = _lp(engine, mb, out)
        return {"loss": rl_math.masked_sum(-lp * mb.token_fields["advantages"].to(out.device), m)}

    return _train(engine, prepared, args, ctx, terms)
