"""MetricsReporter on one rank (no process group): records, iteration periods, flush."""

from __future__ import annotations

import json

import pytest

from realloc.experiment import load_experiment
from runtime.execution.metrics import IterationLog, MetricsReporter


def test_iteration_time_is_the_period_between_the_last_ends(tmp_path):
    """Iterations overlap across ranks, so an iteration's time is the period between the last
    rank's ends (the first iteration: its slowest rank's elapsed time)."""
    graph = load_experiment("ppo_tiny").graph
    reporter = MetricsReporter(graph=graph, rank=0, world_size=1, run_dir=tmp_path, name="t", iterations=3,
                               plot_every=5, start=0, history=[])
    for it, ended in enumerate((100.0, 100.5, 101.25)):
        reporter.report(it, IterationLog(elapsed_s=0.3, ended_at=ended, call_time_s={"actor_gen": 0.1},
                                         rewards={"reward_inf": 0.5}))
    reporter.flush()  # records on disk once flush returns
    lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [1, 2, 3]
    assert [r["iter_time_s"] for r in lines] == pytest.approx([0.3, 0.5, 0.75])
    reporter.close()
    assert [r["iter_time_s"] for r in reporter.history] == pytest.approx([0.3, 0.5, 0.75])
    assert (tmp_path / "curves.png").exists()  # the last iteration always redraws
