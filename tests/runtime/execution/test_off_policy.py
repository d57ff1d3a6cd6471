"""One-step off-policy PPO (train.off_policy_steps=1) against references worked out by hand.

Four runs of ppo_tiny (3 iterations, batch 8) in one launch of 4 gloo workers:

- `on`: on-policy, one device;
- `off`: one step off-policy, one device;
- `off_disjoint`: one step off-policy, the actor generating on [0, 1] while everything else
  runs on [2, 3] (generation of batch k+1 overlaps training of batch k);
- `frozen`: on-policy with the actor's lr at 1e-12 (its fp32 weights never change), so every
  batch is sampled from the initial weights w0.

What one step off-policy means, by hand: batch 0 and batch 1 are both sampled from w0, batch
k >= 1 from w_{k-1}. Hence:
1. iteration 1 is the same as on-policy (batch 0 from w0, trained from w0);
2. batch 1's samples are those of the frozen run's iteration 2 (both from w0, same seeds), while
   on-policy samples batch 1 from w1;
3. the behaviour log-probs are those of the generating weights: the PPO reward's KL between
   them and the reference (`ref_kl`; the ref starts as a copy of the actor, so it is w0) is 0
   for batches 0 and 1 off-policy, but not for on-policy batch 1 (from w1);
4. the plan does not change the numbers (one device or disjoint meshes);
5. metrics.jsonl logs the staleness: 0 for batch 0, then 1;
6. the whole run equals a loop written by hand that generates each batch from a snapshot of
   the actor taken before the previous train step (`dist_checks.off_policy_reference`).
"""

import dataclasses
import json

import pytest

from graph.placement.layout import DeviceMesh, Layout
from realloc.experiment import load_experiment
from realloc.run import make_job
from runtime.execution.launch import LaunchSpec, launch
from tests.runtime import dist_checks

pytestmark = pytest.mark.slow

ITERATIONS = 3
BASE = [f"train.iterations={ITERATIONS}", "graph.batch_size=8", "graph.train.lr=1e-2"]


def lay(start, size, dp=1, tp=1):
    return Layout(mesh=DeviceMesh.span(start, size), dp=dp, tp=tp, pp=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("offpolicy")
    one = lay(0, 1)
    disjoint = {"actor_gen": lay(0, 2, dp=2), "reward_inf": lay(3, 1), "ref_inf": lay(2, 2, tp=2),
                "critic_inf": lay(2, 2, dp=2), "actor_train": lay(2, 2, dp=2), "critic_train": lay(2, 2, dp=2)}
    setups = {
        "on": (BASE, None),
        "off": ([*BASE, "train.off_policy_steps=1"], None),
        "off_disjoint": ([*BASE, "train.off_policy_steps=1"], disjoint),
        "frozen": ([*BASE[:2], "graph.train.lr=1e-12"], None),
    }
    jobs = []
    for name, (overrides, layouts) in setups.items():
        exp = load_experiment("ppo_tiny", overrides)
        layouts = layouts or {c.name: one for c in exp.graph.calls}
        jobs.append(dataclasses.replace(make_job(exp, layouts), run_dir=str(root / name)))
    reference = dataclasses.replace(jobs[0], run_dir=str(root / "reference"))  # the on-policy job
    results = launch(dist_checks.run_jobs_and_reference, (jobs, reference),
                     LaunchSpec(nproc_per_node=4, log_dir=str(root / "logs")))
    histories, by_hand = results[0]
    return {**{name: histories[i] for i, name in enumerate(setups)}, "by_hand": by_hand}, root


def test_matches_the_loop_written_by_hand(runs):
    """dist_checks.off_policy_reference: an on-policy single-device run whose generate calls use
    a snapshot of the actor taken before the previous train step. The same samples, rewards,
    losses and statistics, bit for bit."""
    histories, _ = runs
    assert len(histories["by_hand"]) == ITERATIONS
    for ref, got in zip(histories["by_hand"], histories["off"]):
        for key, value in ref.items():
            if "time" in key:
                continue
            assert got[key] == value, (key, got["iteration"])


def test_first_iteration_is_on_policy(runs):
    histories, _ = runs
    on, off = histories["on"][0], histories["off"][0]
    for key, value in on.items():
        if "time" in key or key in ("iter_time_s", "call_time_s"):
            continue
        if isinstance(value, list):  # the response-length histogram: the same samples
            assert off[key] == value, key
            continue
        assert off[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_batch_one_is_sampled_from_the_initial_weights(runs):
    histories, _ = runs
    off, frozen = histories["off"][1], histories["frozen"][1]
    # the same samples as the frozen run's batch 1: exactly the same rewards and lengths
    assert off["reward_inf/reward"] == frozen["reward_inf/reward"]
    assert off["actor_gen/response_len"] == frozen["actor_gen/response_len"]


def test_behaviour_logprobs_are_the_generating_weights(runs):
    histories, _ = runs
    off, on = histories["off"], histories["on"]
    # batches 0 and 1 come from w0 = the reference: KL 0 (up to generate-vs-score rounding)
    assert abs(off[0]["actor_train/ref_kl"]) < 1e-5 and abs(off[1]["actor_train/ref_kl"]) < 1e-5
    # on-policy batch 1 comes from w1 != w0, and off-policy batch 2 from w1
    assert on[1]["actor_train/ref_kl"] > 1e-3
    assert off[2]["actor_train/ref_kl"] > 1e-3


def test_off_policy_is_plan_independent(runs):
    histories, _ = runs
    for ref, got in zip(histories["off"], histories["off_disjoint"]):
        assert got["reward_inf/reward"] == ref["reward_inf/reward"], got["iteration"]
        assert got["actor_gen/response_len"] == ref["actor_gen/response_len"]
        for key in ("actor_train/loss", "critic_train/loss", "actor_train/ref_kl"):
            assert got[key] == pytest.approx(ref[key], abs=1e-4, rel=1e-4), (key, got["iteration"])


def test_staleness_is_logged(runs):
    histories, root = runs
    for name in ("off", "off_disjoint"):
        lines = [json.loads(line) for line in (root / name / "metrics.jsonl").read_text().splitlines()]
        assert [r["actor_gen/staleness"] for r in lines] == [0, 1, 1]
        # batch k+1's generation time is measured during iteration k and reported with batch k+1
        assert all(r["call_time_s"]["actor_gen"] > 0 for r in lines)
        # the per-sample lengths plan.response_lengths can read back: batch 8, mean as logged
        for r in lines:
            hist = r["actor_gen/response_len_hist"]
            assert sum(c for _, c in hist) == 8
            assert sum(n * c for n, c in hist) / 8 == pytest.approx(r["actor_gen/response_len"])
    assert all("actor_gen/staleness" not in r for r in histories["on"])
