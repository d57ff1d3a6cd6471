"""The run's step trace: when each rank ran each step of the last iterations.

Every rank notes the wall-clock start and end of each step it runs (`IterationLog.spans`,
filled by `StepDispatcher.run`); rank 0 keeps those of the last `TRACE_ITERATIONS`
iterations and writes them as `RUN_DIR/trace.json` in the Chrome trace-event format
(open it in https://ui.perfetto.dev or chrome://tracing): one track per rank, a span per
step, labelled as the planner's timeline labels its tasks (the call's name; "MODEL->CALL"
for a reallocation; "KEY:PRODUCER->CALL" for a data transfer, shown on the receiving rank).
`realloc run` then adds the plan's simulated timeline of as many steady-state iterations
beside it (`realloc.estimate_check.add_estimated_trace`), so the two can be read side by
side: where a rank waited, which step ran longer than priced.

Times are wall-clock seconds since the epoch on each rank's host: on one machine they
line up; across nodes they are as good as the hosts' clock synchronisation.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from graph.dataflow import DataflowGraph
from runtime.execution.program import Step, StepKind

TRACE_FILE = "trace.json"
"""The trace's name in the run directory."""

TRACE_ITERATIONS = 3
"""Iterations the trace keeps: the run's last ones."""

MEASURED_PID, ESTIMATED_PID = 1, 2
"""Trace 'processes': the measured ranks and the simulated devices."""


def step_label(step: Step, graph: DataflowGraph) -> str:
    """The planner timeline's label of what `step` does."""
    if step.kind is StepKind.REALLOC:
        return f"{step.model or graph.call(step.call).model}->{step.call}"
    if step.kind is StepKind.SEND:
        return f"{step.key}:{graph.producer(step.key) or 'data'}->{step.call}"
    if step.kind is StepKind.FREE:
        return f"free {step.call}"
    if step.kind in (StepKind.STREAM, StepKind.FUSE):
        return "+".join((step.call, *step.consumers))
    return step.call


def trace_event(name: str, cat: str, pid: int, tid: int, start_s: float, end_s: float, **args: Any) -> dict[str, Any]:
    return {"name": name, "cat": cat, "ph": "X", "pid": pid, "tid": tid, "ts": round(start_s * 1e6, 1),
            "dur": round(max(end_s - start_s, 0.0) * 1e6, 1), "args": args}


def trace_names(pid: int, process: str, threads: Iterable[tuple[int, str]]) -> list[dict[str, Any]]:
    out = [{"name": "process_name", "ph": "M", "pid": pid, "args": {"name": process}},
           {"name": "process_sort_index", "ph": "M", "pid": pid, "args": {"sort_index": pid}}]
    out += [{"name": "thread_name", "ph": "M", "pid": pid, "tid": tid, "args": {"name": name}} for tid, name in threads]
    return out


class StepTrace:
    """Rank 0: the steps of the last `keep` iterations, per rank."""

    def __init__(self, keep: int = TRACE_ITERATIONS) -> None:
        self.iterations: deque[tuple[int, list[list[tuple[str, str, float, float]]]]] = deque(maxlen=keep)

    def add(self, it: int, per_rank: Sequence[Sequence[tuple[str, str, float, float]]]) -> None:
        """Iteration `it`'s spans, one list per rank (rank order)."""
        self.iterations.append((it, [list(spans) for spans in per_rank]))

    def events(self) -> list[dict[str, Any]]:
        """Chrome trace events, times from the first kept iteration's first step."""
        starts = [s[2] for _, ranks in self.iterations for spans in ranks for s in spans]
        if not starts:
            return []
        origin = min(starts)
        ranks = max(len(r) for _, r in self.iterations)
        out = trace_names(MEASURED_PID, "measured (ranks)", [(r, f"rank {r}") for r in range(ranks)])
        for it, per_rank in self.iterations:
            for rank, spans in enumerate(per_rank):
                for kind, label, start, end in spans:
                    out.append(trace_event(label, kind.lower(), MEASURED_PID, rank, start - origin, end - origin,
                                      iteration=it + 1))
        return out

    def write(self, path: str | Path) -> None:
        """`path` as a Chrome trace of the kept iterations (nothing when none was kept)."""
        events = self.events()
        if events:
            Path(path).write_text(json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}) + "\n")
