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
    results = launch(dist_checks.run_jobs, (jobs,), LaunchSpec(nproc_per_node=4, log_dir=str(root / "logs")))
    return {name: results[0][i] for i, name in enumerate(plans)}, plans, root


def test_every_plan_ran_and_wrote_metrics(runs):
    histories, plans, root = runs
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
