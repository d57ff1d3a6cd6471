"""The executor: PPO gives the same rewards and losses under a searched plan, a heuristic plan
and on one device, because sampling is tied to the sample and not to the rank; so does GRPO at
sampling temperature 0.7."""

import dataclasses
import json

import pytest

from graph.placement.layout import DeviceMesh, Layout
from realloc.experiment import load_experiment
from realloc.planning import plan_experiment
from realloc.run import make_job
from runtime.execution.launch import LaunchSpec, launch
from tests.runtime import dist_checks

pytestmark = pytest.mark.slow

ITERATIONS = 3
AM_FLOOR = -0.05


def _job(exp, layouts, run_dir):
    return dataclasses.replace(make_job(exp, layouts), run_dir=str(run_dir))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("exec")
    exp = load_experiment("ppo_tiny", [f"train.iterations={ITERATIONS}", "graph.batch_size=8"])
    searched = dict(plan_experiment(exp, compare=False, quiet=True).plan.layouts)
    symmetric = dict(plan_experiment(load_experiment("ppo_tiny", ["plan.mode=heuristic:symmetric",
                                                                  "graph.batch_size=8"]),
                                     compare=False, quiet=True).plan.layouts)
    one = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    single = {c.name: one for c in exp.graph.calls}
    manual = dist_checks.ppo_six_layouts()
    plans = {"search": searched, "symmetric": symmetric, "manual": manual, "single": single}
    jobs = [_job(exp, layouts, root / name) for name, layouts in plans.items()]
    # GRPO under a manual plan of four different layouts, and on one device, in the same launch,
    # sampling at temperature 0.7 (the losses and the reference divide the logits by it too)
    grpo = load_experiment("grpo_tiny", [f"train.iterations={ITERATIONS}", "graph.batch_size=4",
                                         "graph.generate.temperature=0.7"])
    grpo_manual = {"actor_gen": Layout(mesh=DeviceMesh.span(0, 2), dp=1, tp=2, pp=1),
                   "reward_inf": Layout(mesh=DeviceMesh.span(2, 1), dp=1, tp=1, pp=1),
                   "ref_inf": Layout(mesh=DeviceMesh.span(2, 2), dp=2, tp=1, pp=1),
                   "actor_train": Layout(mesh=DeviceMesh.span(0, 4), dp=2, tp=1, pp=2)}
    grpo_single = {c.name: one for c in grpo.graph.calls}
    jobs += [_job(grpo, grpo_manual, root / "grpo_manual"), _job(grpo, grpo_single, root / "grpo_single")]
    plans.update({"grpo_manual": grpo_manual, "grpo_single": grpo_single})
    # Selective Rehearsal ranked by an Advantage Model (random init): the pool is scored by
    # rehearsal_score on two reward-model ranks (dp 2), away from the actor's train layout
    pool = root / "pool.jsonl"
    pool.write_text("".join(json.dumps({"prompt": f"{a}+{b}=", "answer": str(a + b)}) + "\n"
                            for a in range(4) for b in range(3)))
    am = load_experiment("ppo_tiny", [
        f"train.iterations={ITERATIONS}", "graph.batch_size=8", "models.reward.rule=null",
        "models.reward.value_head=true", "models.reward.arch=${models.actor.arch}", "graph.reward=null",
        "graph.reward_form=advantage", "graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_source=data",
        f"graph.train.rehearsal_path={pool}", "graph.train.rehearsal_rank=advantage",
        "graph.train.rehearsal_every=2", "graph.train.rehearsal_clusters=2", "graph.train.rehearsal_per_cluster=2",
        f"graph.train.rehearsal_min_reward={AM_FLOOR}"])
    am_manual = {**manual, "rehearsal_score": Layout(mesh=DeviceMesh.span(2, 2), dp=2, tp=1, pp=1)}
    scored = [_job(am, am_manual, root / "am_manual"), _job(am, {c.name: one for c in am.graph.calls},
                                                            root / "am_single")]
    # ... and by the AM's score of the policy's own responses to the pool (rehearsal_rank=
    # advantage_policy): rehearsal_gen samples them on two actor ranks (dp 2), not actor_gen's layout
    pol = load_experiment("ppo_tiny", [
        f"train.iterations={ITERATIONS}", "graph.batch_size=8", "models.reward.rule=null",
        "models.reward.value_head=true", "models.reward.arch=${models.actor.arch}", "graph.reward=null",
        "graph.reward_form=advantage", "graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_source=data",
        f"graph.train.rehearsal_path={pool}", "graph.train.rehearsal_rank=advantage_policy",
        "graph.train.rehearsal_every=2", "graph.train.rehearsal_clusters=2", "graph.train.rehearsal_per_cluster=2",
        f"graph.train.rehearsal_min_reward={AM_FLOOR}"])
    pol_manual = {**am_manual, "rehearsal_gen": Layout(mesh=DeviceMesh.span(2, 2), dp=2, tp=1, pp=1)}
    scored += [_job(pol, pol_manual, root / "pol_manual"), _job(pol, {c.name: one for c in pol.graph.calls},
                                                                root / "pol_single")]
    results = launch(dist_checks.run_jobs_and_pool_scores, (jobs, scored),
                     LaunchSpec(nproc_per_node=4, log_dir=str(root / "logs")))
    runs = {name: results[0][0][i] for i, name in enumerate(plans)}
    for k, name in enumerate(("am_manual", "am_single", "pol_manual", "pol_single")):
        # rank-merged: kept set on rank 0, direct scores on the reward ranks
        runs[name] = {key: value for r in range(4) for key, value in results[r][1][k].items()
                      if key != "history" or r == 0}
    return runs, plans, root


def test_every_plan_ran_and_wrote_metrics(runs):
    histories, plans, root = runs
    histories = {k: v for k, v in histories.items() if not k.startswith(("am_", "pol_"))}
    assert len({str(lay) for lay in plans["grpo_manual"].values()}) == 4
    for name, history in histories.items():
        assert [r["iteration"] for r in history] == list(range(1, ITERATIONS + 1)), name
        lines = (root / name / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(line)["iteration"] for line in lines] == [1, 2, 3]
        assert (root / name / "curves.png").exists()
    # the manual plan moves the actor and critic into other layouts after each train step
    assert histories["manual"][0]["realloc_bytes"] == 0
    assert all(r["realloc_bytes"] > 0 for r in histories["manual"][1:])
    assert all(r["realloc_bytes"] == 0 for r in histories["single"])
    # replicas of the trained actor and critic are freed after their last use, every iteration
    assert all(r["freed_bytes"] > 0 for r in histories["manual"])
    assert all(r["freed_bytes"] == 0 for r in histories["single"])
    assert len({str(lay) for lay in plans["manual"].values()}) == 6


@pytest.mark.parametrize("other", ["search", "symmetric", "manual", "grpo_manual"])
def test_plan_independence(runs, other):
    histories, _, _ = runs
    reference = histories["grpo_single" if other.startswith("grpo") else "single"]
    for ref, got in zip(reference, histories[other]):
        # rewards come from sampled tokens: identical tokens give identical rewards
        assert got["reward_inf/reward"] == ref["reward_inf/reward"], (other, got["iteration"])
        assert got["actor_gen/response_len"] == ref["actor_gen/response_len"]
        for key in ("actor_train/loss", "critic_train/loss", "actor_train/kl"):
            if key in ref:
                assert got[key] == pytest.approx(ref[key], abs=1e-4, rel=1e-4), (other, key, got["iteration"])



@pytest.mark.parametrize("plan", ["grpo_single", "grpo_manual"])
def test_losses_at_the_sampling_temperature(runs, plan):
    """At T = 0.7 the first update's ratio is exactly 1 (no clipping) and its KL to the reference
    (still the actor's weights) is 0: old, new and reference log-probs are all taken at T."""
    histories, _, _ = runs
    first = histories[plan][0]
    assert first["actor_train/clip_frac"] == 0.0
    assert first["actor_train/kl"] == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("plan", ["am_manual", "am_single"])
def test_rehearsal_ranked_by_the_advantage_model_uses_its_direct_scores(runs, plan):
    """rehearsal_rank=advantage: the pairs the actor keeps and their mean score are those of the
    reward model's `advantage_model` interface scoring the pool directly (here on reward_inf's
    layout); the scores come from rehearsal_score's ranks through the dataflow (manual plan)."""
    got = runs[0][plan]
    direct = dict(zip(map(tuple, got["pool"]), got["direct"]))
    kept = [direct[tuple(seq)] for seq in got["kept"]]
    assert 0 < len(kept) <= 2 * 2  # clusters x per_cluster
    assert all(score > AM_FLOOR for score in kept)
    assert got["kept_reward"] == pytest.approx(sum(kept) / len(kept), abs=1e-5)
    assert got["history"][-1]["actor_train/rehearsal_size"] == len(kept)
    assert got["history"][-1]["actor_train/rehearsal_kept_reward"] == pytest.approx(got["kept_reward"])
    # the same selection under both plans
    other = runs[0]["am_single" if plan == "am_manual" else "am_manual"]
    assert got["kept"] == other["kept"]


@pytest.mark.parametrize("plan", ["pol_manual", "pol_single"])
def test_rehearsal_ranked_by_the_advantage_model_on_the_policys_responses(runs, plan):
    """rehearsal_rank=advantage_policy: the actor keeps the policy's own responses to pool
    prompts (not the pool's reference pairs), each scored by rehearsal_score above the floor,
    and their mean score is that of a direct `advantage_model` scoring of the kept sequences on
    reward_inf's layout; the same responses are sampled and kept under both plans (the pool's
    draws are tied to the pool index, not the rank: rehearsal_gen is dp 2 in the manual plan)."""
    got = runs[0][plan]
    kept, direct = got["kept"], got["kept_direct"]
    assert 0 < len(kept) <= 2 * 2 and len(direct) == len(kept)
    prompts = {tuple(p) for p in got["pool_prompts"]}
    assert all(tuple(seq[:n]) in prompts for seq, n in zip(kept, got["kept_prompt_lens"]))  # to pool prompts
    assert not any(seq in got["pool"] for seq in kept)  # the policy's responses, not the reference pairs
    assert all(score > AM_FLOOR for score in direct)
    assert got["kept_reward"] == pytest.approx(sum(direct) / len(direct), abs=1e-5)
    assert got["history"][-1]["actor_train/rehearsal_kept_reward"] == pytest.approx(got["kept_reward"])
    other = runs[0]["pol_single" if plan == "pol_manual" else "pol_manual"]
    assert got["kept"] == other["kept"]
