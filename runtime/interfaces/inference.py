"""Inference interfaces: token log-probs, token values, sequence rewards.

Output fields (see runtime.data.batch for the alignment):
* logprobs -> token field `logprobs` (or the key given by the caller's rename);
* values -> token field `values`: values[b, t] = V(tokens[:t]), read at position t-1;
* reward_model -> sequence field `rewards`: the value head at each sequence's last token;
* advantage_model -> sequence field `rewards`: the head at the last token minus the head at
  the last prompt token (the Advantage Model's a(x, y) = r(x, y) - b(x));
* pool_scores -> sequence field `pool_scores`: the reward_model or advantage_model score of
  each (prompt, answer) pair of the Selective Rehearsal pool (the reference answers, or the
  policy's responses under rehearsal_rank=advantage_policy), recomputed every `every` steps;
* rule_reward -> sequence field `rewards` from a rule in `runtime.rewards.rules`, or from the
  user's reward functions (`runtime.rewards.functions`), with each function's scores as
  sequence field `reward_NAME` (NaN where it gave None).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from graph.catalog import (
    AdvantageModelArgs,
    LogprobsArgs,
    PoolScoresArgs,
    RewardModelArgs,
    RuleRewardArgs,
    ValuesArgs,
)
from runtime.data.batch import SeqBatch
from runtime.engine import platform, vocab_parallel
from runtime.engine.schedule import micro_batch_split, run_micro_batches
from runtime.interfaces.dp import gather_parts, local_part
from runtime.interfaces.registry import CallContext, register
from runtime.rewards.functions import score_batch
from runtime.rewards.rules import get_rule

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine


def shifted_logprobs(engine: ModelEngine, mb: SeqBatch, logits: torch.Tensor,
                     temperature: float = 1.0) -> torch.Tensor:
    """[b, s] log p(token t | tokens < t) (0 at t = 0), differentiable."""
    lp = vocab_parallel.token_logprobs(logits[:, :-1], mb.input_ids[:, 1:].to(logits.device),
                                       engine.pgc.tp, vocab_size=engine.arch.vocab_size,
                                       temperature=temperature)
    return torch.nn.functional.pad(lp, (1, 0))


def shifted_values(values: torch.Tensor) -> torch.Tensor:
    """[b, s] V(tokens[:t]) from the head's [b, s, 1] output (0 at t = 0)."""
    return torch.nn.functional.pad(values[..., 0].float()[:, :-1], (1, 0))


def _forward_fields(engine: ModelEngine, batch: SeqBatch, extract: Any, micro_batches: int = 0) -> list[dict[str, Any]]:
    """Forward this replica's part in micro-batches; `extract(mb, out)` -> dict of tensors."""
    mbs = micro_batch_split(batch, micro_batches or engine.layout.micro_batches)

    def loss_fn(mb: SeqBatch, out: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        with torch.no_grad():
            fields = {k: v.detach().cpu() for k, v in extract(mb, out).items()}
        return torch.zeros((), device=out.device), {"ids": mb.ids, **fields}

    engine.set_training(False)
    with torch.no_grad():
        return run_micro_batches(engine, mbs, loss_fn, forward_only=True)


def _assemble(part: SeqBatch, reports: list[dict[str, Any]], token_keys: tuple[str, ...],
              seq_keys: tuple[str, ...]) -> SeqBatch:
    row = {i: k for k, i in enumerate(part.ids)}
    b, t = part.input_ids.shape
    tok = {k: torch.zeros(b, t) for k in token_keys}
    seq = {k: torch.zeros(b) for k in seq_keys}
    for rep in reports:
        rows = torch.tensor([row[sid] for sid in rep["ids"]], dtype=torch.long)
        for k in token_keys:
            v = rep[k][:, :t]
            tok[k][rows, : v.shape[1]] = v.to(tok[k].dtype)
        for k in seq_keys:
            seq[k][rows] = rep[k].to(seq[k].dtype)
    valid = part.valid_mask()
    tok = {k: torch.where(valid, v, torch.zeros_like(v)) for k, v in tok.items()}
    return part.with_fields(token_fields=tok, seq_fields=seq)


def _run(engine: ModelEngine, batch: SeqBatch, extract: Any, token_keys: tuple[str, ...],
         seq_keys: tuple[str, ...], micro_batches: int = 0) -> SeqBatch:
    part = local_part(engine, batch)
    reports = _forward_fields(engine, part, extract, micro_batches)
    with platform.without_cuda_rewrites():  # host-side bookkeeping: plain torch, no per-op dispatch
        assembled = _assemble(part, reports, token_keys, seq_keys)
    return gather_parts(engine, assembled, batch.ids)


@register("logprobs")
def logprobs(engine: ModelEngine, batch: SeqBatch, args: LogprobsArgs, ctx: CallContext) -> SeqBatch:
    """Token field `logprobs` under this model."""
    if engine.spec.value_head:
        raise ValueError(f"logprobs needs a language-model head; model {engine.spec.role!r} "
                         "has a value head")
    return _run(engine, batch, lambda mb, out: {
        "logprobs": shifted_logprobs(engine, mb, out, args.temperature)}, ("logprobs",), (), ctx.micro_batches)


def _need_value_head(engine: ModelEngine, name: str) -> None:
    if not engine.spec.value_head:
        raise ValueError(f"{name} needs a value head; set value_head: true on model "
                         f"{engine.spec.role!r}")


@register("values")
def values(engine: ModelEngine, batch: SeqBatch, args: ValuesArgs, ctx: CallContext) -> SeqBatch:
    """Token field `values` from a critic."""
    _need_value_head(engine, "values")
    return _run(engine, batch, lambda mb, out: {"values": shifted_values(out)}, ("values",), (),
                ctx.micro_batches)


def last_token_scores(mb: SeqBatch, out: torch.Tensor) -> torch.Tensor:
    """[b] value-head output at each sequence's last token."""
    last = (mb.seq_lens - 1).clamp(min=0).to(out.device)
    return out[torch.arange(out.shape[0], device=out.device), last, 0].float()


@register("reward_model")
def reward_model(engine: ModelEngine, batch: SeqBatch, args: RewardModelArgs, ctx: CallContext) -> SeqBatch:
    """Sequence field `rewards` from a reward model."""
    _need_value_head(engine, "reward_model")
    return _run(engine, batch, lambda mb, out: {"rewards": last_token_scores(mb, out)}, (), ("rewards",),
                ctx.micro_batches)


def prompt_end_scores(mb: SeqBatch, out: torch.Tensor) -> torch.Tensor:
    """[b] value-head output at each sequence's last prompt token: the AM's expected reward b(x)
    (a causal model sees only the prompt there)."""
    last = (mb.prompt_lens - 1).clamp(min=0).to(out.device)
    return out[torch.arange(out.shape[0], device=out.device), last, 0].float()


@register("advantage_model")
def advantage_model(engine: ModelEngine, batch: SeqBatch, args: AdvantageModelArgs, ctx: CallContext) -> SeqBatch:
    """Sequence field `rewards` = a(x, y) from an Advantage Model (trained by am_pairwise)."""
    _need_value_head(engine, "advantage_model")
    return _run(engine, batch, lambda mb, out: {"rewards": last_token_scores(mb, out) - prompt_end_scores(mb, out)},
                (), ("rewards",), ctx.micro_batches)


@register("pool_scores")
def pool_scores(engine: ModelEngine, batch: SeqBatch, args: PoolScoresArgs, ctx: CallContext) -> SeqBatch:
    """Sequence field `pool_scores`: the score of every pair of the rehearsal pool `batch` (the
    reference pairs, or the policy's responses to the pool's prompts) in
    the reward model's form (advantage: as advantage_model, reward: as reward_model), split over
    this layout's data-parallel replicas like any inference call. Scored when ctx.step is a
    multiple of `every` (the actor's rehearsal_every: its selection steps) or when this engine
    has no scores of these pairs in this form yet (a resumed run); otherwise the scores of the
    last scoring (the reward model of PPO is frozen, so they are the same)."""
    _need_value_head(engine, "pool_scores")
    state, key = engine.state, f"pool_scores/{args.form}"
    ids = [int(i) for i in batch.ids]
    cached = state.get(f"{key}/values")
    if cached is not None and state.get(f"{key}/ids") == ids and ctx.step % args.every != 0:
        return batch.with_fields(seq_fields={"pool_scores": torch.tensor(cached, dtype=torch.float32)})
    if args.form == "advantage":
        def score(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"pool_scores": last_token_scores(mb, out) - prompt_end_scores(mb, out)}
    else:
        def score(mb: SeqBatch, out: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"pool_scores": last_token_scores(mb, out)}
    result = _run(engine, batch, score, (), ("pool_scores",), ctx.micro_batches)
    state[f"{key}/ids"] = ids
    state[f"{key}/values"] = [float(v) for v in result.seq_fields["pool_scores"]]
    return result


@register("rule_reward")
def rule_reward(engine: ModelEngine | None, batch: SeqBatch, args: RuleRewardArgs, ctx: CallContext) -> SeqBatch:
    """Sequence field `rewards`: wrong + (correct - wrong) * the rule's score (True = 1), the
    score times `unfinished_scale` for a response that does not end at EOS, plus `eos_bonus` for
    one that does; and `accuracy`: 1.0 where the response got the rule's full score (an exact
    answer, that stops unless unfinished_scale is 1). Reward functions: see
    `function_rewards`."""
    if ctx.reward_functions:
        return function_rewards(batch, ctx, args)
    if ctx.rule is None or ctx.decode is None:
        raise ValueError("rule_reward needs the model's rule name and a detokeniser in the "
                         "CallContext (ctx.rule, ctx.decode)")
    rule = get_rule(ctx.rule)
    rewards, exact = torch.zeros(batch.size), torch.zeros(batch.size)
    for i in range(batch.size):
        prompt = ctx.decode(batch.input_ids[i, : int(batch.prompt_lens[i])].tolist())
        response = ctx.decode(batch.response(i))
        meta = {k: v[i] for k, v in batch.seq_fields.items()}
        score = float(rule(prompt, response, meta))
        if not 0.0 <= score <= 1.0:
            raise ValueError(f"reward rule {ctx.rule!r} returned {score}; a rule's score must be in [0, 1]")
        finished = ends_at_eos(batch, i, ctx)
        if not finished:
            score *= args.unfinished_scale
        rewards[i] = args.wrong + (args.correct - args.wrong) * score + (args.eos_bonus if finished else 0.0)
        exact[i] = float(score >= 1.0)
    return batch.with_fields(seq_fields={"rewards": rewards, "accuracy": exact})


def ends_at_eos(batch: SeqBatch, i: int, ctx: CallContext) -> bool:
    """Whether response i stopped at an EOS token (rather than being cut at max_new_tokens)."""
    response = batch.response(i)
    return bool(response) and response[-1] in ctx.eos_ids


def function_rewards(batch: SeqBatch, ctx: CallContext, args: RuleRewardArgs | None = None) -> SeqBatch:
    """Sequence field `rewards` from the user's reward functions (the weighted sum; times
    `unfinished_scale` for a response that does not end at EOS, plus `eos_bonus` for one that
    does), and `reward_NAME` per function (unscaled). Prompts and columns come from each
    sample's dataset record in `ctx.rows` (by sample id), else the decoded prompt and no columns."""
    if ctx.decode is None:
        raise ValueError("reward functions need a detokeniser in the CallContext (ctx.decode)")
    prompts: list[Any] = []
    completions: list[Any] = []
    rows: list[Any] = []
    for i, sid in enumerate(batch.ids):
        record = ctx.rows.get(sid)
        prompt = record.prompt if record is not None else ctx.decode(batch.input_ids[i, : int(batch.prompt_lens[i])].tolist())
        text = ctx.decode(batch.response(i))
        prompts.append(prompt)
        completions.append(text if isinstance(prompt, str) else [{"role": "assistant", "content": text}])
        rows.append(record.columns if record is not None else {})
    names = sorted({k for r in rows for k in r} - {"prompts", "completions"})
    columns = {k: [r.get(k) for r in rows] for k in names}
    total, each = score_batch(ctx.reward_functions, prompts, completions, columns, time_limit_s=ctx.reward_time_limit_s)
    if args is not None:
        total = [t + args.eos_bonus if ends_at_eos(batch, i, ctx) else t * args.unfinished_scale
                 for i, t in enumerate(total)]
    fields = {"rewards": torch.tensor(total, dtype=torch.float32)}
    for metric, scores in each.items():  # NaN where the function gave None
        fields[metric] = torch.tensor([math.nan if v is None else v for v in scores], dtype=torch.float32)
    return batch.with_fields(seq_fields=fields)
