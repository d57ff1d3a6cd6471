"""The executor with LoRA actor and critic (ppo_lora_tiny): under a plan of six layouts the
refreshes move only the adapters (+ the critic's value head), replicas keep their frozen
base, and the run gives the single-device rewards and losses (a replica refreshed wrongly
would sample other tokens)."""

import dataclasses

import pytest

from graph.placement.layout import DeviceMesh, Layout
from graph.placement.transfer import plan_transfer
from realloc.experiment import load_experiment
from realloc.run import make_job
from runtime.execution.launch import LaunchSpec, launch
from runtime.execution.program import home_layouts, placement
from tests.runtime import dist_checks

pytestmark = pytest.mark.slow

ITERATIONS = 3
MANUAL = dist_checks.ppo_six_layouts()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("exec_lora")
    exp = load_experiment("ppo_lora_tiny", [f"train.iterations={ITERATIONS}", "graph.batch_size=8"])
    one = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    plans = {"manual": MANUAL, "single": {c.name: one for c in exp.graph.calls}}
    jobs = [dataclasses.replace(make_job(exp, layouts), run_dir=str(root / name))
            for name, layouts in plans.items()]
    results = launch(dist_checks.run_jobs, (jobs,), LaunchSpec(nproc_per_node=4, log_dir=str(root / "logs")))
    return exp, {name: results[0][i] for i, name in enumerate(plans)}, root


def _refresh_bytes(graph, *, lora: bool) -> int:
    """Bytes the plan's refreshes move per steady iteration (fp32 on CPU)."""
    homes = home_layouts(graph, MANUAL)
    total = 0
    for role in ("actor", "critic"):
        model = graph.models[role]
        for layout in {placement(MANUAL[c.name]) for c in graph.calls_of(role)} - {homes[role]}:
            total += plan_transfer(model.arch, homes[role], layout, value_head=model.value_head,
                                   dtype_bytes=4, lora=model.lora if lora else None,
                                   trainable_only=lora).bytes_total
    return total


def test_refresh_moves_only_the_adapters(runs):
    exp, histories, _ = runs
    manual = histories["manual"]
    assert manual[0]["realloc_bytes"] == 0  # replicas start from the same weights
    adapters = _refresh_bytes(exp.graph, lora=True)
    assert [r["realloc_bytes"] for r in manual[1:]] == [adapters] * (ITERATIONS - 1)
    assert adapters * 4 < _refresh_bytes(exp.graph, lora=False)
    assert all(r["realloc_bytes"] == 0 for r in histories["single"])


def test_lora_run_is_plan_independent(runs):
    _, histories, root = runs
    for ref, got in zip(histories["single"], histories["manual"]):
        assert got["reward_inf/reward"] == ref["reward_inf/reward"], got["iteration"]
        assert got["actor_gen/response_len"] == ref["actor_gen/response_len"]
        keys = [k for k in ref if k.startswith(("actor_train/", "critic_train/")) and k.endswith(("loss", "kl"))]
        assert {"actor_train/loss", "critic_train/loss"} <= set(keys)
        for key in keys:
            assert got[key] == pytest.approx(ref[key], abs=1e-4, rel=1e-4), (key, got["iteration"])
    # the critic's loss moves: its adapters and value head train
    losses = [r["critic_train/loss"] for r in histories["single"]]
    assert len(set(losses)) == len(losses)
    for role in ("actor", "critic"):
        assert (root / "manual" / "models" / role / "lora_adapters.safetensors").is_file()
