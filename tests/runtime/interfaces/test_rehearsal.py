"""Selective Rehearsal: k-means and the per-cluster selection on small cases worked by hand,
and the rehearsal loss mixed into ppo_actor (table "model" of tests/.../test_train.py)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from graph.catalog import PPOActorArgs
from runtime.data.batch import SeqBatch
from runtime.interfaces import CallContext, run_interface
from runtime.interfaces.rehearsal import kmeans, mean_response_logprob, select_per_cluster
from tests.runtime.interfaces.test_train import RL_PROMPTS, RL_SEQS, VOCAB, _BigramEngine, _rl_batch


def test_kmeans_two_obvious_groups() -> None:
    # start: point 0 (0,0); farthest is point 3 (10,1); Lloyd keeps {0,1,2} / {3,4}
    pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [10.0, 1.0], [9.0, 0.0]])
    assert kmeans(pts, 2).tolist() == [0, 0, 0, 1, 1]


def test_kmeans_ties_and_centre_updates_by_hand() -> None:
    """1-D: 0, 4, 5, 10; start centres 0 and 10 (the farthest); 5 is equally far from both
    and goes to the lower-numbered centre: {0,4,5} {10}; centres 3 and 10; 5 stays (2 < 5)."""
    assert kmeans(torch.tensor([[0.0], [4.0], [5.0], [10.0]]), 2).tolist() == [0, 0, 0, 1]
    # 0, 1, 2, 9, 10 with k=2: start 0 and 10; {0,1,2} {9,10}
    assert kmeans(torch.tensor([[0.0], [1.0], [2.0], [9.0], [10.0]]), 2).tolist() == [0, 0, 0, 1, 1]
    # k=3 on 0, 1, 10, 11, 20: start 0, 20, then 10 (farthest from both: 10); Lloyd: {0,1}
    # {20} {10,11}, numbered by start point
    assert kmeans(torch.tensor([[0.0], [1.0], [10.0], [11.0], [20.0]]), 3).tolist() == [0, 0, 2, 2, 1]


def test_kmeans_fewer_distinct_points_than_k() -> None:
    assert kmeans(torch.tensor([[1.0], [1.0], [1.0]]), 3).tolist() == [0, 0, 0]


def test_select_per_cluster_by_hand() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2])
    scores = torch.tensor([0.5, 2.0, 1.0, -0.2, 0.3, 0.3, -1.0])
    # cluster 0: 2.0 (1), 1.0 (2) kept; cluster 1: 0.3 (4) and 0.3 (5) tie -> 4 first, only
    # 0.3s are > 0; cluster 2: nothing above 0
    assert select_per_cluster(labels, scores, per_cluster=2, min_score=0.0) == [1, 2, 4, 5]
    assert select_per_cluster(labels, scores, per_cluster=1, min_score=0.0) == [1, 4]
    assert select_per_cluster(labels, scores, per_cluster=3, min_score=0.6) == [1, 2]


def _emb_engine(seed: int = 0) -> _BigramEngine:
    engine = _BigramEngine(seed=seed)
    # prompts of RL_SEQS start with 1, 2, 3, 4: embed by first token -> clusters {1,2} {3,4}
    engine.prompt_embeddings = lambda b: b.input_ids[:, :1].float()  # type: ignore[attr-defined]
    return engine


def test_rehearsal_loss_by_hand_and_reselection_every_n() -> None:
    """rewards 1, -2, 0.5, 3 and 2 clusters {seq 0, seq 1} {seq 2, seq 3}, one kept per cluster
    above 0: seqs 0 and 3. The rehearsal loss is the mean cross-entropy of their response
    tokens, weighted by rehearsal_coef; the selection holds for rehearsal_every=2 calls."""
    engine = _emb_engine()
    rewards = [1.0, -2.0, 0.5, 3.0]
    coef = 0.3
    args = PPOActorArgs(kl_coef=0.0, gamma=1.0, lam=1.0, whiten_advantages=False, reward_clip=100.0,
                        rehearsal_coef=coef, rehearsal_every=2, rehearsal_clusters=2, rehearsal_per_cluster=1)
    table = engine.table.detach().clone()
    out = run_interface("ppo_actor", engine, _rl_batch(engine, rewards), args, CallContext())
    kept = [0, 3]
    ce = [-math.log(torch.softmax(table[RL_SEQS[i][t - 1]], -1)[RL_SEQS[i][t]].item())
          for i in kept for t in range(RL_PROMPTS[i], len(RL_SEQS[i]))]
    n = [len(s) - p for s, p in zip(RL_SEQS, RL_PROMPTS)]
    pg = -sum(r * k for r, k in zip(rewards, n)) / sum(n)
    assert out["rehearsal_size"] == 2 and out["rehearsal_clusters"] == 2
    assert out["rehearsal_kept_reward"] == pytest.approx(2.0)
    assert out["rehearsal_loss"] == pytest.approx(sum(ce) / len(ce), abs=1e-6)
    assert out["loss"] == pytest.approx(pg + coef * sum(ce) / len(ce), abs=1e-6)
    # second call: rewards changed so that a fresh selection would keep seqs 1 and 2, but
    # rehearsal_every=2 keeps the old selection; the third call reselects
    flipped = [-1.0, 2.0, 4.0, -3.0]
    run_interface("ppo_actor", engine, _rl_batch(engine, flipped), args, CallContext())
    assert engine.state["rehearsal/seqs"] == [list(RL_SEQS[0]), list(RL_SEQS[3])]
    run_interface("ppo_actor", engine, _rl_batch(engine, flipped), args, CallContext())
    assert engine.state["rehearsal/seqs"] == [list(RL_SEQS[1]), list(RL_SEQS[2])]


def test_nothing_above_the_threshold_means_no_rehearsal_loss() -> None:
    engine = _emb_engine()
    args = PPOActorArgs(kl_coef=0.0, whiten_advantages=False, rehearsal_coef=0.5)
    out = run_interface("ppo_actor", engine, _rl_batch(engine, [-1.0, -2.0, -0.5, -3.0]), args, CallContext())
    assert out["rehearsal_size"] == 0 and out["rehearsal_loss"] == 0.0
    assert len(engine.trainer.steps[0]["ids"]) == 1  # PPO micro-batch only


def test_rehearsal_args_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="rehearsal_coef"):
        PPOActorArgs(rehearsal_coef=-0.1)
    with pytest.raises(ValueError, match="rehearsal_every"):
        PPOActorArgs(rehearsal_every=0)


# ----------------------------------------------------------------- rehearsal_source=data

POOL_SEQS = ([1, 2, 3], [2, 4, 4], [5, 6], [6, 5, 1], [1, 4])
POOL_PROMPTS = [1, 1, 1, 2, 1]


def _pool_engine() -> _BigramEngine:
    """Bigram logits 0 except 4 on 1->2, 2->3 and 5->1; embedding = first token, so the
    pool's clusters are {1, 2, 1} = seqs {0, 1, 4} and {5, 6} = seqs {2, 3}."""
    engine = _emb_engine()
    table = torch.zeros(VOCAB, VOCAB)
    for a, b in ((1, 2), (2, 3), (5, 1)):
        table[a, b] = 4.0
    engine.table = table.requires_grad_(True)
    return engine


def _pool() -> SeqBatch:
    return SeqBatch.from_lists([list(s) for s in POOL_SEQS], POOL_PROMPTS)


def test_mean_response_logprob_by_hand() -> None:
    b = SeqBatch.from_lists([[1, 2, 3], [4, 5], [6]], [1, 0, 1])
    lp = torch.tensor([[9.0, -1.0, -3.0], [9.0, -2.0, 7.0], [9.0, 9.0, 9.0]])
    # seq 0: answer positions 1, 2 -> -2; seq 1: prompt_len 0, position 0 has no prediction,
    # position 1 -> -2 (position 2 is padding); seq 2: no answer token -> -inf
    assert mean_response_logprob(b, lp).tolist() == [-2.0, -2.0, -math.inf]


def test_rehearsal_from_data_pool_by_hand() -> None:
    """A boosted row r gives log p(boosted) = 4 - Z and log p(other) = -Z with Z = log(6 + e^4);
    a plain row gives -log 7. Mean answer log-likelihoods: seq 0 (1->2, 2->3) 4 - Z; seq 1
    (2->4, 4->4) (-Z - log 7) / 2; seq 2 (5->6) -Z; seq 3 (5->1) 4 - Z; seq 4 (1->4) -Z.
    Cluster {0, 1, 4} ranks 0 > 1 > 4, cluster {2, 3} ranks 3 > 2: one per cluster keeps 0, 3;
    two keep 0, 1, 2, 3. The rollouts' rewards (all below 0) play no part."""
    z, l7 = math.log(6 + math.e ** 4), math.log(7)
    coef = 0.25
    engine = _pool_engine()
    args = PPOActorArgs(kl_coef=0.0, gamma=1.0, lam=1.0, whiten_advantages=False, reward_clip=100.0,
                        rehearsal_coef=coef, rehearsal_clusters=2, rehearsal_per_cluster=1,
                        rehearsal_source="data", rehearsal_path="pool.jsonl")
    rewards = [-1.0, -2.0, -0.5, -3.0]
    ctx = CallContext(side_inputs={"rehearsal_pool": _pool()})
    out = run_interface("ppo_actor", engine, _rl_batch(engine, rewards), args, ctx)
    assert engine.state["rehearsal/seqs"] == [list(POOL_SEQS[0]), list(POOL_SEQS[3])]
    assert out["rehearsal_size"] == 2 and out["rehearsal_clusters"] == 2
    assert out["rehearsal_kept_reward"] == pytest.approx(4 - z, abs=1e-6)  # mean log-likelihood of the kept
    # rehearsal loss: cross-entropy of the kept answers' tokens (1->2, 2->3, 5->1), each z - 4
    assert out["rehearsal_loss"] == pytest.approx(z - 4, abs=1e-6)
    n = [len(s) - p for s, p in zip(RL_SEQS, RL_PROMPTS)]
    pg = -sum(r * k for r, k in zip(rewards, n)) / sum(n)
    assert out["loss"] == pytest.approx(pg + coef * (z - 4), abs=1e-6)
    two = PPOActorArgs(**{**args.__dict__, "rehearsal_per_cluster": 2})
    fresh = _pool_engine()
    run_interface("ppo_actor", fresh, _rl_batch(fresh, rewards), two, ctx)
    assert fresh.state["rehearsal/seqs"] == [list(POOL_SEQS[i]) for i in (0, 1, 2, 3)]
    assert (-z - l7) / 2 > -z  # seq 1 above seq 4, as worked above


def test_rehearsal_source_data_needs_the_pool_side_input() -> None:
    engine = _pool_engine()
    args = PPOActorArgs(kl_coef=0.0, rehearsal_coef=0.5, rehearsal_source="data", rehearsal_path="p.jsonl")
    with pytest.raises(ValueError, match="rehearsal_pool"):
        run_interface("ppo_actor", engine, _rl_batch(engine, [1.0, 1.0, 1.0, 1.0]), args, CallContext())


def test_rollouts_source_is_the_default_and_ignores_a_pool() -> None:
    """The default selects from the rollouts as before, even when a pool is at hand."""
    assert PPOActorArgs().rehearsal_source == "rollouts" and PPOActorArgs().rehearsal_path is None
    engine = _emb_engine()
    args = PPOActorArgs(kl_coef=0.0, whiten_advantages=False, rehearsal_coef=0.3, rehearsal_clusters=2,
                        rehearsal_per_cluster=1)
    run_interface("ppo_actor", engine, _rl_batch(engine, [1.0, -2.0, 0.5, 3.0]), args,
                  CallContext(side_inputs={"rehearsal_pool": _pool()}))
    assert engine.state["rehearsal/seqs"] == [list(RL_SEQS[0]), list(RL_SEQS[3])]


def test_rehearsal_source_args_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="rehearsal_source: 'sft' is not one of rollouts, data"):
        PPOActorArgs(rehearsal_source="sft")
    with pytest.raises(ValueError, match="rehearsal_source=data needs the pool: set graph.train.rehearsal_path"):
        PPOActorArgs(rehearsal_coef=0.5, rehearsal_source="data")
    with pytest.raises(ValueError, match="rehearsal_path='x.jsonl' is read only with rehearsal_source=data"):
        PPOActorArgs(rehearsal_path="x.jsonl")


# ----------------------------------------------------------------- rehearsal_rank=advantage


def test_rehearsal_from_data_ranked_by_the_advantage_model_by_hand() -> None:
    """Clusters {0, 1, 4} and {2, 3} (first tokens 1, 2, 1 and 5, 6). AM scores of seqs 0-4: 0.4,
    0.9, -0.1, -0.3, 0.7: cluster {0, 1, 4} ranks 1 (0.9) > 4 (0.7) > 0 (0.4); cluster {2, 3} has nothing
    above the default floor 0. Two per cluster keep seqs 1 and 4 (the policy's likelihood,
    which would keep 0 and 3, plays no part); mean kept score 0.8; loss: cross-entropy of their
    answer tokens (2->4, 4->4, 4 <- 1) under the bigram table. With a floor of -0.2 cluster
    {2, 3} keeps seq 2 (-0.1 > -0.2 > -0.3); with a floor of 0.5 only seqs 1 and 4 pass and
    one per cluster keeps seq 1."""
    z, l7 = math.log(6 + math.e ** 4), math.log(7)
    engine = _pool_engine()
    args = PPOActorArgs(kl_coef=0.0, gamma=1.0, lam=1.0, whiten_advantages=False, reward_clip=100.0,
                        rehearsal_coef=0.25, rehearsal_clusters=2, rehearsal_per_cluster=2,
                        rehearsal_source="data", rehearsal_path="pool.jsonl", rehearsal_rank="advantage")
    scores = torch.tensor([0.4, 0.9, -0.1, -0.3, 0.7])
    pool = _pool().with_fields(seq_fields={"pool_scores": scores})
    ctx = CallContext(side_inputs={"rehearsal_pool": pool})
    out = run_interface("ppo_actor", engine, _rl_batch(engine, [1.0, 1.0, 1.0, 1.0]), args, ctx)
    assert engine.state["rehearsal/seqs"] == [list(POOL_SEQS[1]), list(POOL_SEQS[4])]
    assert out["rehearsal_size"] == 2 and out["rehearsal_clusters"] == 2
    assert out["rehearsal_kept_reward"] == pytest.approx(0.8)
    # answer tokens: seq 1 (2->4: -Z, a boosted row's other; 4->4: -log 7), seq 4 (1->4: -Z)
    assert out["rehearsal_loss"] == pytest.approx((2 * z + l7) / 3, abs=1e-6)
    for floor, per, want in ((-0.2, 2, [1, 2, 4]), (0.5, 1, [1])):
        fresh = _pool_engine()
        a = PPOActorArgs(**{**args.__dict__, "rehearsal_min_reward": floor, "rehearsal_per_cluster": per})
        run_interface("ppo_actor", fresh, _rl_batch(fresh, [1.0] * 4), a, ctx)
        assert fresh.state["rehearsal/seqs"] == [list(POOL_SEQS[i]) for i in want], floor


def test_rehearsal_rank_advantage_needs_the_pool_scores() -> None:
    engine = _pool_engine()
    args = PPOActorArgs(kl_coef=0.0, rehearsal_coef=0.5, rehearsal_source="data", rehearsal_path="p.jsonl",
                        rehearsal_rank="advantage")
    ctx = CallContext(side_inputs={"rehearsal_pool": _pool()})
    with pytest.raises(ValueError, match="rehearsal_scores"):
        run_interface("ppo_actor", engine, _rl_batch(engine, [1.0] * 4), args, ctx)


def test_rehearsal_rank_args() -> None:
    assert PPOActorArgs().rehearsal_rank == "likelihood"
    with pytest.raises(ValueError, match="rehearsal_rank: 'am' is not one of likelihood, advantage"):
        PPOActorArgs(rehearsal_rank="am")
    with pytest.raises(ValueError, match="rehearsal_rank=advantage ranks a data pool"):
        PPOActorArgs(rehearsal_rank="advantage")


def test_pool_scores_between_selections_returns_the_last_scores_without_a_forward() -> None:
    """`pool_scores` on a step that is not a multiple of `every` returns the engine's cached
    scores of the same pairs in the same form (this engine has no model: a forward would fail);
    on a selection step, for other pairs or in the other form, it scores again."""
    from types import SimpleNamespace

    from graph.catalog import PoolScoresArgs

    pool = _pool()
    engine = SimpleNamespace(spec=SimpleNamespace(value_head=True, role="reward"),
                             state={"pool_scores/advantage/ids": list(pool.ids),
                                    "pool_scores/advantage/values": [1.0, 2, 3, 4, 5]})
    out = run_interface("pool_scores", engine, pool, PoolScoresArgs(every=10), CallContext(step=13))
    assert out.seq_fields["pool_scores"].tolist() == [1.0, 2, 3, 4, 5]
    with pytest.raises(AttributeError):  # another form has no scores yet: it runs the model
        run_interface("pool_scores", engine, pool, PoolScoresArgs(form="reward", every=10), CallContext(step=13))
    for step, ids in ((20, list(pool.ids)), (13, [9, 8, 7, 6, 5])):
        engine.state["pool_scores/advantage/ids"] = ids
        with pytest.raises(AttributeError):  # it runs the model
            run_interface("pool_scores", engine, pool, PoolScoresArgs(every=10), CallContext(step=step))


# ----------------------------------------------------------------- rehearsal_rank=advantage_policy

POLICY_SEQS = ([1, 4, 4], [2, 3], [5, 1], [6, 5, 2], [1, 2])
"""The policy's responses to the pool's prompts [1], [2], [5], [6, 5], [1] (POOL_PROMPTS)."""


def _actor_call(args: PPOActorArgs, inputs: tuple[str, ...]) -> object:
    from graph.spec import Call, CallKind

    return Call(name="actor_train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor", args=args,
                inputs=("seq", "old_logp", "ref_logp", "rewards", "values", *inputs), batch_size=4)


def _dispatcher_with_pool(path: str) -> object:
    """A StepDispatcher holding only the rehearsal pool cache (what `_rehearsal_pool` reads)."""
    from runtime.execution.dispatch import StepDispatcher

    dispatcher = StepDispatcher.__new__(StepDispatcher)
    dispatcher.rehearsal_pools = {path: _pool()}
    return dispatcher


def test_rehearsal_ranked_on_the_policys_responses_by_hand() -> None:
    """rehearsal_rank=advantage_policy: the pool the actor selects from is the policy's responses
    (key rehearsal_responses) with the AM's scores of them (key rehearsal_scores, sent in another
    sample order: aligned by pool index). Clusters by prompt embedding (first token): {0, 1, 4}
    and {2, 3}, as for the reference pairs. Scores 0.4, 0.9, -0.1, -0.3, 0.7: two per cluster
    above 0 keep responses 1 ([2, 3]) and 4 ([1, 2]); mean score 0.8. The rehearsal loss is
    their answer tokens' cross-entropy: 2->3 and 1->2, both boosted rows' boosted token,
    Z - 4 each, Z = log(6 + e^4) (the reference answers 2->4, 4->4, 1->4 would give
    (2Z + log 7) / 3)."""
    from runtime.data.binding import Field

    z = math.log(6 + math.e ** 4)
    args = PPOActorArgs(kl_coef=0.0, gamma=1.0, lam=1.0, whiten_advantages=False, reward_clip=100.0,
                        rehearsal_coef=0.25, rehearsal_clusters=2, rehearsal_per_cluster=2,
                        rehearsal_source="data", rehearsal_path="pool.jsonl", rehearsal_rank="advantage_policy")
    responses = SeqBatch.from_lists([list(s) for s in POLICY_SEQS], POOL_PROMPTS)
    order = (4, 2, 0, 3, 1)
    scores = Field(False, torch.tensor([[0.4, 0.9, -0.1, -0.3, 0.7][i] for i in order]), order)
    call = _actor_call(args, ("rehearsal_scores", "rehearsal_responses"))
    side = _dispatcher_with_pool("pool.jsonl")._rehearsal_pool(
        call, {"rehearsal_scores": scores, "rehearsal_responses": responses})
    pool = side["rehearsal_pool"]
    assert pool.input_ids.tolist() == responses.input_ids.tolist()
    assert pool.seq_fields["pool_scores"].tolist() == pytest.approx([0.4, 0.9, -0.1, -0.3, 0.7])
    engine = _pool_engine()
    out = run_interface("ppo_actor", engine, _rl_batch(engine, [1.0] * 4), args, CallContext(side_inputs=side))
    assert engine.state["rehearsal/seqs"] == [list(POLICY_SEQS[1]), list(POLICY_SEQS[4])]
    assert engine.state["rehearsal/prompt_lens"] == [1, 1]
    assert out["rehearsal_size"] == 2 and out["rehearsal_clusters"] == 2
    assert out["rehearsal_kept_reward"] == pytest.approx(0.8)
    assert out["rehearsal_loss"] == pytest.approx(z - 4, abs=1e-6)
    # rehearsal_rank=advantage on the same scores rehearses the reference pairs instead
    ref_side = _dispatcher_with_pool("pool.jsonl")._rehearsal_pool(
        _actor_call(dataclasses.replace(args, rehearsal_rank="advantage"), ("rehearsal_scores",)),
        {"rehearsal_scores": scores})
    assert ref_side["rehearsal_pool"].input_ids.tolist() == _pool().input_ids.tolist()


def test_rehearsal_rank_advantage_policy_args() -> None:
    with pytest.raises(ValueError, match="rehearsal_rank=advantage_policy ranks a data pool"):
        PPOActorArgs(rehearsal_rank="advantage_policy")
    assert PPOActorArgs(rehearsal_rank="advantage_policy", rehearsal_source="data").rehearsal_rank == "advantage_policy"


def test_pool_generate_draws_from_the_pool_seed_and_caches_between_selections(monkeypatch) -> None:
    """pool_generate on a selection step (a multiple of `every`) runs `generate` with the pool's
    own seed (a function of the run's seed only, not the run's seed itself: the pool's indices
    overlap the rollouts' sample ids) and no streaming; on other steps it returns the responses
    of the last generation for the same prompts without generating; other prompts or a
    selection step generate again."""
    from types import SimpleNamespace

    from graph.catalog import PoolGenerateArgs
    from runtime.interfaces import generate as gen_module

    seen: list[CallContext] = []

    def fake_generate(engine: object, batch: SeqBatch, args: object, ctx: CallContext) -> SeqBatch:
        seen.append(ctx)
        seqs = [batch.input_ids[i, : int(batch.prompt_lens[i])].tolist() + [3, ctx.step] for i in range(batch.size)]
        return SeqBatch.from_lists(seqs, batch.prompt_lens.tolist(), ids=list(batch.ids))

    monkeypatch.setattr(gen_module, "generate", fake_generate)
    engine = SimpleNamespace(state={})
    pool, args = _pool(), PoolGenerateArgs(every=10, max_new_tokens=2)
    first = run_interface("pool_generate", engine, pool, args, CallContext(seed=7, step=10, on_finished=print))
    assert len(seen) == 1 and seen[0].seed == gen_module.pool_seed(7) != 7 and seen[0].on_finished is None
    assert gen_module.pool_seed(7) == gen_module.pool_seed(7) >= 0 and gen_module.pool_seed(8) != gen_module.pool_seed(7)
    want = [list(POOL_SEQS[i][: POOL_PROMPTS[i]]) + [3, 10] for i in range(5)]
    assert [first.input_ids[i, : int(first.seq_lens[i])].tolist() for i in range(5)] == want
    cached = run_interface("pool_generate", engine, pool, args, CallContext(seed=7, step=13))
    assert len(seen) == 1  # no generation
    assert [cached.input_ids[i, : int(cached.seq_lens[i])].tolist() for i in range(5)] == want
    assert cached.prompt_lens.tolist() == POOL_PROMPTS and list(cached.ids) == list(pool.ids)
    assert run_interface("pool_generate", engine, pool, args, CallContext(seed=7, step=14)) is cached  # not rebuilt
    run_interface("pool_generate", engine, pool, args, CallContext(seed=7, step=20))
    other = SeqBatch.from_lists([list(s) for s in POOL_SEQS], POOL_PROMPTS, ids=[9, 8, 7, 6, 5])
    run_interface("pool_generate", engine, other, args, CallContext(seed=7, step=21))
    assert [c.step for c in seen] == [10, 20, 21]


def test_pool_generate_args() -> None:
    from graph.catalog import PoolGenerateArgs

    with pytest.raises(ValueError, match="every must be >= 1"):
        PoolGenerateArgs(every=0)
    with pytest.raises(ValueError, match="num_samples must be 1"):
        PoolGenerateArgs(num_samples=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        PoolGenerateArgs(max_new_tokens=0)
