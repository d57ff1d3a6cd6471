"""Estimated against measured times, on a timeline worked by hand."""

from __future__ import annotations

import json

import pytest

from graph.placement.layout import Cluster
from planner.context import PlanContext
from realloc.estimate_check import (
    FILE_NAME,
    default_warmup,
    estimate_vs_measured,
    predicted_times,
    report_estimates,
    summary_lines,
)
from tests.planner.graphs import gen_train_graph, on
from tests.planner.synthetic import FixedCost


def _plan():
    """gen at tp2 and train at dp2 on two devices: realloc 1 s, gen 2 s, transfer 0.5 s, train 3 s."""
    g = gen_train_graph()
    cost = FixedCost(Cluster(num_nodes=1, devices_per_node=2), times={"gen": 2.0, "train": 3.0})
    return g, PlanContext(g, cost).evaluate({"gen": on(0, 2, tp=2), "train": on(0, 2)}, "t")


def test_predicted_spans_are_what_the_first_rank_measures():
    g, plan = _plan()
    got = predicted_times(plan, g)
    # gen: from the end of the reallocation (rank 0 busy until then) to its end; train: from
    # the end of the transfer into it (drawn on rank 0) to its end
    assert got["calls"] == {"gen": pytest.approx(2.0), "train": pytest.approx(3.0)}
    assert got["realloc"] == pytest.approx(1.0)
    assert got["iteration"] == pytest.approx(6.5)


def test_medians_after_the_warmup_and_ratios():
    g, plan = _plan()
    records = [{"iter_time_s": t, "call_time_s": {"gen": t / 2, "train": 7.0}, "realloc_time_s": 2.0}
               for t in (100.0, 13.0, 12.0, 14.0, 13.0)]
    assert default_warmup(len(records)) == 1
    report = estimate_vs_measured(plan, g, records)
    assert report["warmup"] == 1 and report["iterations"] == 5
    assert report["iteration"] == {"estimated_s": pytest.approx(6.5), "measured_s": 13.0,
                                   "ratio": pytest.approx(2.0)}
    assert report["calls"]["gen"]["measured_s"] == 6.5 and report["calls"]["gen"]["ratio"] == pytest.approx(3.25)
    assert report["calls"]["train"]["ratio"] == pytest.approx(7.0 / 3.0)
    assert report["realloc"]["ratio"] == pytest.approx(2.0)
    lines = summary_lines(report)
    assert any("iteration" in line and "2.00x" in line for line in lines)
    assert estimate_vs_measured(plan, g, []) is None


def test_the_run_directory_keeps_both(tmp_path):
    g, plan = _plan()

    class Exp:
        graph = g

    records = [{"iter_time_s": 7.0, "call_time_s": {"gen": 2.0, "train": 3.0}, "realloc_time_s": 1.0}] * 4
    echoed: list[str] = []
    report = report_estimates(Exp(), plan, records, tmp_path, echo=echoed.append)
    saved = json.loads((tmp_path / FILE_NAME).read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["calls"]["gen"]["ratio"] == pytest.approx(1.0)
    assert echoed and echoed[0].startswith("estimated vs measured")
    # a broken input is one line, never an exception
    echoed.clear()
    assert report_estimates(Exp(), None, records, tmp_path, echo=echoed.append) is None
    assert len(echoed) == 1 and "no estimated-vs-measured summary" in echoed[0]


def test_trace_holds_measured_steps_and_the_simulated_iterations_beside_them(tmp_path):
    """Rank 0's StepTrace keeps the last iterations' steps; report_estimates adds as many
    steady-state simulated iterations (the _plan timeline: realloc 1 s on [0, 1], gen 2 s,
    transfer 0.5 s, train 3 s: 6.5 s per iteration), times from each side's first kept step."""
    from runtime.execution.trace import ESTIMATED_PID, MEASURED_PID, TRACE_FILE, StepTrace

    trace = StepTrace(keep=2)
    t0 = 1_700_000_000.0
    for it in range(3):  # iteration 0 is dropped: two are kept
        base = t0 + 10 * it
        trace.add(it, [[("RUN", "gen", base, base + 2.0), ("RUN", "train", base + 2.5, base + 5.5)],
                       [("SEND", "seq:gen->train", base, base + 2.25)]])
    trace.write(tmp_path / TRACE_FILE)
    g, plan = _plan()

    class Exp:
        graph = g

    records = [{"iter_time_s": 7.0, "call_time_s": {"gen": 2.0, "train": 3.0}, "realloc_time_s": 1.0}] * 4
    report_estimates(Exp(), plan, records, tmp_path, echo=lambda _: None)
    events = [e for e in json.loads((tmp_path / TRACE_FILE).read_text())["traceEvents"] if e["ph"] == "X"]
    measured = [(e["tid"], e["name"], e["ts"], e["dur"], e["args"]["iteration"]) for e in events
                if e["pid"] == MEASURED_PID]
    assert measured == [(0, "gen", 0.0, 2e6, 2), (0, "train", 2.5e6, 3e6, 2), (1, "seq:gen->train", 0.0, 2.25e6, 2),
                        (0, "gen", 10e6, 2e6, 3), (0, "train", 12.5e6, 3e6, 3),
                        (1, "seq:gen->train", 10e6, 2.25e6, 3)]
    estimated = sorted((e["args"]["iteration"], e["ts"], e["tid"], e["name"]) for e in events
                       if e["pid"] == ESTIMATED_PID)
    iterations = {it for it, *_ in estimated}
    assert iterations == {1, 2}  # as many as measured
    starts = sorted({ts for it, ts, *_ in estimated if it == 2})
    assert starts[0] == pytest.approx(6.5e6)  # the second simulated iteration one period later
    names = {name for it, _, _, name in estimated if it == 1}
    assert {"gen", "train"} <= names and any("->" in n for n in names)
