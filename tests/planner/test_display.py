"""The dry-run report: tables, text, the JSON schema and the timeline chart."""

from __future__ import annotations

import importlib.util
import json

import pytest

from graph.placement.layout import Cluster
from planner.display import (
    REPORT_VERSION,
    call_table,
    draw_timeline,
    moves_table,
    plan_report_json,
    report_text,
)
from planner.make import make_plan
from planner.options import PlanOptions
from tests.planner.synthetic import SyntheticCost, arch, ppo_graph


@pytest.fixture(scope="module")
def result():
    g = ppo_graph(actor=arch(16, 2048, 16, 4), critic=arch(8, 1024, 8, 8), batch_size=64,
                  rule_reward=True)
    return make_plan(g, SyntheticCost(Cluster(num_nodes=1, devices_per_node=4)),
                     PlanOptions(time_budget_s=0.2))


def test_tables_have_a_row_per_call_and_move(result):
    assert call_table(result.plan).row_count == len(result.plan.calls)
    assert moves_table(result.plan).row_count == len(result.plan.reallocations) + len(result.plan.transfers)


def test_text_report_shows_time_and_speedups(result):
    text = report_text(result)
    assert f"{result.plan.iteration_time_s:.3f} s" in text
    for name in result.baselines:
        assert name in text
        assert f"{result.speedup_over(name):.2f}x" in text
    for c in result.plan.calls:
        assert c.name in text
    for name, base in result.baselines.items():
        assert f"heuristic {name}: {base.iteration_time_s:.3f} s per iteration" in text
    assert "heuristic symmetric:" not in report_text(result, baseline_tables=False)


def test_json_report_schema(result):
    data = json.loads(json.dumps(plan_report_json(result)))
    assert data["schema"] == "realloc.plan_report" and data["version"] == REPORT_VERSION
    assert data["iteration_time_s"] == result.plan.iteration_time_s
    assert [c["name"] for c in data["calls"]] == [c.name for c in result.plan.calls]
    assert set(data["calls"][0]) == {"name", "model", "devices", "dp", "tp", "pp", "micro_batches",
                                     "time_s", "peak_bytes", "resident_bytes"}
    for name in result.baselines:
        assert data["baselines"][name]["speedup"] == pytest.approx(result.speedup_over(name))
    for name, error in result.baseline_errors.items():
        assert data["baselines"][name] == {"error": error}
    assert data["search"]["num_evaluations"] == result.search.num_evaluations
    assert data["plan"]["version"] == 1
    assert len(data["device_peak_bytes"]) == 4
    assert data["timeline"] is None
    rows = plan_report_json(result, timeline=True)["timeline"]
    assert len(rows) == len(result.plan.timeline)
    assert {r[3] for r in rows} <= {"call", "realloc", "transfer"}


def test_timeline_png(result, tmp_path):
    out = tmp_path / "timeline.png"
    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(ValueError, match="needs matplotlib"):
            draw_timeline(result.plan, out)
    else:
        draw_timeline(result.plan, out)
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
