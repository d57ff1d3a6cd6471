"""Train interfaces: sft, rw_pairwise, am_pairwise, ppo_actor, ppo_critic, grpo_actor, remax_actor, dpo.

Every step goes through Megatron's pipeline schedule, DDP and distributed optimizer
(`runtime.engine.schedule.Trainer`). Losses are means over the WHOLE batch (tokens for token
losses, pairs or sequences for sequence losses): each micro-batch returns its loss sum
scaled by (micro-batches x dp / global units), which the schedule's 1/micro-batches and
DDP's 1/dp turn into the exact global mean -- the same at every layout.

Fields read from the batch (the executor maps data keys onto them):
`logprobs` (old policy), `ref_logprobs`, `values` (old critic values), `rewards` (sequence),
`baseline_rewards` (ReMax, sequence). Pairs are consecutive (chosen, rejected) sequences.
Returns the mean over optimizer steps of `loss` and the interface's statistics.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from graph.catalog import (
    SCORED_RANKS,
    AdvantagePairwiseArgs,
    DPOArgs,
    GRPOActorArgs,
    OptimArgs,
    PPOActorArgs,
    PPOCriticArgs,
    ReMaxActorArgs,
    RewardPairwiseArgs,
    SFTArgs,
)
from runtime.data.batch import SeqBatch
from runtime.engine import vocab_parallel
from runtime.engine.schedule import Trainer, all_reduce_sum, micro_batch_split
from runtime.interfaces import rehearsal, rl_math
from runtime.interfaces.dp import local_part
from runtime.interfaces.inference import (
    last_token_scores,
    prompt_end_scores,
    shifted_logprobs,
    shifted_values,
)
from runtime.interfaces.registry import CallContext, register
from runtime.interfaces.reward_variance import adjusted_group_rewards

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine

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


def _trainer(engine: ModelEngine, args: OptimArgs, ctx: CallContext) -> Trainer:
    if not engine.spec.trainable:
        raise ValueError(f"model {engine.spec.role!r} is not trainable; set trainable: true")
    if engine.trainer is None:
        engine.trainer = Trainer(engine, args, total_steps=ctx.total_steps)
    return engine.trainer


@dataclass(frozen=True)
class LossPart:
    """One loss over a batch, normalised by its own global count (sum over data parallelism):
    the PPO loss over response tokens, the ptx loss over the ptx batch's answer tokens."""

    batch: SeqBatch
    """This replica's share of the mini-batch."""
    terms: Terms
    count: Callable[[SeqBatch], int]
    unit: int = 1


def _step(engine: ModelEngine, trainer: Trainer, parts: list[LossPart], args: OptimArgs, *,
          micro_batches: int = 0) -> dict[str, float]:
    """One optimizer step on this replica's mini-batch(es): each part's summed terms are
    divided by that part's global count, so the loss is the sum of the parts' global means."""
    local = torch.tensor([float(p.count(p.batch)) for p in parts])
    totals = [float(t) for t in all_reduce_sum(local, engine.pgc.dp)]
    if totals[0] == 0:
        raise ValueError("train step with no loss tokens: every response is empty")
    if any(t == 0 for t in totals):
        raise ValueError("train step with an empty extra batch (ptx): its sequences have no answer tokens")
    num = micro_batches or engine.layout.micro_batches
    mbs: list[SeqBatch] = []
    owner: dict[int, int] = {}
    for k, part in enumerate(parts):
        for mb in micro_batch_split(part.batch, num, unit=part.unit):
            owner[id(mb)] = k
            mbs.append(mb)

    def loss_fn(mb: SeqBatch, out: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        k = owner[id(mb)]
        t = parts[k].terms(mb, out)
        report = {key: (v.detach() / totals[k]).clone() for key, v in t.items()}
        # the schedule divides by len(mbs) and DDP by dp: undo both, then take the global mean
        return t["loss"] * (len(mbs) * engine.layout.dp / totals[k]), report

    return trainer.train_step(mbs, loss_fn, args)


def _train(engine: ModelEngine, batch: SeqBatch, args: OptimArgs, ctx: CallContext, terms: Terms, *,
           unit: int = 1, count: Callable[[SeqBatch], int] | None = None,
           epochs: int = 1, mini_batches: int = 1,
           extra: tuple[SeqBatch, Terms] | None = None,
           extras: tuple[tuple[SeqBatch, Terms], ...] = ()) -> dict[str, float]:
    """Optimizer steps over the FULL batch: mini-batches are cut from the whole batch (so
    they are the same at every layout), then each is split over data parallelism. Each
    extra batch (ptx, rehearsal) is cut into as many mini-batches, and step i mixes in its
    mini-batch i."""
    trainer = _trainer(engine, args, ctx)
    count = count or (lambda b: int(loss_mask(b).sum()))
    minis = batch.split(mini_batches, unit=unit) if mini_batches > 1 else [batch]
    side = ((extra,) if extra is not None else ()) + tuple(extras)
    cut: list[list[SeqBatch]] = []
    for more, _ in side:
        if more.size < len(minis) * engine.layout.dp:
            raise ValueError(f"the ptx batch of {more.size} sequences cannot feed {len(minis)} "
                             f"mini-batches x dp={engine.layout.dp}; give more ptx sequences")
        cut.append(list(more.split(len(minis))) if len(minis) > 1 else [more])
    history: list[dict[str, float]] = []
    for _ in range(epochs):
        for i, mini in enumerate(minis):
            parts = [LossPart(local_part(engine, mini, unit=unit), terms, count, unit)]
            for k, (_, more_terms) in enumerate(side):
                parts.append(LossPart(local_part(engine, cut[k][i]), more_terms,
                                      lambda b: int(loss_mask(b).sum())))
            history.append(_step(engine, trainer, parts, args, micro_batches=ctx.micro_batches))
    out = {k: sum(h[k] for h in history) / len(history) for k in history[0]}
    out["steps"] = float(len(history))
    return out


def _lp(engine: ModelEngine, mb: SeqBatch, out: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    return shifted_logprobs(engine, mb, out, temperature)


@register("sft")
def sft(engine: ModelEngine, batch: SeqBatch, args: SFTArgs, ctx: CallContext) -> dict[str, float]:
    """Cross-entropy on response tokens (all tokens after the first when prompt_len is 0)."""

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = loss_mask(mb).to(out.device)
        return {"loss": rl_math.masked_sum(-_lp(engine, mb, out), mask)}

    return _train(engine, batch, args, ctx, terms)


def _pairs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return x[0::2], x[1::2]


@register("rw_pairwise")
def rw_pairwise(engine: ModelEngine, batch: SeqBatch, args: RewardPairwiseArgs,
                ctx: CallContext) -> dict[str, float]:
    """Bradley-Terry loss on (chosen, rejected) pairs scored at their last token."""
    if not engine.spec.value_head:
        raise ValueError(f"rw_pairwise needs a value head on model {engine.spec.role!r}")

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        chosen, rejected = _pairs(last_token_scores(mb, out))
        return {"loss": rl_math.bradley_terry_loss(chosen, rejected).sum(),
                "accuracy": (chosen > rejected).float().sum()}

    return _train(engine, batch, args, ctx, terms, unit=2, count=lambda b: b.size // 2)


@register("am_pairwise")
def am_pairwise(engine: ModelEngine, batch: SeqBatch, args: AdvantagePairwiseArgs,
                ctx: CallContext) -> dict[str, float]:
    """Advantage-Model loss (rl_math.advantage_model_loss) on (chosen, rejected) pairs: the
    score at the last token minus the expected reward b(x) read at the last prompt token."""
    if not engine.spec.value_head:
        raise ValueError(f"am_pairwise needs a value head on model {engine.spec.role!r}")

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        chosen, rejected = _pairs(last_token_scores(mb, out))
        b_c, b_r = _pairs(prompt_end_scores(mb, out))
        t = rl_math.advantage_model_loss(chosen, rejected, (b_c + b_r) / 2, bound=args.bound,
                                         center_coef=args.center_coef, bound_coef=args.bound_coef)
        return {"loss": t["loss"].sum(), "rank_loss": t["rank"].sum(), "center_loss": t["center"].sum(),
                "bound_loss": t["bound"].sum(), "accuracy": (t["a_chosen"] > t["a_rejected"]).float().sum(),
                "adv_chosen": t["a_chosen"].detach().sum(), "adv_rejected": t["a_rejected"].detach().sum()}

    return _train(engine, batch, args, ctx, terms, unit=2, count=lambda b: b.size // 2)


@register("dpo")
def dpo(engine: ModelEngine, batch: SeqBatch, args: DPOArgs, ctx: CallContext) -> dict[str, float]:
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


def shape_rewards(state: MutableMapping[str, Any], part: SeqBatch, args: PPOActorArgs | PPOCriticArgs
                  ) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token rewards of a PPO batch, and the reward-shaping statistics; updates `state`.

    ppo_actor and ppo_critic both call this, each on its own engine with its own `state`
    (engine.state), on the same batch with the same REWARD_SHAPING_ARGS: the controller and
    the normaliser are deterministic functions of the batches seen so far, so both engines
    hold the same state and compute the same rewards, with no message between them. In order:
    1. normalise (normalize_reward): fold this batch's sequence rewards into the running
       moments, then (r - mean) / std with the updated moments;
    2. clip to +-reward_clip and add -kl_coef * (logp - ref_logp) per response token, with
       the coefficient in force (the initial kl_coef, or the controller's);
    3. adapt (adaptive_kl_target > 0): the measured KL (mean over sequences of the summed
       k1 estimate between the sampling policy and the reference) sets the next batch's coef.
    """
    mask = loss_mask(part)
    old = _field(part, "logprobs", "ppo")
    ref = _field(part, "ref_logprobs", "ppo")
    seq_rewards = _field(part, "rewards", "ppo").float()
    coef = float(state.get("ppo/kl_coef", args.kl_coef))
    stats: dict[str, float] = {"kl_coef": coef}
    if args.normalize_reward:
        count, mean, m2 = rl_math.merge_moments(float(state.get("ppo/reward_count", 0.0)),
                                                float(state.get("ppo/reward_mean", 0.0)),
                                                float(state.get("ppo/reward_m2", 0.0)), seq_rewards)
        state.update({"ppo/reward_count": count, "ppo/reward_mean": mean, "ppo/reward_m2": m2})
        var = m2 / count
        seq_rewards = rl_math.normalize_rewards(seq_rewards, mean, var)
        stats.update(reward_running_mean=mean, reward_running_std=var ** 0.5)
    kl = rl_math.sequence_kl(old, ref, mask)
    stats["ref_kl"] = kl
    if args.adaptive_kl_target > 0:
        state["ppo/kl_coef"] = rl_math.adaptive_kl_coef(
            coef, kl, target=args.adaptive_kl_target, horizon=args.adaptive_kl_horizon,
            num_steps=part.size)
    rewards = rl_math.token_rewards(seq_rewards, old, ref, mask,
                                    kl_coef=coef if args.kl_in_reward else 0.0,
                                    reward_clip=args.reward_clip)
    return rewards, stats


def ppo_targets(part: SeqBatch, rewards: torch.Tensor, *, gamma: float, lam: float,
                whiten: bool) -> SeqBatch:
    """Adds token fields `advantages` and `returns` (GAE on the shaped per-token rewards),
    computed over the whole batch on every rank (cheap), so whitening needs no communication."""
    mask = loss_mask(part)
    values = part.token_fields.get("values", torch.zeros_like(rewards))
    adv, ret = rl_math.gae(rewards, values, mask, gamma=gamma, lam=lam)
    if whiten:
        adv = rl_math.whiten(adv, mask)
    return part.with_fields(token_fields={"advantages": adv, "returns": ret})


def _engine_state(engine: ModelEngine) -> MutableMapping[str, Any]:
    state = getattr(engine, "state", None)
    if state is None:
        raise ValueError("PPO needs an engine with a `state` dict (runtime.engine.model_engine.ModelEngine)")
    return state


def _policy_terms(engine: ModelEngine, eps_clip: float, kl_coef: float, kl_estimator: str,
                  entropy_coef: float, temperature: float = 1.0) -> Terms:
    """Clipped-ratio loss, KL and entropy of the policy at the sampling `temperature` (logits / T),
    the distribution the old log-probs and the reference log-probs were taken from."""

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = loss_mask(mb).to(out.device)
        lp = _lp(engine, mb, out, temperature)
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
            ent = vocab_parallel.entropy(out[:, :-1] / temperature, engine.pgc.tp, vocab_size=engine.arch.vocab_size)
            ent = rl_math.masked_sum(torch.nn.functional.pad(ent, (1, 0)), mask)
            result["entropy"] = ent
            loss = loss - entropy_coef * ent
        result["loss"] = loss
        return result

    return terms


def _sft_terms(engine: ModelEngine, coef: float, name: str = "ptx_loss") -> Terms:
    """ptx (rehearsal): coef x cross-entropy on the answer tokens; reported unweighted as
    `ptx_loss` (`rehearsal_loss`)."""

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        ce = rl_math.masked_sum(-_lp(engine, mb, out), loss_mask(mb).to(out.device))
        return {"loss": coef * ce, name: ce}

    return terms


@register("ppo_actor")
def ppo_actor(engine: ModelEngine, batch: SeqBatch, args: PPOActorArgs, ctx: CallContext) -> dict[str, float]:
    """PPO clipped-ratio update; KL in the reward or as a loss term (fixed or adaptive
    coefficient); reward normalisation and clipping; entropy bonus; ptx loss mixed in.

    Reports `kl_coef` (the coefficient this batch used) and `ref_kl` (the measured KL the
    controller sees); `loss` is the PPO loss plus ptx_coef x `ptx_loss`.
    """
    ptx = ctx.side_inputs.get("ptx")
    if args.ptx_coef > 0 and ptx is None:
        raise ValueError(f"ppo_actor: ptx_coef={args.ptx_coef} but the call has no ptx input; "
                         "set data.ptx or ptx_coef=0")
    rewards, shaping = shape_rewards(_engine_state(engine), batch, args)
    prepared = ppo_targets(batch, rewards, gamma=args.gamma, lam=args.lam,
                           whiten=args.whiten_advantages)
    kl_loss_coef = 0.0 if args.kl_in_reward else shaping["kl_coef"]
    terms = _policy_terms(engine, args.eps_clip, kl_loss_coef, "k1", args.entropy_coef, args.temperature)
    extra = (ptx, _sft_terms(engine, args.ptx_coef)) if ptx is not None and args.ptx_coef > 0 else None
    rehearse, stats = _rehearsal_batch(engine, batch, args, ctx)
    more = ((rehearse, _sft_terms(engine, args.rehearsal_coef, "rehearsal_loss")),) if rehearse is not None else ()
    out = _train(engine, prepared, args, ctx, terms, epochs=args.ppo_epochs,
                 mini_batches=args.mini_batches, extra=extra, extras=more)
    if args.rehearsal_coef > 0 and rehearse is None:
        out["rehearsal_loss"] = 0.0
    return {**out, **shaping, **stats}


def _rehearsal_batch(engine: ModelEngine, batch: SeqBatch, args: PPOActorArgs, ctx: CallContext
                     ) -> tuple[SeqBatch | None, dict[str, float]]:
    """Selective Rehearsal (runtime.interfaces.rehearsal): every `rehearsal_every` calls,
    select from this batch's rollouts by their `rewards` (the AM's advantages) per k-means
    cluster of the actor's prompt embeddings (rehearsal_source=data: from the pool in
    ctx.side_inputs["rehearsal_pool"] by the policy's mean log-likelihood of the answers, or with
    rehearsal_rank=advantage by the reward model's scores the pool carries as field
    `pool_scores`, above rehearsal_min_reward; rehearsal_rank=advantage_policy: the same, the
    pool being the policy's responses to the pool's prompts, which are then rehearsed), and
    keep the selection in engine.state; return the kept sequences (tiled to feed every
    mini-batch x dp) or None when none is kept."""
    if args.rehearsal_coef <= 0:
        return None, {}
    state = _engine_state(engine)
    calls = int(state.get("rehearsal/calls", 0))
    state["rehearsal/calls"] = calls + 1
    if calls % args.rehearsal_every == 0 and args.rehearsal_source == "data":
        pool = ctx.side_inputs.get("rehearsal_pool")
        if pool is None:
            raise ValueError("ppo_actor: rehearsal_source=data but the call got no rehearsal_pool side input")
        labels = rehearsal.kmeans(rehearsal.prompt_embeddings(engine, pool), args.rehearsal_clusters)
        if args.rehearsal_rank in SCORED_RANKS:  # the reward model's scores, from its own workers
            # (advantage_policy: the pool holds the policy's responses, so those are kept)
            if "pool_scores" not in pool.seq_fields:
                raise ValueError(f"ppo_actor: rehearsal_rank={args.rehearsal_rank} but the pool came without its "
                                 "scores (input key rehearsal_scores)")
            scores, floor = pool.seq_fields["pool_scores"].float(), args.rehearsal_min_reward
        else:
            scores, floor = rehearsal.response_loglik(engine, pool), -math.inf
        kept = rehearsal.select_per_cluster(labels, scores, per_cluster=args.rehearsal_per_cluster,
                                            min_score=floor)
        state["rehearsal/seqs"] = [pool.input_ids[i, : int(pool.seq_lens[i])].tolist() for i in kept]
        state["rehearsal/prompt_lens"] = [int(pool.prompt_lens[i]) for i in kept]
        state["rehearsal/kept_reward"] = float(scores[kept].mean()) if kept else 0.0
        state["rehearsal/clusters"] = len(set(labels.tolist()))
    elif calls % args.rehearsal_every == 0:
        rewards = _field(batch, "rewards", "ppo_actor rehearsal").float()
        has_tokens = loss_mask(batch).any(dim=1)
        labels = rehearsal.kmeans(rehearsal.prompt_embeddings(engine, batch), args.rehearsal_clusters)
        scores = torch.where(has_tokens, rewards, torch.full_like(rewards, -torch.inf))
        kept = rehearsal.select_per_cluster(labels, scores, per_cluster=args.rehearsal_per_cluster,
                                            min_score=args.rehearsal_min_reward)
        state["rehearsal/seqs"] = [batch.input_ids[i, : int(batch.seq_lens[i])].tolist() for i in kept]
        state["rehearsal/prompt_lens"] = [int(batch.prompt_lens[i]) for i in kept]
        state["rehearsal/kept_reward"] = float(rewards[kept].mean()) if kept else 0.0
        state["rehearsal/clusters"] = len(set(labels.tolist()))
    seqs, lens = list(state.get("rehearsal/seqs", [])), list(state.get("rehearsal/prompt_lens", []))
    stats = {"rehearsal_size": float(len(seqs)), "rehearsal_kept_reward": float(state.get("rehearsal/kept_reward", 0.0)),
             "rehearsal_clusters": float(state.get("rehearsal/clusters", 0))}
    if not seqs:
        return None, stats
    need = args.mini_batches * engine.layout.dp
    reps = -(-need // len(seqs))  # tiling keeps the mean loss: each copy weighs the same
    return SeqBatch.from_lists(seqs * reps, lens * reps, ids=list(range(len(seqs) * reps)),
                               pad_id=batch.pad_id), stats


@register("ppo_critic")
def ppo_critic(engine: ModelEngine, batch: SeqBatch, args: PPOCriticArgs, ctx: CallContext) -> dict[str, float]:
    """Clipped value loss toward GAE returns of the same shaped rewards as the actor's;
    needs `values`, `rewards`, `logprobs`, `ref_logprobs`."""
    if not engine.spec.value_head:
        raise ValueError(f"ppo_critic needs a value head on model {engine.spec.role!r}")

    def terms(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
        mask = loss_mask(mb).to(out.device)
        v = shifted_values(out)
        loss = rl_math.clipped_value_loss(v, mb.token_fields["values"].to(out.device),
                                          mb.token_fields["returns"].to(out.device), mask,
                                          value_clip=args.value_clip)
        return {"loss": loss.sum()}

    rewards, shaping = shape_rewards(_engine_state(engine), batch, args)
    prepared = ppo_targets(batch, rewards, gamma=args.gamma, lam=args.lam, whiten=False)
    out = _train(engine, prepared, args, ctx, terms, epochs=args.ppo_epochs,
                 mini_batches=args.mini_batches)
    return {**out, "kl_coef": shaping["kl_coef"]}


@register("grpo_actor")
def grpo_actor(engine: ModelEngine, batch: SeqBatch, args: GRPOActorArgs, ctx: CallContext) -> dict[str, float]:
    """GRPO: group-normalised sequence advantages, clipped ratio, KL loss to the reference."""
    prepared = batch
    rewards = _field(prepared, "rewards", "grpo_actor")
    if args.variance_increase:  # GRPOVI: raise each group's reward variance, same mean and order
        rewards = adjusted_group_rewards(rewards, args.group_size, args.reward_min, args.reward_max)
    adv_seq = rl_math.group_advantages(rewards, args.group_size)
    mask = loss_mask(prepared)
    adv = torch.where(mask, adv_seq[:, None].expand_as(mask), torch.zeros(mask.shape))
    prepared = prepared.with_fields(token_fields={"advantages": adv})
    terms = _policy_terms(engine, args.eps_clip, args.kl_coef, args.kl_estimator, 0.0, args.temperature)
    return _train(engine, prepared, args, ctx, terms, unit=args.group_size, epochs=args.ppo_epochs,
                  mini_batches=args.mini_batches)


@register("remax_actor")
def remax_actor(engine: ModelEngine, batch: SeqBatch, args: ReMaxActorArgs, ctx: CallContext) -> dict[str, float]:
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
        lp = _lp(engine, mb, out, args.temperature)
        return {"loss": rl_math.masked_sum(-lp * mb.token_fields["advantages"].to(out.device), m)}

    return _train(engine, prepared, args, ctx, terms)
