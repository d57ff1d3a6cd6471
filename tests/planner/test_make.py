"""make_plan in every mode, and the errors a user can cause."""

from __future__ import annotations

import pytest

from graph.placement.layout import Cluster
from planner.make import make_plan
from planner.options import ManualLayout, PlanMode, PlanOptions
from tests.planner.synthetic import GIB, SyntheticCost, arch, ppo_graph

CLUSTER = Cluster(num_nodes=1, devices_per_node=8)


def _graph():
    return ppo_graph(actor=arch(16, 2048, 16, 4), critic=arch(4, 1024, 8, 8), batch_size=64)


def _cost(memory_gib: float = 80):
    return SyntheticCost(CLUSTER, device_memory_bytes=memory_gib * GIB)


def _manual(**override: ManualLayout) -> PlanOptions:
    layouts = {name: ManualLayout(start=0, size=8, dp=8) for name in
               ("gen", "rew", "ref_inf", "values", "actor_train", "critic_train")}
    layouts.update(override)
    return PlanOptions(mode=PlanMode.MANUAL, layouts=layouts)


def test_search_beats_or_ties_every_heuristic():
    result = make_plan(_graph(), _cost(), PlanOptions(time_budget_s=0.3, seed=1))
    assert result.plan.source == "search" and result.plan.feasible
    assert result.search is not None and result.search.num_evaluations > 0
    assert set(result.baselines) | set(result.baseline_errors) == {"symmetric", "colocated-dp", "disaggregated"}
    for name, base in result.baselines.items():
        assert result.plan.iteration_time_s <= base.iteration_time_s * (1 + 1e-12)
        assert result.speedup_over(name) == pytest.approx(base.iteration_time_s / result.plan.iteration_time_s)
    assert result.plan.timeline


def test_heuristic_mode_returns_the_heuristic():
    result = make_plan(_graph(), _cost(), PlanOptions(mode=PlanMode.HEURISTIC, heuristic="colocated-dp"))
    assert result.plan.source == "heuristic:colocated-dp"
    assert result.plan == result.baselines["colocated-dp"]
    with pytest.raises(ValueError, match="unknown heuristic 'nope'; known: colocated-dp, disaggregated, symmetric"):
        make_plan(_graph(), _cost(), PlanOptions(mode=PlanMode.HEURISTIC, heuristic="nope",
                                                 compare_heuristics=False))


def test_manual_plan_is_priced_like_any_other():
    result = make_plan(_graph(), _cost(), _manual())
    assert result.plan.source == "manual"
    assert all(c.layout.strategy == (8, 1, 1) for c in result.plan.calls)
    assert result.plan.reallocations == () and result.plan.transfers == ()
    # one placement for everything: the calls run back to back
    assert result.plan.iteration_time_s == pytest.approx(sum(c.time_s for c in result.plan.calls))


@pytest.mark.parametrize("override, message", [
    ({"gen": ManualLayout(start=0, size=8, dp=2, tp=2)}, r"plan.layouts.gen: layout dp=2 x tp=2 x pp=1 = 4 does not match mesh \[0-7\]"),
    ({"values": ManualLayout(start=0, size=8, dp=8, micro_batches=16)}, r"call 'values'.*dp=8 x micro_batches=16 exceeds the batch of 64"),
    ({"gen": ManualLayout(start=0, size=8, dp=4, tp=1, pp=2)}, r"call 'gen'.*generation with pp > 1 is disabled"),
    ({"values": ManualLayout(start=0, size=8, dp=1, tp=1, pp=8, micro_batches=1)}, r"call 'values'.*pp=8 exceeds the model's 4 layers"),
    ({"gen": ManualLayout(start=8, size=2, dp=2)}, r"call 'gen'.*beyond the cluster"),
])
def test_bad_manual_layouts_name_the_call(override, message):
    with pytest.raises(ValueError, match=message):
        make_plan(_graph(), _cost(), _manual(**override))


def test_manual_tp_that_does_not_divide_heads():
    g = ppo_graph(actor=arch(16, 1536, 12, 4), critic=arch(8, 1024, 8, 8), batch_size=64)
    opts = _manual(gen=ManualLayout(start=0, size=8, dp=1, tp=8))
    with pytest.raises(ValueError, match=r"call 'gen': .*tp=8 must divide num_heads=12"):
        make_plan(g, _cost(), opts)


def test_manual_plan_that_overflows_memory():
    with pytest.raises(ValueError, match=r"(manual plan does not fit: device \d+ needs)|(does not fit)"):
        make_plan(_graph(), _cost(memory_gib=3), _manual())


def test_manual_layout_for_an_unknown_or_missing_call():
    opts = _manual(gne=ManualLayout(start=0, size=8, dp=8))
    with pytest.raises(ValueError, match=r"plan.layouts has call 'gne' \(did you mean 'gen'\?\)"):
        make_plan(_graph(), _cost(), opts)
    layouts = dict(_manual().layouts)
    del layouts["rew"]
    with pytest.raises(ValueError, match="no layout for call.*rew"):
        make_plan(_graph(), _cost(), PlanOptions(mode=PlanMode.MANUAL, layouts=layouts))


def test_file_mode_round_trip_and_mismatch(tmp_path):
    first = make_plan(_graph(), _cost(), PlanOptions(time_budget_s=0.2, compare_heuristics=False))
    path = first.plan.save(tmp_path / "plan.yaml")
    again = make_plan(_graph(), _cost(), PlanOptions(mode=PlanMode.FILE, file=str(path),
                                                     compare_heuristics=False))
    assert again.plan.layouts == first.plan.layouts
    assert again.plan.iteration_time_s == pytest.approx(first.plan.iteration_time_s)
    assert again.plan.source == f"file:{path}"
    other = ppo_graph(actor=arch(16, 2048, 16, 4), critic=arch(8, 1024, 8, 8), batch_size=64,
                      rule_reward=True)
    with pytest.raises(ValueError, match=r"plan file does not match the experiment: call 'rew' runs model 'reward'|plan file .* does not match the experiment: call 'rew'"):
        make_plan(other, _cost(), PlanOptions(mode=PlanMode.FILE, file=str(path)))


def test_cluster_too_small_says_which_call_and_by_how_much():
    g = ppo_graph(actor=arch(32, 4096, 32, 8), batch_size=64)
    cost = SyntheticCost(Cluster(num_nodes=1, devices_per_node=2), device_memory_bytes=16 * GIB)
    with pytest.raises(ValueError, match=r"call 'actor_train' does not fit.*by [0-9.]+ GiB.*too small"):
        make_plan(g, cost, PlanOptions(time_budget_s=0.1))
    with pytest.raises(ValueError, match=r"call 'actor_train' does not fit"):
        make_plan(g, cost, PlanOptions(mode=PlanMode.HEURISTIC, heuristic="symmetric"))


def test_make_plan_is_deterministic_and_handles_odd_clusters():
    g = ppo_graph(actor=arch(12, 1536, 12, 4), critic=arch(6, 768, 6, 6), batch_size=48, rule_reward=True)
    cost = SyntheticCost(Cluster(num_nodes=2, devices_per_node=3), device_memory_bytes=24 * GIB)
    a = make_plan(g, cost, PlanOptions(time_budget_s=0.2, seed=5))
    b = make_plan(g, SyntheticCost(Cluster(num_nodes=2, devices_per_node=3), device_memory_bytes=24 * GIB),
                  PlanOptions(time_budget_s=0.2, seed=5))
    assert not a.search.wall_clock_stop and not b.search.wall_clock_stop
    assert a.plan.layouts == b.plan.layouts
    assert a.plan.iteration_time_s == b.plan.iteration_time_s
    for c in a.plan.calls:  # meshes are blocks of 1 or 2 inside a node of 3, or whole nodes
        mesh = c.layout.mesh
        assert mesh.size in (1, 2, 3, 6)
        if mesh.size == 2:
            assert mesh.devices[0] % 3 == 0


def test_manual_layout_that_does_not_divide_the_heads_says_so() -> None:
    """A tp that does not divide the kv heads is named with a fix about tp, not about memory."""
    from realloc.experiment import load_experiment
    from realloc.planning import plan_experiment

    layouts = ("+plan.layouts={actor_gen:{start:0,size:4,dp:1,tp:4,pp:1},reward_inf:{start:0,size:1},"
               "ref_inf:{start:0,size:1},critic_inf:{start:0,size:1},actor_train:{start:0,size:1},"
               "critic_train:{start:0,size:1}}")
    with pytest.raises(ValueError, match="num_kv_heads=2 is not divisible by tp=4; pick a tp that divides it"):
        plan_experiment(load_experiment("ppo_tiny", ["plan.mode=manual", layouts]), quiet=True)
