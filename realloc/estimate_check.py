"""How right the cost model was: a plan's estimated times against a run's measured ones.

Pure functions over plain data (a priced Plan with its timeline, the graph, and the
metrics records a run writes), shared by `realloc run` (which prints the comparison at
the end and keeps it as `RUN_DIR/estimate_vs_measured.json`) and the cost-model
validation (experiments/bench/validate_cost_model.py).

What is compared, per call and per iteration:
- measured: medians over the iterations after a warm-up of the run's `call_time_s` (as the
  call's first rank measures it: from when that rank is free to the call's end, waits for
  the call's other ranks included), `realloc_time_s` (the most any rank spent reallocating)
  and `iter_time_s`;
- estimated: the same spans of the simulator's steady-state timeline (`predicted_times`).

estimate_vs_measured.json: {"warmup", "iterations", "calls": {NAME: {"estimated_s",
"measured_s", "ratio"}}, "realloc": {...}, "iteration": {...}}, where ratio = measured /
estimated (None when the estimate is 0).

Step by step: `add_estimated_trace` puts the simulated timeline of as many steady-state
iterations beside the measured steps of the run's last iterations in RUN_DIR/trace.json
(see runtime.execution.trace).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FILE_NAME = "estimate_vs_measured.json"


def predicted_times(plan: Any, graph: Any) -> dict[str, Any]:
    """Per call, realloc and iteration seconds of the plan's steady-state simulated iteration.

    A call's time is what its mesh's first rank measures: from when that rank is free (its
    previous task on the timeline ended, or the iteration began) to the call's end; it
    includes waiting for the call's other ranks, as the runtime's `call_time_s` does. A
    reallocation's likewise, on every rank it involves; the most any rank spent is kept
    (the runtime's `realloc_time_s`).
    """
    entries = plan.timeline
    steady = max(e.iteration for e in entries) - 1 if entries else 0
    begin = max((e.end for e in entries if e.iteration == steady - 1), default=0.0)

    def span(entry: Any) -> float:
        """From when the entry's device was last free (or the iteration began) to its end."""
        free = max([begin] + [e.end for e in entries if e.device == entry.device and e.end <= entry.start + 1e-12
                              and e is not entry])
        return entry.end - min(free, entry.start)

    calls: dict[str, float] = {}
    realloc_per_device: dict[int, float] = {}
    for call in graph.calls:
        mine = [e for e in entries if e.label == call.name and e.what == "call" and e.iteration == steady]
        calls[call.name] = span(min(mine, key=lambda e: e.device)) if mine else 0.0
    for e in entries:  # a rank's reallocation time counts its wait for the other ranks, as the runtime's does
        if e.iteration == steady and e.what == "realloc":
            realloc_per_device[e.device] = realloc_per_device.get(e.device, 0.0) + span(e)
    return {"calls": calls, "realloc": max(realloc_per_device.values(), default=0.0),
            "iteration": float(plan.iteration_time_s or 0.0)}


def measured_times(history: Sequence[Mapping[str, Any]], warmup: int) -> dict[str, Any]:
    """Medians over the iterations after `warmup` (all of them when there are no more)."""
    rows = list(history[warmup:]) or list(history)
    calls: dict[str, float] = {}
    for name in rows[0]["call_time_s"]:
        calls[name] = statistics.median(r["call_time_s"][name] for r in rows if name in r["call_time_s"])
    return {"calls": calls, "realloc": statistics.median(r.get("realloc_time_s", 0.0) for r in rows),
            "iteration": statistics.median(r["iter_time_s"] for r in rows)}


def default_warmup(num_iterations: int) -> int:
    """Iterations left out of the medians: a quarter of the run, at most 3."""
    return min(3, num_iterations // 4)


def _row(estimated: float, measured: float) -> dict[str, Any]:
    return {"estimated_s": estimated, "measured_s": measured,
            "ratio": measured / estimated if estimated > 0 else None}


def compare_times(predicted: Mapping[str, Any], measured: Mapping[str, Any]) -> dict[str, Any]:
    """Estimated, measured and their ratio per call (those measured), reallocation and iteration."""
    calls = {name: _row(predicted["calls"].get(name, 0.0), value)
             for name, value in measured["calls"].items()}
    return {"calls": calls, "realloc": _row(predicted["realloc"], measured["realloc"]),
            "iteration": _row(predicted["iteration"], measured["iteration"])}


def estimate_vs_measured(plan: Any, graph: Any, records: Sequence[Mapping[str, Any]],
                         warmup: int | None = None) -> dict[str, Any] | None:
    """The comparison for a run's metrics records (None when there are none)."""
    records = [r for r in records if "iter_time_s" in r and "call_time_s" in r]
    if not records:
        return None
    warmup = default_warmup(len(records)) if warmup is None else warmup
    out = compare_times(predicted_times(plan, graph), measured_times(records, warmup))
    return {"warmup": warmup, "iterations": len(records), **out}


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """Console lines: each call, reallocation and the iteration, estimated against measured."""
    def fmt(name: str, row: Mapping[str, Any]) -> str:
        ratio = row["ratio"]
        how = "-" if ratio is None else f"{ratio:.2f}x"
        return f"  {name:<16} estimated {row['estimated_s']:8.4f} s  measured {row['measured_s']:8.4f} s  ({how})"

    lines = [f"estimated vs measured (medians of iterations {report['warmup'] + 1}-{report['iterations']}; "
             "measured / estimated in brackets):"]
    lines += [fmt(name, row) for name, row in report["calls"].items()]
    if report["realloc"]["estimated_s"] > 0 or report["realloc"]["measured_s"] > 0:
        lines.append(fmt("reallocation", report["realloc"]))
    lines.append(fmt("iteration", report["iteration"]))
    return lines


def report_estimates(experiment: Any, plan: Any, records: Sequence[Mapping[str, Any]], run_dir: str | Path,
                     echo: Any = print) -> dict[str, Any] | None:
    """Compare, write `RUN_DIR/estimate_vs_measured.json` and echo the summary lines.

    A plan without a timeline (loaded from a file) is simulated again with the experiment's
    cost model. Never raises: a finished run must not fail on its report (a problem is
    echoed as one line)."""
    try:
        if not plan.timeline:
            from planner import PlanOptions, make_plan
            from realloc.planning import cost_model_for

            layouts = {name: {"devices": list(lay.mesh.devices), "dp": lay.dp, "tp": lay.tp, "pp": lay.pp,
                              "micro_batches": lay.micro_batches} for name, lay in plan.layouts.items()}
            options = PlanOptions.from_dict({"mode": "manual", "layouts": layouts, "compare_heuristics": False})
            plan = make_plan(experiment.graph, cost_model_for(experiment), options).plan
        report = estimate_vs_measured(plan, experiment.graph, records)
        if report is None:
            return None
        Path(run_dir, FILE_NAME).write_text(json.dumps(report, indent=2) + "\n")
        for line in summary_lines(report):
            echo(line)
        add_estimated_trace(plan, Path(run_dir))
        return report
    except Exception as exc:  # noqa: BLE001 -- reporting must not fail a finished run
        echo(f"(no estimated-vs-measured summary: {type(exc).__name__}: {exc})")
        return None


def estimated_trace_events(plan: Any, iterations: int) -> list[dict[str, Any]]:
    """Chrome trace events of the plan's simulated timeline: `iterations` steady-state
    iterations (the unrolled timeline's last ones, never its first, which holds one-off
    reallocations), one track per device, times from the first of them."""
    from runtime.execution.trace import ESTIMATED_PID, trace_event, trace_names

    unrolled = sorted({e.iteration for e in plan.timeline})
    chosen = unrolled[1:][-iterations:] if len(unrolled) > 1 else unrolled
    entries = [e for e in plan.timeline if e.iteration in chosen]
    if not entries:
        return []
    origin = min(e.start for e in entries)
    devices = sorted({e.device for e in entries})
    out = trace_names(ESTIMATED_PID, "estimated (plan's devices)", [(d, f"device {d}") for d in devices])
    for e in entries:
        out.append(trace_event(e.label, e.what, ESTIMATED_PID, e.device, e.start - origin, e.end - origin,
                               iteration=e.iteration - chosen[0] + 1))
    return out


def add_estimated_trace(plan: Any, run_dir: Path) -> bool:
    """Add the simulated timeline beside the measured steps in RUN_DIR/trace.json (written by
    the run's rank 0); False when the run left no trace."""
    from runtime.execution.trace import TRACE_FILE

    path = run_dir / TRACE_FILE
    if not path.is_file():
        return False
    trace = json.loads(path.read_text())
    measured = {e.get("args", {}).get("iteration") for e in trace["traceEvents"] if e.get("ph") == "X"}
    trace["traceEvents"] += estimated_trace_events(plan, max(len(measured), 1))
    path.write_text(json.dumps(trace) + "\n")
    return True
