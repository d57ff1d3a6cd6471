"""Validate the cost model on real runs: estimated vs measured call and iteration times.

Runs several plans of ppo_tiny and grpo_tiny (the searched plan, every heuristic, and
manual layouts with dp/tp/pp variety and reallocations) for real on 4 CPU workers (one
launch per experiment), and compares with the estimates of the cost model built from a
measured profile (`experiments/profiles/cpu-2core-4proc.json` by default):

- per call: the measured `call_time_s` (median over the iterations after warm-up) against
  the call's duration in the simulator's steady-state timeline (which includes the slowdown
  of calls overlapping on shared cores); per call kind generate / inference / train, and
  realloc (the iteration's reallocation seconds, the most any rank spent);
- per iteration: measured `iter_time_s` against the simulated iteration time, and the
  Spearman rank correlation of the two over all plans.

Nothing here is fitted: the model's numbers come from the profile alone. Rule-based
reward calls (no model; host work per sequence) are their own kind, "rule".

    python experiments/bench/validate_cost_model.py [--quick] [--out FILE.json] [--profile FILE]

`run_validation(quick=..., out=...)` is the library entry (`realloc bench` calls it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from realloc.estimate_check import measured_times, predicted_times  # noqa: F401 -- also this module's API
from realloc.experiment import EXPERIMENTS_DIR

DEFAULT_PROFILE = EXPERIMENTS_DIR / "profiles" / "cpu-2core-4proc.json"
KINDS = ("generate", "inference", "train", "rule", "realloc")
GOALS = {"median": 0.15, "worst": 0.35, "spearman": 0.9}

# Manual plans: call -> (devices, dp, tp, pp, micro_batches)
MANUAL: dict[str, dict[str, dict[str, tuple]]] = {
    "ppo_tiny": {
        "manual-gen-tp2-realloc": {
            "actor_gen": ((0, 1, 2, 3), 2, 2, 1, 1), "reward_inf": ((0,), 1, 1, 1, 1),
            "ref_inf": ((0, 1, 2, 3), 4, 1, 1, 1), "critic_inf": ((0, 1, 2, 3), 4, 1, 1, 1),
            "actor_train": ((0, 1, 2, 3), 4, 1, 1, 1), "critic_train": ((0, 1, 2, 3), 4, 1, 1, 1)},
        "manual-pp2-tp2-split": {
            "actor_gen": ((0, 1), 2, 1, 1, 1), "reward_inf": ((3,), 1, 1, 1, 1),
            "ref_inf": ((0, 1), 1, 2, 1, 1), "critic_inf": ((2, 3), 1, 2, 1, 1),
            "actor_train": ((0, 1), 1, 1, 2, 2), "critic_train": ((2, 3), 1, 2, 1, 2)},
        "manual-one-device-each": {
            "actor_gen": ((0,), 1, 1, 1, 1), "reward_inf": ((3,), 1, 1, 1, 1),
            "ref_inf": ((1,), 1, 1, 1, 1), "critic_inf": ((2,), 1, 1, 1, 1),
            "actor_train": ((0,), 1, 1, 1, 1), "critic_train": ((2,), 1, 1, 1, 1)},
    },
    "grpo_tiny": {
        "manual-gen-tp2-realloc": {
            "actor_gen": ((0, 1, 2, 3), 2, 2, 1, 1), "reward_inf": ((0,), 1, 1, 1, 1),
            "ref_inf": ((0, 1, 2, 3), 4, 1, 1, 1), "actor_train": ((0, 1, 2, 3), 4, 1, 1, 2)},
        "manual-split-pp2": {
            "actor_gen": ((0, 1), 2, 1, 1, 1), "reward_inf": ((3,), 1, 1, 1, 1),
            "ref_inf": ((2, 3), 2, 1, 1, 1), "actor_train": ((0, 1), 1, 1, 2, 2)},
        "manual-one-device": {
            "actor_gen": ((0,), 1, 1, 1, 1), "reward_inf": ((0,), 1, 1, 1, 1),
            "ref_inf": ((1,), 1, 1, 1, 1), "actor_train": ((0,), 1, 1, 1, 1)},
    },
}


# --------------------------------------------------------------------------- statistics


def ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing the mean of their positions."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson correlation of the ranks (ties get mean ranks)."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"spearman needs two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx = sum((a - mx) ** 2 for a in rx)
    vy = sum((b - my) ** 2 for b in ry)
    if vx == 0 or vy == 0:
        return 0.0
    return cov / (vx * vy) ** 0.5


def relative_error(predicted: float, measured: float) -> float:
    """|predicted - measured| / measured."""
    return abs(predicted - measured) / measured


# --------------------------------------------------------------------------- plans


def _plans(exp_name: str, profile: Path, iterations: int) -> tuple[Any, dict[str, Any]]:
    """The experiment and its plans by name (duplicates of an earlier plan dropped)."""
    from planner import PlanOptions, known_heuristics, make_plan
    from realloc.experiment import load_experiment
    from realloc.planning import cost_model_for, plan_experiment

    overrides = [f"cluster.profile={profile}", f"train.iterations={iterations}"]
    exp = load_experiment(exp_name, overrides)
    plans = {"search": plan_experiment(exp, compare=False, quiet=True).plan}
    for name in known_heuristics():
        try:
            e = load_experiment(exp_name, [*overrides, f"plan.mode=heuristic:{name}"])
            plans[name] = plan_experiment(e, compare=False, quiet=True).plan
        except ValueError as exc:
            print(f"{exp_name}: heuristic {name} has no plan ({exc})")
    cost = cost_model_for(exp)
    for name, spec in MANUAL.get(exp_name, {}).items():
        layouts = {call: {"devices": list(d), "dp": dp, "tp": tp, "pp": pp, "micro_batches": m}
                   for call, (d, dp, tp, pp, m) in spec.items()}
        options = PlanOptions.from_dict({"mode": "manual", "layouts": layouts})
        plans[name] = make_plan(exp.graph, cost, options).plan
    unique: dict[str, Any] = {}
    seen: dict[tuple, str] = {}
    for name, plan in plans.items():
        key = tuple(sorted((c, str(lay)) for c, lay in plan.layouts.items()))
        if key in seen:
            print(f"{exp_name}: plan {name} is the same as {seen[key]}; measured once")
            continue
        seen[key] = name
        unique[name] = plan
    return exp, unique


def _layout_dict(lay: Any) -> dict[str, Any]:
    return {"devices": list(lay.mesh.devices), "dp": lay.dp, "tp": lay.tp, "pp": lay.pp,
            "micro_batches": lay.micro_batches}


def reevaluate(report: dict[str, Any], profile: str | Path | None = None) -> dict[str, Any]:
    """The same measurements against the estimates of (another) profile, without running anything."""
    from planner import PlanOptions, make_plan
    from realloc.experiment import load_experiment
    from realloc.planning import cost_model_for

    profile = Path(profile or report["profile"])
    graphs, results = {}, []
    for r in report["plans"]:
        exp = load_experiment(r["experiment"], [f"cluster.profile={profile}"])
        graphs[r["experiment"]] = exp.graph
        options = PlanOptions.from_dict({"mode": "manual", "layouts": r["layouts"]})
        plan = make_plan(exp.graph, cost_model_for(exp), options).plan
        results.append({**r, "predicted": predicted_times(plan, exp.graph)})
    return {**report, "profile": str(profile), "plans": results, "summary": compare(results, graphs)}


def _run_all(ctx: Any, jobs: list[Any]) -> list[Any]:
    from runtime.execution.worker import Worker

    return [Worker(ctx, job).run() for job in jobs]


def measure(exp: Any, plans: dict[str, Any], root: Path) -> dict[str, list[dict[str, Any]]]:
    """Run every plan for real in one launch; the metrics history of each plan."""
    from realloc.run import make_job
    from runtime.execution.launch import LaunchSpec, launch

    jobs = [dataclasses.replace(make_job(exp, dict(plan.layouts), threads_per_worker=plan.threads_per_worker), run_dir=str(root / exp.config.name / name))
            for name, plan in plans.items()]
    spec = LaunchSpec(nproc_per_node=exp.config.cluster.devices_per_node)
    histories = launch(_run_all, (jobs,), spec)[0]
    return dict(zip(plans, histories))


# --------------------------------------------------------------------------- report


def _summary(errors: dict[str, list[float]]) -> dict[str, Any]:
    out = {}
    for kind in KINDS:
        values = errors.get(kind, [])
        out[kind] = {"count": len(values), "median": statistics.median(values) if values else None,
                     "worst": max(values) if values else None}
    return out


def compare(results: list[dict[str, Any]], graphs: dict[str, Any]) -> dict[str, Any]:
    """Relative errors per call kind and the Spearman values from measured/predicted results."""
    errors: dict[str, list[float]] = {k: [] for k in KINDS}
    for r in results:
        graph = graphs[r["experiment"]]
        r["errors"] = {}
        for call in graph.calls:
            if call.name not in r["measured"]["calls"]:
                continue
            err = relative_error(r["predicted"]["calls"][call.name], r["measured"]["calls"][call.name])
            r["errors"][call.name] = err
            errors["rule" if graph.models[call.model].arch is None else call.kind.value].append(err)
        if r["measured"]["realloc"] > 0 or r["predicted"]["realloc"] > 0:
            err = relative_error(r["predicted"]["realloc"], max(r["measured"]["realloc"], 1e-9))
            r["errors"]["realloc"] = err
            errors["realloc"].append(err)
        r["errors"]["iteration"] = relative_error(r["predicted"]["iteration"], r["measured"]["iteration"])
    pred = [r["predicted"]["iteration"] for r in results]
    meas = [r["measured"]["iteration"] for r in results]
    per_exp = {}
    for name in graphs:
        sub = [r for r in results if r["experiment"] == name]
        if len(sub) >= 2:
            per_exp[name] = spearman([r["predicted"]["iteration"] for r in sub],
                                     [r["measured"]["iteration"] for r in sub])
    iteration_errors = [r["errors"]["iteration"] for r in results]
    return {"per_kind": _summary(errors), "spearman": spearman(pred, meas) if len(results) >= 2 else None,
            "spearman_per_experiment": per_exp,
            "iteration": {"median": statistics.median(iteration_errors), "worst": max(iteration_errors)},
            "goals": GOALS}


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title="per plan: measured vs estimated seconds (relative error)")
    for col in ("experiment", "plan", "call", "measured", "estimated", "error"):
        table.add_column(col, justify="right" if col in ("measured", "estimated", "error") else "left")
    for r in report["plans"]:
        rows = [(c, r["measured"]["calls"].get(c), r["predicted"]["calls"].get(c)) for c in r["errors"]
                if c not in ("realloc", "iteration")]
        rows += [(k, r["measured"][k], r["predicted"][k]) for k in ("realloc", "iteration") if k in r["errors"]]
        for i, (name, m, p) in enumerate(rows):
            table.add_row(r["experiment"] if i == 0 else "", r["plan"] if i == 0 else "", name,
                          f"{m:.4f}", f"{p:.4f}", f"{100 * r['errors'][name]:.0f}%")
        table.add_section()
    console.print(table)
    summary = Table(title="relative error per call kind (goal: median <= 15%, worst <= 35%)")
    for col in ("kind", "calls", "median", "worst"):
        summary.add_column(col)
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.0f}%"

    for kind, s in report["summary"]["per_kind"].items():
        summary.add_row(kind, str(s["count"]), fmt(s["median"]), fmt(s["worst"]))
    it = report["summary"]["iteration"]
    summary.add_row("iteration", str(len(report["plans"])), f"{100 * it['median']:.0f}%", f"{100 * it['worst']:.0f}%")
    console.print(summary)
    per = ", ".join(f"{k} {v:.2f}" for k, v in report["summary"]["spearman_per_experiment"].items())
    console.print(f"Spearman (predicted vs measured iteration time, {len(report['plans'])} plans): "
                  f"{report['summary']['spearman']:.3f} (goal >= 0.9); per experiment: {per}")
    console.print(f"load average during the runs: {report['load_average']}")


def run_validation(*, quick: bool = False, out: Path | None = None, profile: str | Path | None = None,
                   experiments: Sequence[str] = ("ppo_tiny", "grpo_tiny"), iterations: int | None = None,
                   warmup: int | None = None, show: bool = False, remeasure: bool = False) -> dict[str, Any]:
    """Run the plans for real, compare with the estimates; the JSON-able report.

    With `remeasure`, `realloc profile --devices 4` runs first and writes `profile`.
    Returns {"profile", "iterations", "warmup", "load_average", "plans": [{"experiment",
    "plan", "layouts", "measured": {"calls", "realloc", "iteration"}, "predicted": {...},
    "errors": {call | "realloc" | "iteration": relative error}}], "summary": {"per_kind":
    {kind: {"count", "median", "worst"}}, "spearman", "spearman_per_experiment",
    "iteration": {"median", "worst"}, "goals"}}. Writes it to `out` when given.
    """
    import os

    profile = Path(profile or DEFAULT_PROFILE)
    if remeasure:  # profile this machine first (in place of the committed file's numbers)
        from runtime.profiling.launcher import profile_machine

        profile_machine(devices=4, quick=quick, out=profile, show_progress=show)
    if not profile.is_file():
        raise ValueError(f"profile {str(profile)!r} does not exist; run `realloc profile --out {profile}`")
    iterations = iterations or (5 if quick else 12)
    warmup = warmup if warmup is not None else (2 if quick else 3)
    if iterations <= warmup:
        raise ValueError(f"iterations ({iterations}) must exceed warmup ({warmup})")
    root = Path(tempfile.mkdtemp(prefix="realloc-validate-"))
    results, graphs, loads = [], {}, []
    for name in experiments:
        exp, plans = _plans(name, profile, iterations)
        graphs[exp.config.name] = exp.graph
        loads.append(os.getloadavg()[0])
        histories = measure(exp, plans, root)
        loads.append(os.getloadavg()[0])
        for plan_name, plan in plans.items():
            results.append({"experiment": exp.config.name, "plan": plan_name,
                            "layouts": {c: _layout_dict(lay) for c, lay in plan.layouts.items()},
                            "measured": measured_times(histories[plan_name], warmup),
                            "predicted": predicted_times(plan, exp.graph)})
    report = {"profile": str(profile), "iterations": iterations, "warmup": warmup,
              "load_average": [round(x, 2) for x in loads], "plans": results,
              "summary": compare(results, graphs)}
    if out is not None:
        Path(out).write_text(json.dumps(report, indent=2) + "\n")
    if show:
        print_report(report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations per plan")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--profile", type=Path, default=DEFAULT_PROFILE, help="measured profile to estimate with")
    parser.add_argument("--iterations", type=int, help="iterations per plan (default 12, quick 5)")
    parser.add_argument("--warmup", type=int, help="iterations left out of the medians (default 3, quick 2)")
    parser.add_argument("--experiments", nargs="+", default=["ppo_tiny", "grpo_tiny"])
    parser.add_argument("--remeasure", action="store_true",
                        help="measure this machine into --profile first (do it on the machine you validate on)")
    parser.add_argument("--reevaluate", type=Path, metavar="REPORT.json",
                        help="no runs: compare the measurements of an earlier report with --profile's estimates")
    args = parser.parse_args()
    if args.reevaluate:
        report = reevaluate(json.loads(args.reevaluate.read_text()), args.profile)
        if args.out:
            args.out.write_text(json.dumps(report, indent=2) + "\n")
        print_report(report)
        return
    run_validation(quick=args.quick, out=args.out, profile=args.profile, experiments=args.experiments,
                   iterations=args.iterations, warmup=args.warmup, show=True, remeasure=args.remeasure)


if __name__ == "__main__":
    main()
