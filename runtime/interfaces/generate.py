"""generate: KV-cached batched sampling with TP and PP.

Prompts of different lengths are decoded together (Megatron's legacy static scheme): the
shortest prompt is prefilled, then one position per step; a row still inside its prompt
takes its prompt token instead of the sampled one. Pipeline stages pass hidden states
with point-to-point sends; the last stage samples (on full-vocabulary logits Megatron gathers
over TP) and broadcasts the tokens. Sampling draws come from `sample_uniform(seed,
iteration, sample id, position)`, so a sample's tokens do not depend on the layout.

`pool_generate` answers the Selective Rehearsal pool's prompts the same way, every `every`
iterations (rehearsal_rank=advantage_policy), from its own stream of draws (`pool_seed`).

Output: a SeqBatch of prompt + response per sample (prompt repeated `num_samples` times,
consecutively; sample id = prompt id * num_samples + k), with token field `logprobs`
(log-softmax at the sampling temperature, before top-k/top-p) on response tokens and
sequence field `truncated` (1.0 where a response hit max_new_tokens without stopping).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from graph.catalog import GenerateArgs, PoolGenerateArgs
from runtime.data.batch import SeqBatch
from runtime.engine import lean, platform
from runtime.interfaces.dp import gather_parts, local_part
from runtime.interfaces.registry import CallContext, register

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine

SUPPORTS_PP = True
"""generate runs at any pp (stages exchange hidden states point to point)."""


def filter_logits(logits: torch.Tensor, *, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits [B, V] outside the top-k and the top-p nucleus with -inf."""
    if top_k > 0 and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        probs = torch.softmax(sorted_logits, dim=-1)
        before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly better tokens
        remove_sorted = before >= top_p
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


_MASK64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit hash of x."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def sample_uniform(seed: int, step: int, sample_id: int, position: int) -> float:
    """A uniform draw in [0, 1) that depends only on (seed, iteration, sample, position).

    Tying the randomness to the sample, not to the rank or the batch it lands in, makes
    generation give the same tokens under every layout and data-parallel split. The scalar
    reference of `sample_uniforms`, which generation uses.
    """
    x = seed & _MASK64
    for key in (step, sample_id, position):
        x = _mix(x ^ (key & _MASK64))
    return (x >> 11) * (1.0 / (1 << 53))


def _signed(c: int) -> int:
    """A 64-bit constant as the int64 with the same bits."""
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _M1, _M2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 bits (torch shifts arithmetically)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def _mix_tensor(x: torch.Tensor) -> torch.Tensor:
    """`_mix` on int64 tensors (two's-complement wrap-around gives the same 64 bits); in place
    on a fresh tensor: a handful of small kernels per call."""
    x = x + _GOLDEN
    x.bitwise_xor_(_shr(x, 30)).mul_(_M1)
    x.bitwise_xor_(_shr(x, 27)).mul_(_M2)
    return x.bitwise_xor_(_shr(x, 31))


def sample_keys(seed: int, step: int, sample_ids: torch.Tensor | list[int] | tuple[int, ...]) -> torch.Tensor:
    """The per-sample part of the draw chain, int64 [len(sample_ids)]: it is the same at every
    position, so generation computes it once per call."""
    ids = torch.as_tensor(sample_ids, dtype=torch.int64)
    head = _signed(_mix((seed & _MASK64) ^ (step & _MASK64)))
    return _mix_tensor(ids ^ head)


def uniforms_at(keys: torch.Tensor, position: int) -> torch.Tensor:
    """The draws of `sample_keys` samples at one position: float64 in [0, 1)."""
    return _shr(_mix_tensor(keys ^ _signed(position & _MASK64)), 11).double() * (1.0 / (1 << 53))


def sample_uniforms(seed: int, step: int, sample_ids: torch.Tensor | list[int] | tuple[int, ...],
                    position: int) -> torch.Tensor:
    """`sample_uniform` for many samples at once, vectorised in torch: float64 [len(sample_ids)],
    bit-identical to the scalar function (the same counter-based splitmix64 chain)."""
    return uniforms_at(sample_keys(seed, step, sample_ids), position)


def sample_next(logits: torch.Tensor, args: GenerateArgs, uniforms: torch.Tensor) -> torch.Tensor:
    """Next token per row from full-vocabulary logits [B, V], by inverse CDF at `uniforms` [B]."""
    if args.greedy:
        return logits.argmax(dim=-1)
    scaled = filter_logits(logits / args.temperature, top_k=args.top_k, top_p=args.top_p)
    cdf = torch.softmax(scaled.double(), dim=-1).cumsum(dim=-1)
    # right=True: the first token whose cumulative mass exceeds u, so zero-mass tokens are never picked
    picked = torch.searchsorted(cdf, (uniforms.double() * cdf[:, -1])[:, None], right=True).squeeze(-1)
    return picked.clamp(max=logits.shape[-1] - 1)


def expand_samples(batch: SeqBatch, num_samples: int) -> SeqBatch:
    """Each prompt repeated num_samples times, consecutively, with fresh sample ids."""
    if num_samples == 1:
        return batch
    idx = torch.arange(batch.size).repeat_interleave(num_samples)
    return SeqBatch(
        input_ids=batch.input_ids[idx], seq_lens=batch.seq_lens[idx],
        prompt_lens=batch.prompt_lens[idx],
        ids=tuple(batch.ids[i] * num_samples + k for i in range(batch.size) for k in range(num_samples)),
        seq_fields={k: v[idx] for k, v in batch.seq_fields.items()}, pad_id=batch.pad_id)


class _Stepper:
    """Runs one forward step across the pipeline and returns last-position logits."""

    def __init__(self, engine: ModelEngine, batch_size: int, max_len: int) -> None:
        from megatron.core.inference.contexts import StaticInferenceContext

        self.engine = engine
        self.device = platform.device()
        self.cache = lean.KVCache(engine, batch_size, max_len) if lean.applies(engine) else None
        self.ctx = None if self.cache is not None else StaticInferenceContext(batch_size, max_len)

    def __call__(self, tokens: torch.Tensor, start: int) -> torch.Tensor | None:
        eng, ctx = self.engine, self.ctx
        b, s = tokens.shape
        if self.cache is not None:  # one process: the lean forward with its own KV cache
            pos = torch.arange(start, start + s, device=self.device).expand(b, s)
            return lean.forward(eng, tokens.to(self.device), pos, cache=self.cache, start=start,
                                last_only=True)[:, -1, :]
        if start == 0:
            ctx.enable_prefill_mode()
        else:
            ctx.enable_decode_mode()
        if not eng.is_first_stage:
            hidden = torch.empty(s, b, eng.arch.hidden_size, dtype=eng.dtype, device=self.device)
            dist.recv(hidden, src=eng.stage_rank(eng.coords.pp_rank - 1))
            eng.module.set_input_tensor(hidden)
        pos = torch.arange(start, start + s, device=self.device).expand(b, s)
        with platform.without_cuda_rewrites():  # the forward needs none; saves ~30% on CPU
            out = eng.module(tokens.to(self.device), pos, None, inference_context=ctx,
                             runtime_gather_output=True)
        ctx.increment_sequence_len_offset(s)
        if not eng.is_last_stage:
            dist.send(out.contiguous(), dst=eng.stage_rank(eng.coords.pp_rank + 1))
            return None
        return out[:, -1, :]


def _stop_hit(response: list[int], stop_strings: tuple, ctx: CallContext) -> bool:
    if not stop_strings or ctx.decode is None:
        return False
    text = ctx.decode(response)
    return any(s in text for s in stop_strings)


@torch.no_grad()
def generate_local(engine: ModelEngine, prompts: SeqBatch, args: GenerateArgs, ctx: CallContext) -> SeqBatch:
    """Generate for this replica's prompts (prompt_lens == seq_lens) on this engine; plain
    torch throughout (the forward never needed the CPU device rewrites, nor does the sampling
    loop's host work)."""
    with platform.without_cuda_rewrites():
        return _generate_local(engine, prompts, args, ctx)


def _generate_local(engine: ModelEngine, prompts: SeqBatch, args: GenerateArgs, ctx: CallContext) -> SeqBatch:
    engine.set_training(False)
    b = prompts.size
    lens = prompts.prompt_lens.clone()
    total = int(lens.max()) + args.max_new_tokens
    if total > engine.arch.max_position_embeddings:
        raise ValueError(f"prompt + max_new_tokens = {total} exceeds the model's "
                         f"max_position_embeddings {engine.arch.max_position_embeddings}")
    tokens = torch.full((b, total), prompts.pad_id, dtype=torch.long)
    width = min(prompts.input_ids.shape[1], total)
    tokens[:, :width] = torch.where(prompts.prompt_mask()[:, :width],
                                    prompts.input_ids[:, :width], prompts.pad_id)
    logprobs = torch.zeros(b, total)
    done = torch.zeros(b, dtype=torch.bool)
    truncated = torch.zeros(b)
    generated = torch.zeros(b, dtype=torch.long)
    eos = torch.tensor(sorted(ctx.eos_ids), dtype=torch.long)
    stepper = _Stepper(engine, b, total)
    sent = torch.zeros(b, dtype=torch.bool)

    def rows_batch(rows: list[int]) -> SeqBatch:
        """Samples `rows` as the final result will hold them (pad and 0 past their end)."""
        sub = lens[rows] + generated[rows]
        width = int(sub.max())
        return SeqBatch(input_ids=tokens[rows, :width].clone(), seq_lens=sub, prompt_lens=lens[rows].clone(),
                        ids=tuple(prompts.ids[i] for i in rows), pad_id=prompts.pad_id,
                        token_fields={"logprobs": logprobs[rows, :width].clone()},
                        seq_fields={**{k: v[rows] for k, v in prompts.seq_fields.items()},
                                    "truncated": truncated[rows].clone()})

    def stream(final: bool) -> None:
        """Pass finished, unsent samples on once there are enough (and enough stay for a last chunk)."""
        if ctx.on_finished is None:
            return
        ready = (done & ~sent).nonzero().flatten().tolist()
        left = b - int(sent.sum()) - len(ready)
        if final:
            ready = (~sent).nonzero().flatten().tolist()
        elif len(ready) < max(ctx.stream_chunk, 1) or 0 < left < ctx.stream_chunk:
            return
        if ready:
            sent[ready] = True
            ctx.on_finished(rows_batch(ready))

    keys = sample_keys(ctx.seed, ctx.step, prompts.ids)  # the draws' per-sample part, once
    prev, cur = 0, int(lens.min())
    last_pp = engine.stage_rank(engine.layout.pp - 1)
    while cur < total and not bool(done.all()):
        logits = stepper(tokens[:, prev:cur], prev)
        picked = torch.zeros(b, dtype=torch.long)
        lp = torch.zeros(b)
        if logits is not None:
            full = logits.float()[:, : engine.arch.vocab_size].cpu()  # gathered over TP
            # the recorded log-prob is the model's own distribution at the temperature, the one the
            # losses and the reference recompute: min_new_tokens (like top-k/top-p) only shapes the draw
            model = full
            if args.min_new_tokens and len(eos):
                early = generated < args.min_new_tokens
                if bool(early.any()):
                    full = full.clone()
                    full[early.nonzero().squeeze(-1)[:, None], eos[None, :]] = float("-inf")
            uniforms = uniforms_at(keys, cur)
            picked = sample_next(full, args, uniforms)
            temp = 1.0 if args.greedy else args.temperature
            lp = torch.log_softmax(model / temp, dim=-1).gather(-1, picked[:, None]).squeeze(-1)
        if engine.layout.pp > 1:
            both = torch.cat([picked.double(), lp.double()])
            dist.broadcast(both, src=last_pp, group=engine.pgc.pp)
            picked, lp = both[:b].long(), both[b:].float()
        in_prompt = cur < lens
        active = ~in_prompt & ~done
        tokens[:, cur] = torch.where(in_prompt, tokens[:, cur],
                                     torch.where(done, torch.full_like(picked, prompts.pad_id), picked))
        logprobs[:, cur] = torch.where(active, lp, torch.zeros_like(lp))
        generated += active.long()
        stopped = active & torch.isin(picked, eos) if len(eos) else torch.zeros_like(active)
        if args.stop_strings:  # text matching: per row, only where stop strings are asked for
            for i in (active & ~stopped).nonzero().flatten().tolist():
                stopped[i] = _stop_hit(tokens[i, int(lens[i]): cur + 1].tolist(), args.stop_strings, ctx)
        full_length = active & ~stopped & (generated >= args.max_new_tokens)
        truncated[full_length] = 1.0
        done |= stopped | full_length
        prev, cur = cur, cur + 1
        stream(final=False)
    stream(final=True)
    seq_lens = lens + generated
    t = int(seq_lens.max())
    return SeqBatch(input_ids=tokens[:, :t].clone(), seq_lens=seq_lens, prompt_lens=lens,
                    ids=prompts.ids, pad_id=prompts.pad_id,
                    token_fields={"logprobs": logprobs[:, :t].clone()},
                    seq_fields={**prompts.seq_fields, "truncated": truncated})


@register("generate")
def generate(engine: ModelEngine, batch: SeqBatch, args: GenerateArgs, ctx: CallContext) -> SeqBatch:
    """Responses to the batch's prompts (its prompt part; any response is ignored)."""
    if args.stop_strings and ctx.decode is None:
        raise ValueError("generate: stop_strings need a detokeniser; pass CallContext(decode=...)")
    prompts = SeqBatch(input_ids=batch.input_ids, seq_lens=batch.prompt_lens.clone(),
                       prompt_lens=batch.prompt_lens.clone(), ids=batch.ids,
                       seq_fields=batch.seq_fields, pad_id=batch.pad_id)
    prompts = expand_samples(prompts, args.num_samples)
    order = prompts.ids
    if prompts.size < engine.layout.dp:
        raise ValueError(f"generate: {prompts.size} samples cannot feed dp={engine.layout.dp} "
                         "replicas; give more prompts or a smaller dp")
    part = local_part(engine, prompts)
    out = generate_local(engine, part, args, ctx)
    return gather_parts(engine, out, order)


POOL_SEED_SALT = 0x5245484541525345
"""Mixed into the run's seed for the rehearsal pool's draws ("REHEARSE")."""


def pool_seed(seed: int) -> int:
    """The seed of the rehearsal pool's draws: the pool's sample ids (0..n-1) overlap the
    rollouts' (iteration * batch + j), so the pool draws from a stream of its own, still a
    function of the run's seed alone (the same under every layout)."""
    return _mix((seed & _MASK64) ^ POOL_SEED_SALT) >> 1  # a non-negative int64


@register("pool_generate")
def pool_generate(engine: ModelEngine, batch: SeqBatch, args: PoolGenerateArgs, ctx: CallContext) -> SeqBatch:
    """The policy's response to every prompt of the rehearsal pool `batch` (its prompt part),
    split over this layout's data-parallel replicas like `generate`, with draws keyed by
    (pool_seed(seed), iteration, pool index, position). Generated when ctx.step is a multiple
    of `every` (the actor's selection iterations) or when this engine has no responses to these
    prompts yet (a resumed run); otherwise the responses of the last generation, without a
    forward. The cache (token ids) lives in engine.state, so it is checkpointed with it."""
    state = engine.state
    ids = [int(i) for i in batch.ids]
    cached = state.get("pool_generate/seqs")
    if cached is not None and state.get("pool_generate/ids") == ids and ctx.step % args.every != 0:
        # the batch built from this very cache list (not rebuilt every iteration; a restored state is a new list)
        memo = getattr(engine, "pool_generate_batch", None)
        if memo is None or memo[0] is not cached:
            memo = (cached, SeqBatch.from_lists(cached, list(state["pool_generate/prompt_lens"]), ids=ids,
                                                pad_id=batch.pad_id))
            engine.pool_generate_batch = memo
        return memo[1]
    gen_ctx = dataclasses.replace(ctx, seed=pool_seed(ctx.seed), on_finished=None)
    out = generate(engine, batch, args, gen_ctx)
    state["pool_generate/ids"] = [int(i) for i in out.ids]
    state["pool_generate/seqs"] = [out.input_ids[i, : int(out.seq_lens[i])].tolist() for i in range(out.size)]
    state["pool_generate/prompt_lens"] = [int(p) for p in out.prompt_lens]
    return out
