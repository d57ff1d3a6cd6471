"""Typed planner options read from YAML-like data."""

from __future__ import annotations

import pytest

from graph.placement.layout import DeviceMesh, Layout
from planner.options import ManualLayout, PlanMode, PlanOptions


def test_defaults_and_heuristic_shorthand():
    assert PlanOptions.from_dict(None).mode is PlanMode.SEARCH
    opts = PlanOptions.from_dict({"mode": "heuristic:colocated-dp", "seed": 3})
    assert (opts.mode, opts.heuristic, opts.seed) == (PlanMode.HEURISTIC, "colocated-dp", 3)
    assert opts.search_options().seed == 3


def test_manual_layouts_by_devices_or_span():
    opts = PlanOptions.from_dict({"mode": "manual", "layouts": {
        "gen": {"devices": [0, 1], "tp": 2},
        "train": {"start": 2, "size": 2, "dp": 2, "micro_batches": 4}}})
    assert opts.layouts["gen"].to_layout("gen") == Layout(mesh=DeviceMesh(devices=(0, 1)), dp=1, tp=2, pp=1)
    assert opts.layouts["train"].to_layout("train") == Layout(
        mesh=DeviceMesh.span(2, 2), dp=2, tp=1, pp=1, micro_batches=4)


@pytest.mark.parametrize("data, message", [
    ({"mode": "serach"}, "plan.mode 'serach' is not one of search, heuristic, manual, file"),
    ({"time_budget": 3}, r"unknown plan option 'time_budget' \(did you mean 'time_budget_s'\?\)"),
    ({"mode": "manual"}, "plan.layouts is empty"),
    ({"mode": "file"}, "plan.file is not set"),
    ({"mode": "manual", "layouts": {"gen": {"devices": [0], "dpp": 1}}}, r"plan.layouts.gen: unknown field 'dpp'"),
    ({"mode": "manual", "layouts": {"gen": {"dp": 1}}}, "plan.layouts.gen: a manual layout needs either devices"),
    ({"time_budget_s": 0}, "time_budget_s must be > 0"),
    ({"micro_batch_choices": 0}, "micro_batch_choices must be >= 1"),
])
def test_bad_options_name_the_key(data, message):
    with pytest.raises(ValueError, match=message):
        PlanOptions.from_dict(data)


def test_manual_layout_that_does_not_divide_the_mesh():
    with pytest.raises(ValueError, match=r"plan.layouts.gen: layout dp=1 x tp=2 x pp=1 = 2 does not match mesh \[0-3\].*make dp x tp x pp equal"):
        ManualLayout(start=0, size=4, tp=2).to_layout("gen")
