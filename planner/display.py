"""What `realloc plan --dry-run` shows: tables, a summary, a JSON report, a Gantt chart.

`plan_report_json(result)` returns this stable dict (`version` changes when a field
changes meaning or disappears; new fields may be added):

    {
      "schema": "realloc.plan_report",
      "version": 1,
      "source": "search",                    # search | heuristic:NAME | manual | file:PATH
      "iteration_time_s": 12.3,              # estimated steady-state seconds per iteration
      "feasible": true,
      "reasons": [],                         # why not feasible
      "device_memory_bytes": 8.5e10,
      "calls": [{"name", "model", "devices": [..], "dp", "tp", "pp", "micro_batches",
                 "time_s", "peak_bytes", "resident_bytes"}],
      "reallocations": [{"model", "before_call", "src": LAYOUT, "dst": LAYOUT, "time_s",
                         "bytes_total", "every_iteration"}],
      "transfers": [{"key", "producer", "consumer", "src": LAYOUT, "dst": LAYOUT, "time_s",
                     "bytes_total"}],
      "device_peak_bytes": [..],             # per device, index = global device id
      "baselines": {"NAME": {"iteration_time_s": float, "speedup": float,   # baseline / plan
                             "calls": [...as above...]}
                    | {"error": "why the heuristic has no plan"}},
      "search": null | {"wall_s", "num_steps", "num_evaluations", "num_accepted",
                        "wall_clock_stop", "trace": [[wall_s, work_units, best_s], ...]},
      "plan": {...},                         # Plan.to_dict(): the plan file's content
      "timeline": null | [[device, start_s, end_s, what, label, iteration], ...]
                                             # with timeline=True; what: call|realloc|transfer
    }

LAYOUT is {"devices": [..], "dp", "tp", "pp", "micro_batches"}.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from planner.errors import PlanError
from planner.make import PlanResult
from planner.plan import Plan

GIB = float(1 << 30)
REPORT_SCHEMA = "realloc.plan_report"
REPORT_VERSION = 1


def _layout_text(layout: Any) -> str:
    return f"{layout.mesh} dp{layout.dp} tp{layout.tp} pp{layout.pp}"


def call_table(plan: Plan, *, title: str | None = None) -> Table:
    """Per call: model, mesh, dp/tp/pp, micro-batches, estimated time and peak memory."""
    table = Table(title=title or f"plan ({plan.source})")
    if plan.threads_per_worker:
        busy = len({d for c in plan.calls for d in c.layout.mesh.devices})
        table.caption = (f"{plan.threads_per_worker} torch thread(s) per worker; {busy} of "
                         f"{plan.cluster.num_devices} workers busy")
    for name in ("call", "model", "mesh", "dp", "tp", "pp", "micro-batches", "est. time (s)",
                 "peak mem (GiB)"):
        table.add_column(name, justify="left" if name in ("call", "model", "mesh") else "right")
    for c in plan.calls:
        table.add_row(c.name, c.model, str(c.layout.mesh), str(c.layout.dp), str(c.layout.tp),
                      str(c.layout.pp), str(c.layout.micro_batches), f"{c.time_s:.3f}",
                      f"{c.peak_bytes / GIB:.2f}")
    return table


def moves_table(plan: Plan) -> Table:
    """Reallocation steps and data transfers of the plan."""
    table = Table(title="reallocations and transfers")
    for name in ("kind", "what", "before / into", "from", "to", "time (s)", "MiB", "when"):
        table.add_column(name)
    for r in plan.reallocations:
        table.add_row("realloc", r.model, r.before_call, _layout_text(r.src), _layout_text(r.dst),
                      f"{r.time_s:.3f}", f"{r.bytes_total / 2**20:.1f}",
                      "every iteration" if r.every_iteration else "first iteration")
    for t in plan.transfers:
        table.add_row("transfer", t.key, f"{t.producer} -> {t.consumer}", _layout_text(t.src),
                      _layout_text(t.dst), f"{t.time_s:.3f}", f"{t.bytes_total / 2**20:.1f}",
                      "every iteration")
    return table


def baselines_table(result: PlanResult) -> Table:
    """Each heuristic's iteration time and the plan's speedup over it."""
    table = Table(title="heuristic baselines")
    for name in ("heuristic", "iteration time (s)", "speedup of this plan"):
        table.add_column(name)
    for name, plan in result.baselines.items():
        speedup = result.speedup_over(name)
        table.add_row(name, f"{plan.iteration_time_s:.3f}",
                      "-" if speedup is None else f"{speedup:.2f}x")
    for name, error in result.baseline_errors.items():
        table.add_row(name, "no plan", error)
    return table


def summary_text(result: PlanResult) -> Text:
    """The estimated iteration time, and feasibility problems if any."""
    plan = result.plan
    t = "unknown" if plan.iteration_time_s is None else f"{plan.iteration_time_s:.3f} s"
    text = Text(f"estimated iteration time: {t}  (plan from {plan.source})")
    if plan.streamed:
        text.append("\nstreamed (samples flow in chunks): "
                    + ", ".join(f"{g} -> {c}" for g, c in plan.streamed))
    if plan.fused:
        text.append("\nfused train pairs (one pipeline per step): "
                    + ", ".join(f"{a} + {b}" for a, b in plan.fused))
    for note in result.notes:
        text.append(f"\nwarning: {note}", style="yellow")
    if plan.device_peak_bytes:
        text.append(f"\npeak memory: {max(plan.device_peak_bytes) / GIB:.2f} GiB of "
                    f"{plan.device_memory_bytes / GIB:.2f} GiB per device")
    if not plan.feasible:
        text.append("\ninfeasible: " + "; ".join(plan.reasons), style="bold red")
    if result.search is not None:
        s = result.search
        text.append(f"\nsearch: {s.num_steps} steps, {s.num_evaluations} plans simulated, "
                    f"{s.wall_s:.1f} s")
    return text


def render_report(result: PlanResult, *, baseline_tables: bool = True) -> Group:
    """Everything `--dry-run` prints, as one rich renderable: the plan's tables and summary,
    then (with `baseline_tables`) each heuristic's call table, then the speedup table."""
    parts: list[Any] = [call_table(result.plan), moves_table(result.plan), summary_text(result)]
    if baseline_tables:
        for name, base in result.baselines.items():
            parts.append(call_table(base, title=f"heuristic {name}: {base.iteration_time_s:.3f} s "
                                                f"per iteration ({len(base.reallocations)} "
                                                f"reallocations, {len(base.transfers)} transfers)"))
    if result.baselines or result.baseline_errors:
        parts.append(baselines_table(result))
    return Group(*parts)


def report_text(result: PlanResult, *, width: int = 120, baseline_tables: bool = True) -> str:
    """The report as plain text."""
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(render_report(result, baseline_tables=baseline_tables))
    return console.file.getvalue()


def plan_report_json(result: PlanResult, *, timeline: bool = False) -> dict[str, Any]:
    """The machine-readable report (schema in the module docstring)."""
    plan = result.plan
    data = plan.to_dict()
    baselines: dict[str, Any] = {}
    for name, base in result.baselines.items():
        baselines[name] = {"iteration_time_s": base.iteration_time_s,
                           "speedup": result.speedup_over(name),
                           "calls": base.to_dict()["calls"]}
    for name, error in result.baseline_errors.items():
        baselines[name] = {"error": error}
    search = None
    if result.search is not None:
        s = result.search
        search = {"wall_s": s.wall_s, "num_steps": s.num_steps, "num_evaluations": s.num_evaluations,
                  "num_accepted": s.num_accepted, "wall_clock_stop": s.wall_clock_stop,
                  "trace": [list(t) for t in s.trace]}
    return {
        "schema": REPORT_SCHEMA,
        "version": REPORT_VERSION,
        "source": plan.source,
        "iteration_time_s": plan.iteration_time_s,
        "feasible": plan.feasible,
        "reasons": list(plan.reasons),
        "device_memory_bytes": plan.device_memory_bytes,
        "calls": data["calls"],
        "reallocations": data["reallocations"],
        "transfers": data["transfers"],
        "device_peak_bytes": data["device_peak_bytes"],
        "baselines": baselines,
        "search": search,
        "plan": data,
        "timeline": [[e.device, e.start, e.end, e.what, e.label, e.iteration]
                     for e in result.plan.timeline] if timeline else None,
    }


COLORS = {"call": None, "realloc": "#d62728", "transfer": "#7f7f7f"}


def draw_timeline(plan: Plan, path: str | Path, *, max_devices: int = 64) -> Path:
    """A Gantt chart (devices x time) of calls, reallocations and transfers, saved to `path`.

    Every simulated iteration is drawn; only the first `max_devices` devices (the title says
    so). Transfers are thin bars on the consumer's devices (they hold no device).

    Needs matplotlib (not a dependency of realloc): ValueError when it is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlanError("--timeline needs matplotlib, which is not installed; "
                         "run `pip install matplotlib` or drop --timeline") from None
    if not plan.timeline:
        raise PlanError("the plan has no timeline (plans loaded from a file are not simulated); "
                         "re-plan, or use mode file with make_plan to re-simulate it")
    entries = [e for e in plan.timeline if e.device < max_devices]
    names = sorted({e.label for e in entries if e.what == "call"})
    palette = plt.get_cmap("tab20")
    color = {n: palette(i % 20) for i, n in enumerate(names)}
    num_devices = min(plan.cluster.num_devices, max_devices)
    fig, ax = plt.subplots(figsize=(12, 1 + 0.3 * num_devices))
    for e in entries:
        height, offset = (0.8, 0.1) if e.what != "transfer" else (0.25, 0.65)
        fill = color.get(e.label) if e.what == "call" else COLORS[e.what]
        ax.broken_barh([(e.start, e.end - e.start)], (e.device + offset, height), facecolors=fill)
    handles = [plt.Rectangle((0, 0), 1, 1, color=color[n]) for n in names]
    handles += [plt.Rectangle((0, 0), 1, 1, color=COLORS[k]) for k in ("realloc", "transfer")]
    ax.legend(handles, [*names, "reallocation", "transfer"], loc="upper left",
              bbox_to_anchor=(1.0, 1.0), fontsize="small")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("device")
    ax.set_ylim(0, num_devices)
    ax.invert_yaxis()
    shown = "" if num_devices == plan.cluster.num_devices else \
        f" (first {num_devices} of {plan.cluster.num_devices} devices)"
    ax.set_title(f"{plan.source}: {plan.iteration_time_s or 0:.3f} s per iteration{shown}")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
