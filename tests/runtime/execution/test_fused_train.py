"""Intra-stage fusion at run time: a plan whose actor_train and critic_train share one
pipeline (plan.fusion: intra, runtime.engine.fused) gives the unfused plan's losses and
weights.

ppo_tiny for 2 iterations on 4 gloo workers, both train calls on [0-3] at dp 2 x pp 2 with 2
micro-batches each, 2 PPO mini-batches (so each call takes 2 optimizer steps per iteration and
the pair runs 2 fused steps), run unfused and fused in one launch. Tolerance: the fused
schedule divides each loss by the pair's 4 micro-batches and rescales it by 4/2 where the
unfused one divides by 2, so the two differ by float rounding only (rel 1e-5 on losses,
abs 1e-6 on weights after 2 iterations of Adam).
"""

import dataclasses

import pytest

from graph.placement.layout import DeviceMesh, Layout
from realloc.experiment import load_experiment
from realloc.run import make_job
from runtime.execution.launch import LaunchSpec, launch
from tests.runtime import dist_checks

pytestmark = pytest.mark.slow

PAIR = (("actor_train", "critic_train"),)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("intra")
    exp = load_experiment("ppo_tiny", ["train.iterations=2", "graph.batch_size=16", "graph.train.mini_batches=2",
                                       "graph.critic_train.mini_batches=2"])
    gen = Layout(mesh=DeviceMesh.span(0, 4), dp=4, tp=1, pp=1)
    train = Layout(mesh=DeviceMesh.span(0, 4), dp=2, tp=1, pp=2, micro_batches=2)
    layouts = {c.name: train if c.kind.value == "train" else gen for c in exp.graph.calls}
    jobs = [dataclasses.replace(make_job(exp, layouts, fused=fused), run_dir=str(root / name))
            for name, fused in (("unfused", ()), ("fused", PAIR))]
    return launch(dist_checks.run_jobs_with_weights, (jobs, ("actor", "critic")),
                  LaunchSpec(nproc_per_node=4, log_dir=str(root / "logs")))


def test_fused_pair_matches_unfused_losses_and_weights(runs):
    (unfused, _), (fused, _) = runs[0]
    assert len(unfused) == len(fused) == 2
    for ref, got in zip(unfused, fused):
        assert got["fusion/actor_train+critic_train"] == 2.0 and "fusion/actor_train+critic_train" not in ref
        for key in ("actor_train/loss", "critic_train/loss", "actor_train/grad_norm", "critic_train/grad_norm"):
            assert got[key] == pytest.approx(ref[key], rel=1e-5, abs=1e-7), (key, got["iteration"])
    assert len(runs) == 4
    for rank_result in runs.values():
        (_, w_ref), (_, w_got) = rank_result
        assert set(w_ref) == set(w_got) == {"actor", "critic"}
        for role in w_ref:
            for name, t in w_ref[role].items():
                assert (w_got[role][name] - t).abs().max().item() < 1e-6, (role, name)
