"""Selective Rehearsal (Peng et al. 2023, arXiv 2309.10202, Sec. 3.2): which rollouts the
PPO actor rehearses with a supervised loss.

The paper clusters the PPO prompts by their embeddings (SimCSE there) so that the kept data
covers every kind of prompt, and keeps within each cluster the samples the policy is already
good at, ranked by the Advantage Model's score; a supervised (NLL) loss on them is mixed
into the PPO loss with a small weight (gamma there, `rehearsal_coef` here). The form used
here: the embedding is the ACTOR's own mean last hidden state over the prompt tokens; k-means
(`kmeans`, deterministic farthest-point start) makes `rehearsal_clusters` clusters; per
cluster the `rehearsal_per_cluster` rollouts of highest reward above `rehearsal_min_reward`
(0 = better than expected under an AM) are kept (`select_per_cluster`). The kept set is
re-selected every `rehearsal_every` iterations from that iteration's rollouts and
rehearsed at every step in between (ppo_actor).

`rehearsal_source=data` selects instead from a fixed supervised pool (graph.train.
rehearsal_path: {prompt, answer} records, e.g. the SFT data), so that a skill the PPO prompts
lack can be rehearsed. The pool's prompts are clustered the same way; the rank within a
cluster is, with rehearsal_rank=likelihood (the default), the policy's own mean per-token
log-likelihood of the reference answer (`response_loglik`, higher = the policy is already good
on it; no threshold: the top `rehearsal_per_cluster` of every cluster are kept), or, with
rehearsal_rank=advantage, the graph's reward model's score of each (prompt, reference answer)
pair, kept above rehearsal_min_reward; with rehearsal_rank=advantage_policy (the paper's
criterion) the pool is the policy's own responses to the pool's prompts (the `pool_generate`
call, on the actor's workers), ranked by the reward model's score of each, and the kept
responses are rehearsed. Those scores are computed on the reward model's own workers by the
`pool_scores` call and reach the actor as the pool's sequence field `pool_scores`
(docs/advantage-model.md).

The selection functions are pure; `prompt_embeddings` runs the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from runtime.data.batch import SeqBatch
from runtime.engine.schedule import micro_batch_split, run_micro_batches

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine


def kmeans(points: torch.Tensor, k: int, *, iters: int = 50) -> torch.Tensor:
    """[n] cluster labels of `points` [n, d] by Lloyd's k-means with a deterministic start:
    the first centre is point 0, each next one the point farthest from the centres so far
    (lowest index on ties). Fewer than k distinct points give fewer clusters; labels are
    numbered by first appearance of their start point."""
    x = points.double()
    n = x.shape[0]
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    centres = [x[0]]
    dist = ((x - x[0]) ** 2).sum(1)
    while len(centres) < min(k, n):
        far = int(torch.argmax(dist))  # first maximum: lowest index
        if dist[far] <= 0:
            break
        centres.append(x[far])
        dist = torch.minimum(dist, ((x - x[far]) ** 2).sum(1))
    c = torch.stack(centres)
    labels = torch.cdist(x, c).argmin(1)
    for _ in range(iters):
        c = torch.stack([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(len(c))])
        new = torch.cdist(x, c).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def select_per_cluster(labels: torch.Tensor, scores: torch.Tensor, *, per_cluster: int,
                       min_score: float) -> list[int]:
    """Indices kept: in every cluster, the `per_cluster` highest-scoring samples whose score
    is > min_score (lower index first on ties); sorted."""
    keep: list[int] = []
    for c in sorted(set(labels.tolist())):
        members = [i for i in range(len(labels)) if int(labels[i]) == c and float(scores[i]) > min_score]
        members.sort(key=lambda i: (-float(scores[i]), i))
        keep.extend(members[:per_cluster])
    return sorted(keep)


def _final_norm(engine: ModelEngine) -> torch.nn.Module | None:
    """The final norm of the last pipeline stage (None on earlier stages, which have none)."""
    for name, module in engine.module.named_modules():
        if name.endswith("final_layernorm"):
            return module
    if engine.is_last_stage:
        raise ValueError(f"rehearsal: model {engine.spec.role!r} has no final layer norm to read hidden states from")
    return None


def prompt_embeddings(engine: Any, batch: SeqBatch) -> torch.Tensor:
    """[b, hidden] mean of the model's last hidden state (after the final norm) over each
    sequence's prompt tokens, from a forward of the prompts alone; the whole batch on every
    rank (no data-parallel split), the last pipeline stage's result on every stage. An engine
    may supply its own `prompt_embeddings(batch)` (tests)."""
    own = getattr(engine, "prompt_embeddings", None)
    if callable(own):
        return own(batch)
    prompts = SeqBatch.from_lists([batch.input_ids[i, : max(int(batch.prompt_lens[i]), 1)].tolist()
                                   for i in range(batch.size)],
                                  [max(int(p), 1) for p in batch.prompt_lens.tolist()], ids=list(batch.ids))
    captured: list[torch.Tensor] = []
    norm = _final_norm(engine)  # the loss function runs on the last stage only, which has it
    hook = None if norm is None else norm.register_forward_hook(lambda _m, _i, out: captured.append(
        (out[0] if isinstance(out, tuple) else out).detach()))

    def loss_fn(mb: SeqBatch, out: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        hidden = captured.pop().float().transpose(0, 1).cpu()  # [s, b, h] -> [b, s, h]
        mask = (torch.arange(hidden.shape[1])[None, :] < mb.seq_lens[:, None]).float()
        mean = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return torch.zeros((), device=out.device), {"ids": mb.ids, "emb": mean}

    engine.module.eval()
    try:
        with torch.no_grad():
            reports = run_micro_batches(engine, micro_batch_split(prompts, engine.layout.micro_batches),
                                        loss_fn, forward_only=True)
    finally:
        if hook is not None:
            hook.remove()
    rows = {sid: r["emb"][j] for r in reports for j, sid in enumerate(r["ids"])}
    return torch.stack([rows[sid] for sid in batch.ids])


def mean_response_logprob(batch: SeqBatch, token_logprobs: torch.Tensor) -> torch.Tensor:
    """[b] mean over each sequence's answer tokens (positions >= max(prompt_len, 1)) of
    `token_logprobs` [b, s] (log p(token t | tokens < t)); -inf for a sequence with none."""
    mask = batch.response_mask() & (batch.positions() >= 1)
    lp = token_logprobs.float().cpu()[:, : mask.shape[1]]
    total = torch.where(mask, lp, torch.zeros_like(lp)).sum(1)
    count = mask.sum(1)
    return torch.where(count > 0, total / count.clamp(min=1), torch.full_like(total, -torch.inf))


def response_loglik(engine: Any, batch: SeqBatch) -> torch.Tensor:
    """[b] the policy's mean per-token log-likelihood of each sequence's answer, from a
    forward of the whole batch on every rank (no data-parallel split). An engine may supply
    its own `logprobs(batch)` [b, s] (tests)."""
    own = getattr(engine, "logprobs", None)
    if callable(own):
        return mean_response_logprob(batch, own(batch))
    from runtime.interfaces.inference import shifted_logprobs

    def loss_fn(mb: SeqBatch, out: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        lp = shifted_logprobs(engine, mb, out)
        return torch.zeros((), device=out.device), {"ids": mb.ids, "score": mean_response_logprob(mb, lp.detach())}

    engine.set_training(False)
    with torch.no_grad():
        reports = run_micro_batches(engine, micro_batch_split(batch, engine.layout.micro_batches),
                                    loss_fn, forward_only=True)
    rows = {sid: r["score"][j] for r in reports for j, sid in enumerate(r["ids"])}
    return torch.stack([rows[sid] for sid in batch.ids])
