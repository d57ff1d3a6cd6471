"""The policy-gradient family's tiny experiments run together in one launch of 4 workers:
each under its searched plan for a few iterations, and DAPO also on one device, where its
dynamic sampling must keep and drop the same groups and train to the same loss."""

import dataclasses
import math

import pytest

from graph.placement.layout import DeviceMesh, Layout
from realloc.experiment import load_experiment
from realloc.planning import plan_experiment
from realloc.run import make_job
from runtime.execution.launch import LaunchSpec, launch
from tests.runtime import dist_checks

pytestmark = pytest.mark.slow

ITERATIONS = 2
NAMES = ("rloo_tiny", "reinforce_pp_tiny", "gspo_tiny", "dr_grpo_tiny", "dapo_tiny")
MANUAL = {"actor_gen": Layout(mesh=DeviceMesh.span(0, 2), dp=1, tp=2, pp=1),
          "reward_inf": Layout(mesh=DeviceMesh.span(2, 1), dp=1, tp=1, pp=1),
          "actor_train": Layout(mesh=DeviceMesh.span(0, 4), dp=2, tp=1, pp=2)}
"""DAPO's calls on three layouts: the actor generates in a tp=2 replica of its dp=2 x pp=2 home,
the rule reward runs on another device, so rounds send data and broadcast rewards."""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("pg")
    jobs, names = [], []
    for name in NAMES:
        exp = load_experiment(name, [f"train.iterations={ITERATIONS}", "graph.batch_size=4",
                                     "plan.time_budget_s=0.05"])
        layouts = dict(plan_experiment(exp, compare=False, quiet=True).plan.layouts)
        jobs.append(dataclasses.replace(make_job(exp, layouts), run_dir=str(root / name)))
        names.append(name)
        if name == "dapo_tiny":  # also on one device, and under three layouts that move the actor
            one = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
            for label, plan in (("dapo_single", {c.name: one for c in exp.graph.calls}), ("dapo_manual", MANUAL)):
                jobs.append(dataclasses.replace(make_job(exp, plan), run_dir=str(root / label)))
                names.append(label)
    results = launch(dist_checks.run_jobs, (jobs,), LaunchSpec(nproc_per_node=4, log_dir=str(root / "logs")))
    return dict(zip(names, results[0]))


@pytest.mark.parametrize("name", NAMES)
def test_each_algorithm_trains(runs, name):
    history = runs[name]
    assert [r["iteration"] for r in history] == list(range(1, ITERATIONS + 1))
    for record in history:
        assert math.isfinite(record["actor_train/loss"]) and record["actor_train/steps"] == 1.0
        assert "actor_train/clip_frac" in record and math.isfinite(record["actor_train/grad_norm"])


@pytest.mark.parametrize("other", ["dapo_tiny", "dapo_manual"])
def test_dapo_refills_the_batch_the_same_way_on_any_layout(runs, other):
    for got, ref in zip(runs[other], runs["dapo_single"]):
        stats = {k: got[k] for k in got if k.startswith("dynamic_sampling/")}
        assert stats == {k: ref[k] for k in ref if k.startswith("dynamic_sampling/")}
        assert stats["dynamic_sampling/groups_kept"] + stats["dynamic_sampling/groups_topped_up"] == 4
        assert 1 <= stats["dynamic_sampling/rounds"] <= 4
        assert got["reward_inf/reward"] == ref["reward_inf/reward"]
        assert got["actor_train/loss"] == pytest.approx(ref["actor_train/loss"], abs=1e-4, rel=1e-4)
    # the manual plan moves the actor into its generation layout once an iteration, rounds or not
    assert all(r["realloc_bytes"] > 0 for r in runs["dapo_manual"][1:])
    assert runs["dapo_manual"][0]["realloc_bytes"] == 0
