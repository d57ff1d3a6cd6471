"""The `pg_actor` train interface: the critic-free policy-gradient family by options.

One interface covers RLOO, REINFORCE++, GSPO, Dr. GRPO and DAPO (the templates of the same
names preset its arguments; sources in `runtime.interfaces.pg_math`). Per iteration:

1. shape the sequence rewards, on the WHOLE batch on every rank (cheap, no communication,
   the same at every layout): DAPO's overlong punishment, then with `kl_in_reward` (RLOO)
   minus kl_coef x the sequence's summed k1 KL to the reference;
2. advantages: grpo (group mean/std), rloo (leave-one-out), group_mean (Dr. GRPO), or
   reinforce_pp (per-token KL reward, return-to-go, global normalisation);
3. optimise the clipped objective with eps_low / eps_high, per token or per sequence
   (GSPO's length-normalised ratio), aggregated per `loss_agg`, plus a KL loss term when
   the KL is not in the reward.

Dynamic sampling (DAPO) happens before this call, in the executor
(`runtime.execution.sampling`): the batch this call sees holds only groups with varied
rewards (unless the refill ran out of rounds and topped up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from graph.catalog import PGActorArgs
from runtime.data.batch import SeqBatch
from runtime.interfaces import pg_math, rl_math
from runtime.interfaces.registry import CallContext, register
from runtime.interfaces.train import Terms, _field, _lp, _train, loss_mask

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine


def shaped_rewards(batch: SeqBatch, args: PGActorArgs) -> tuple[torch.Tensor, dict[str, float]]:
    """Sequence rewards after the overlong punishment and (RLOO-style) the sequence KL."""
    mask = loss_mask(batch)
    rewards = _field(batch, "rewards", "pg_actor").double()
    stats: dict[str, float] = {}
    if args.overlong_buffer:
        lens = batch.seq_lens - batch.prompt_lens
        penalty = pg_math.overlong_penalty(lens, max_len=args.max_response_len,
                                           buffer=args.overlong_buffer, penalty=args.overlong_penalty)
        rewards = rewards + penalty.double()
        stats["overlong_penalty"] = float(penalty.double().mean())
    if args.kl_in_reward and args.kl_coef and args.advantage != "reinforce_pp":
        old = _field(batch, "logprobs", "pg_actor").double()
        ref = _field(batch, "ref_logprobs", "pg_actor").double()
        seq_kl = torch.where(mask, old - ref, torch.zeros_like(old)).sum(dim=1)
        rewards = rewards - args.kl_coef * seq_kl
        stats["ref_kl"] = float(seq_kl.mean())
    return rewards, stats


def pg_advantages(batch: SeqBatch, args: PGActorArgs) -> tuple[SeqBatch, dict[str, float]]:
    """The batch with token field `advantages` (a sequence's advantage on each of its
    response tokens, or REINFORCE++'s per-token ones), and statistics."""
    mask = loss_mask(batch)
    rewards, stats = shaped_rewards(batch, args)
    if args.advantage == "reinforce_pp":
        old = _field(batch, "logprobs", "pg_actor")
        coef = args.kl_coef if args.kl_in_reward else 0.0
        ref = _field(batch, "ref_logprobs", "pg_actor") if coef else old
        adv = pg_math.reinforce_pp_advantages(rewards, old, ref, mask, kl_coef=coef,
                                              group_size=args.group_size)
        if coef:
            stats["ref_kl"] = rl_math.sequence_kl(old, ref, mask)
    else:
        if args.advantage == "rloo":
            seq_adv = pg_math.rloo_advantages(rewards, args.group_size)
        elif args.advantage == "group_mean":
            seq_adv = pg_math.group_mean_advantages(rewards, args.group_size)
        else:
            seq_adv = rl_math.group_advantages(rewards.float(), args.group_size)
        adv = torch.where(mask, seq_adv[:, None].float().expand_as(mask), torch.zeros(mask.shape))
    stats["shaped_reward"] = float(rewards.mean())
    return batch.with_fields(token_fields={"advantages": adv}), stats


def pg_terms(engine: ModelEngine, args: PGActorArgs) -> Terms:
    """The summed loss terms of a micro-batch (divided by the global `pg_math.units` later)."""
    mode, max_len = args.loss_agg, args.max_response_len
    # the clip fraction is a mean over the same units as the loss (tokens or sequences)
    frac_mode = "token_mean" if mode == "token_mean" else "seq_mean_token_mean"

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = loss_mask(mb).to(out.device)
        lp = _lp(engine, mb, out, args.temperature)
        old = mb.token_fields["logprobs"].to(out.device)
        adv = mb.token_fields["advantages"].to(out.device)
        if args.ratio == "sequence":
            seq_adv = torch.where(mask, adv, torch.zeros_like(adv)).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            seq_loss, seq_clipped = pg_math.gspo_sequence_loss(lp, old, seq_adv, mask, eps_low=args.eps_low,
                                                               eps_high=args.eps_high)
            tok_loss = seq_loss[:, None].expand_as(lp)
            clipped = seq_clipped[:, None].expand_as(mask) & mask
        else:
            tok_loss, clipped = pg_math.clipped_token_loss(lp, old, adv, mask, eps_low=args.eps_low,
                                                           eps_high=args.eps_high)
        pg = pg_math.aggregate(tok_loss, mask, mode, max_len=max_len)
        result = {"pg_loss": pg, "clip_frac": pg_math.aggregate(clipped.float(), mask, frac_mode)}
        loss = pg
        if args.kl_coef and not args.kl_in_reward:
            ref = _field(mb, "ref_logprobs", "pg_actor").to(out.device)
            kl = pg_math.aggregate(rl_math.kl_estimate(lp, ref, args.kl_estimator), mask, mode, max_len=max_len)
            result["kl"] = kl
            loss = loss + args.kl_coef * kl
        result["loss"] = loss
        return result

    return terms


@register("pg_actor")
def pg_actor(engine: ModelEngine, batch: SeqBatch, args: PGActorArgs, ctx: CallContext) -> dict[str, float]:
    """RLOO / REINFORCE++ / GSPO / Dr. GRPO / DAPO policy update (see the module docstring)."""
    prepared, stats = pg_advantages(batch, args)
    mode = args.loss_agg
    out = _train(engine, prepared, args, ctx, pg_terms(engine, args), unit=args.group_size,
                 count=lambda b: pg_math.units(mode, loss_mask(b)), epochs=args.ppo_epochs,
                 mini_batches=args.mini_batches)
    return {**out, **stats}
