"""CPU plans choose the torch threads per worker: the search keeps the thread count whose best
plan the cost model prices fastest, checked against exhaustive search under every count."""

from __future__ import annotations

import dataclasses

import pytest

from cost_model.estimator import AnalyticCostModel
from planner import PlanOptions, make_plan
from planner.context import PlanContext
from planner.search import exact_search
from realloc.experiment import load_experiment
from realloc.planning import cost_model_for


def _grpo_on_two_workers(thread_efficiency: float) -> tuple[object, AnalyticCostModel]:
    exp = load_experiment("grpo_tiny", ["cluster.devices_per_node=2", "graph.batch_size=8", "graph.group_size=4",
                                        "models.actor.arch.num_layers=1"])  # pp=1 only: a small space
    cost = cost_model_for(exp)  # the shipped 2-core profile
    # the constant efficiency, not the profile's measured table, and two whole cores (the
    # profile's effective count, measured 1.8-2.0, would tax a two-thread worker)
    hw = dataclasses.replace(cost.hardware, thread_efficiency=thread_efficiency, thread_efficiency_by_hidden={},
                             host_cores=2.0)
    return exp.graph, AnalyticCostModel(hw, cost.cluster, options=cost.options, iteration_barrier=True,
                                        blocking_receives=True)


@pytest.mark.parametrize("thread_efficiency", [0.0, 1.0])
def test_search_picks_the_threads_whose_exhaustive_optimum_is_fastest(thread_efficiency):
    graph, cost = _grpo_on_two_workers(thread_efficiency)
    assert cost.thread_options() == (1, 2)
    exact = {}
    for t in cost.thread_options():
        ctx = PlanContext(graph, cost.with_threads(t))
        exact[t] = exact_search(ctx.sim, ctx.spaces).sim.iteration_time_s
    best = min(exact, key=exact.get)
    result = make_plan(graph, cost, PlanOptions.from_dict({"mode": "search", "time_budget_s": 1.0, "seed": 0}))
    assert result.plan.threads_per_worker == best
    assert result.plan.iteration_time_s == pytest.approx(exact[best], rel=1e-9)
    assert set(result.threads_tried) == {1, 2}
    assert result.threads_tried[best] == pytest.approx(min(result.threads_tried.values()))
    if thread_efficiency == 1.0:
        # perfect threads: one worker with both cores needs no transfers, so it wins and the other idles
        assert best == 2
        assert {d for c in result.plan.calls for d in c.layout.mesh.devices} == {0}
    else:
        assert best == 1  # threads that add nothing: the two workers share the cores instead


def test_the_threads_are_priced_at_the_models_layer_size():
    """A measured table decides by the actor's hidden size (64 here): nothing gained there, so
    the two workers share the cores although larger layers would gain fully from threads."""
    graph, cost = _grpo_on_two_workers(1.0)
    hidden = graph.models["actor"].arch.hidden_size
    table = {hidden: 0.0, 8 * hidden: 1.0}
    measured = AnalyticCostModel(dataclasses.replace(cost.hardware, thread_efficiency_by_hidden=table), cost.cluster,
                                 options=cost.options, iteration_barrier=True, blocking_receives=True)
    result = make_plan(graph, measured, PlanOptions.from_dict({"mode": "search", "time_budget_s": 1.0, "seed": 0}))
    assert result.plan.threads_per_worker == 1  # as with an efficiency of 0 (the test above)
    wide = {hidden // 8: 1.0, hidden: 1.0}
    measured = AnalyticCostModel(dataclasses.replace(cost.hardware, thread_efficiency_by_hidden=wide), cost.cluster,
                                 options=cost.options, iteration_barrier=True, blocking_receives=True)
    result = make_plan(graph, measured, PlanOptions.from_dict({"mode": "search", "time_budget_s": 1.0, "seed": 0}))
    assert result.plan.threads_per_worker == 2


def test_a_plan_file_keeps_its_threads(tmp_path):
    graph, cost = _grpo_on_two_workers(0.6)
    found = make_plan(graph, cost, PlanOptions.from_dict({"mode": "search", "time_budget_s": 0.3, "seed": 0})).plan
    saved = dataclasses.replace(found, threads_per_worker=2).save(tmp_path / "plan.json")
    again = make_plan(graph, cost, PlanOptions.from_dict({"mode": "file", "file": str(saved)})).plan
    assert again.threads_per_worker == 2
    # priced under 2 threads per worker: the same as evaluating the layouts with that cost model
    want = PlanContext(graph, cost.with_threads(2)).evaluate(found.layouts, "x").iteration_time_s
    assert again.iteration_time_s == pytest.approx(want, rel=1e-12)


def test_the_thread_searches_share_the_time_budget(monkeypatch):
    """plan.time_budget_s bounds the whole search: with two thread counts each gets half."""
    import planner.make as make

    graph, cost = _grpo_on_two_workers(0.5)
    seen = []
    real = make._make_plan

    def spy(graph, cost, options):
        seen.append(options.time_budget_s)
        return real(graph, cost, options)

    monkeypatch.setattr(make, "_make_plan", spy)
    make_plan(graph, cost, PlanOptions.from_dict({"mode": "search", "time_budget_s": 1.0, "seed": 0}))
    assert seen == [0.5, 0.5]
