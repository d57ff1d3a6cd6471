"""Inter-stage fusion at run time: a streamed plan gives the unfused plan's metrics.

ppo_longtail_tiny (long-tailed response lengths) under one manual plan, run unfused and with
every generate -> inference edge streamed, in one launch of 4 gloo workers. The actor
generates on [0, 1] (dp 2: two senders); the reward scores on [3], the ref on [2, 3] (tp 2:
its collectives see every chunk in the same order) and the critic on [2, 3] (dp 2: each
chunk is split over its replicas). GRPO (groups of 4 samples per prompt) the same way, in the
same launch: each chunk's samples take their prompt's answer.
"""

import dataclasses

import pytest

from graph.placement.layout import DeviceMesh, Layout
from realloc.experiment import load_experiment
from realloc.run import make_job
from runtime.execution.launch import LaunchSpec, launch
from tests.runtime import dist_checks

pytestmark = pytest.mark.slow

STREAMED = (("actor_gen", "reward_inf"), ("actor_gen", "ref_inf"), ("actor_gen", "critic_inf"))


def lay(start, size, dp=1, tp=1):
    return Layout(mesh=DeviceMesh.span(start, size), dp=dp, tp=tp, pp=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("stream")
    exp = load_experiment("ppo_longtail_tiny", ["train.iterations=2", "graph.batch_size=16",
                                                "graph.generate.max_new_tokens=24"])
    layouts = {"actor_gen": lay(0, 2, dp=2), "reward_inf": lay(3, 1), "ref_inf": lay(2, 2, tp=2),
               "critic_inf": lay(2, 2, dp=2), "actor_train": lay(0, 4, dp=4), "critic_train": lay(2, 2, dp=2)}
    jobs = [dataclasses.replace(make_job(exp, layouts, streamed=streamed), run_dir=str(root / name))
            for name, streamed in (("unfused", ()), ("fused", STREAMED))]
    # GRPO: groups of 4 samples per prompt; the answers (per prompt) follow each sample of a chunk
    grpo = load_experiment("grpo_tiny", ["train.iterations=2", "graph.batch_size=4", "graph.group_size=4",
                                         "graph.generate.max_new_tokens=16", 'graph.generate.stop_strings=["+","="]'])
    grpo_layouts = {"actor_gen": lay(0, 2, dp=2), "reward_inf": lay(3, 1), "ref_inf": lay(2, 2, tp=2),
                    "actor_train": lay(0, 4, dp=4)}
    edges = (("actor_gen", "reward_inf"), ("actor_gen", "ref_inf"))
    jobs += [dataclasses.replace(make_job(grpo, grpo_layouts, streamed=streamed), run_dir=str(root / name))
             for name, streamed in (("grpo_unfused", ()), ("grpo_fused", edges))]
    results = launch(dist_checks.run_jobs, (jobs,), LaunchSpec(nproc_per_node=4, log_dir=str(root / "logs")))
    names = ("unfused", "fused", "grpo_unfused", "grpo_fused")
    return {name: results[0][i] for i, name in enumerate(names)}


def test_fused_run_matches_the_unfused_one(runs):
    unfused, fused = runs["unfused"], runs["fused"]
    assert len(unfused) == len(fused) == 2
    for ref, got in zip(unfused, fused):
        # the same samples (sampling is tied to the sample), hence the same rewards and lengths
        assert got["actor_gen/response_len_hist"] == ref["actor_gen/response_len_hist"]
        assert got["reward_inf/reward"] == ref["reward_inf/reward"]
        assert len(got["actor_gen/response_len_hist"]) > 3  # long-tailed: many distinct lengths
        # 2 senders: more than 2 chunks means samples went out while generation went on
        assert got["actor_gen/stream_chunks"] > 2 and "actor_gen/stream_chunks" not in ref
        # scores computed per chunk (other padding) agree with the whole batch's to rounding
        for key in ("actor_train/loss", "critic_train/loss", "actor_train/ref_kl", "critic_train/kl_coef"):
            assert got[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-5), (key, got["iteration"])
        for call in ("reward_inf", "ref_inf", "critic_inf"):
            assert got["call_time_s"][call] > 0


def test_fused_grpo_matches_the_unfused_one(runs):
    unfused, fused = runs["grpo_unfused"], runs["grpo_fused"]
    for ref, got in zip(unfused, fused):
        assert got["actor_gen/response_len_hist"] == ref["actor_gen/response_len_hist"]
        assert got["reward_inf/reward"] == ref["reward_inf/reward"]
        assert got["actor_gen/stream_chunks"] >= 2
        for key in ("actor_train/loss", "actor_train/kl"):
            assert got[key] == pytest.approx(ref[key], rel=1e-4, abs=1e-5), (key, got["iteration"])
