"""The planner's speed and quality goals at every scale, side by side.

    PYTHONPATH=$PWD python experiments/bench/planner_scale.py [--quick] [--json out.json]

Timing goals (issue #14), each `realloc plan ... --dry-run --json` run as its own process
at default settings, wall seconds from start to exit (Python start-up, experiment
loading, heuristics, plan space, search and the report):

| goal | command |
|---|---|
| < 2 s | `realloc plan ppo_tiny --dry-run` (4 CPU workers) |
| < 30 s | `realloc plan paper/ppo-70b-7b-128gpu --dry-run` (70B actor, 128 GPUs) |
| < 60 s | the same with `cluster.nodes=128 graph.batch_size=4096` (1024 GPUs) |

Also printed per run: plans simulated and plans simulated per search second. Quality at
128 GPUs, same seed: the plan of each budget in `--budgets` (nominal seconds), whether
a larger budget was ever worse, and the 10 s plan against the 60 s one (goal: within 1%).
Every number carries the 1-minute load average when it was taken: on a busy 2-core
machine the wall times grow with the load.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
GOALS = (
    {"name": "ppo_tiny, 4 CPU workers", "args": ["ppo_tiny"], "goal_s": 2.0},
    {"name": "70B actor, 128 GPUs", "args": ["paper/ppo-70b-7b-128gpu"], "goal_s": 30.0},
    {"name": "70B actor, 1024 GPUs", "args": ["paper/ppo-70b-7b-128gpu", "cluster.nodes=128",
                                              "graph.batch_size=4096"], "goal_s": 60.0},
)
BASELINE = {
    "commit": "595d572",
    "note": ("before this work, measured with the same experiments on this machine kind: 70B/128 GPUs with "
             "plan.time_budget_s=5 simulated 393 plans in 10.8 s of search (36 plans/s; 17.3 s for all of "
             "make_plan, load 0.9); 70B/1024 GPUs with budget 5 took 184 s wall (load 1.0-1.5); ppo_tiny "
             "--dry-run 2.0 s (load 1.1)"),
    "plans_per_s_128": 36.0,
}


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def time_plan(args: Sequence[str]) -> dict[str, Any]:
    """Run `realloc plan ARGS --dry-run --json` in a fresh process; wall seconds and search stats."""
    load = _load()
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "realloc.cli", "plan", *args, "--dry-run", "--json"],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"realloc plan {' '.join(args)} failed: {proc.stderr.strip().splitlines()[-1:]}")
    plan = json.loads(proc.stdout)["plan"]
    search = plan.get("search") or {}
    plans = search.get("num_evaluations", 0)
    search_s = search.get("wall_s") or 0.0
    return {"wall_s": round(wall, 2), "load_before": load, "load_after": _load(),
            "plan_iter_s": plan["iteration_time_s"], "plans_simulated": plans,
            "search_wall_s": round(search_s, 2),
            "plans_per_search_s": round(plans / search_s, 1) if search_s else None}


def budget_quality(budgets: Sequence[float], *, seed: int = 0,
                   note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The 70B/128-GPU plan of each budget, same seed, deterministic budgets (no wall guard)."""
    from planner.make import make_plan
    from realloc.experiment import load_experiment
    from realloc.planning import cost_model_for, plan_options

    rows = []
    for budget in budgets:
        exp = load_experiment("paper/ppo-70b-7b-128gpu", [f"plan.time_budget_s={budget}", f"plan.seed={seed}"])
        options = plan_options(exp, compare=False)
        load = _load()
        t0 = time.perf_counter()
        result = make_plan(exp.graph, cost_model_for(exp), options)
        wall = time.perf_counter() - t0
        assert result.search is not None
        rows.append({"budget_s": budget, "plan_iter_s": result.plan.iteration_time_s,
                     "plans_simulated": result.search.num_evaluations, "wall_s": round(wall, 1),
                     "wall_clock_stop": result.search.wall_clock_stop, "load": load})
        if note:
            note(f"budget {budget:g} s: {result.plan.iteration_time_s:.4f} s/iteration")
    times = [r["plan_iter_s"] for r in rows]
    worse = [f"{rows[i + 1]['budget_s']:g} s worse than {rows[i]['budget_s']:g} s"
             for i in range(len(rows) - 1) if times[i + 1] > times[i] * (1 + 1e-12)]
    by_budget = {r["budget_s"]: r["plan_iter_s"] for r in rows}
    gap = by_budget[10.0] / by_budget[60.0] - 1 if 10.0 in by_budget and 60.0 in by_budget else None
    return {"seed": seed, "rows": rows, "larger_budget_never_worse": not worse, "worse": worse,
            "gap_10_vs_60": gap}


def search_goals(*, quick: bool = False, budgets: Sequence[float] | None = None,
                 note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The timing goals (only ppo_tiny when quick) and the budget-quality check."""
    rows = []
    for goal in GOALS[:1] if quick else GOALS:
        if note:
            note(f"timing realloc plan {' '.join(goal['args'])}")
        r = time_plan(goal["args"])
        rows.append({"name": goal["name"], "command": "realloc plan " + " ".join(goal["args"]) + " --dry-run",
                     "goal_s": goal["goal_s"], "met": r["wall_s"] < goal["goal_s"], **r})
    budgets = budgets or ((0.3, 3.0) if quick else (1.0, 3.0, 10.0, 60.0))
    quality = budget_quality(budgets, note=note)
    return {"timings": rows, "quality": quality, "baseline": BASELINE}


def print_goals(data: dict[str, Any]) -> None:
    for r in data["timings"]:
        rate = r["plans_per_search_s"]
        print(f"{r['name']:>24}: {r['wall_s']:6.2f} s (goal < {r['goal_s']:g} s: {'met' if r['met'] else 'MISSED'}); "
              f"{r['plans_simulated']} plans, {rate} plans/search-s; load {r['load_before']}-{r['load_after']}")
    q = data["quality"]
    for r in q["rows"]:
        print(f"  budget {r['budget_s']:>5g} s: {r['plan_iter_s']:.4f} s/iteration, {r['plans_simulated']} plans, "
              f"{r['wall_s']} s wall, load {r['load']}")
    gap = q["gap_10_vs_60"]
    print(f"  larger budget never worse: {q['larger_budget_never_worse']}"
          + ("" if gap is None else f"; 10 s plan vs 60 s plan: {100 * gap:+.2f}% (goal <= 1%)"))
    print(f"baseline: {data['baseline']['note']}")


def render_goals(data: dict[str, Any], md_table: Callable[..., list[str]]) -> list[str]:
    """Markdown of the goals: timings side by side, then the budget-quality check."""
    lines = ["Planning time at default settings, each in a fresh process (wall seconds, load at the start):", ""]
    lines += md_table(["command", "goal", "wall s", "met", "plans simulated", "plans / search s", "load"],
                      [[f"`{r['command']}`", f"< {r['goal_s']:g} s", r["wall_s"], "yes" if r["met"] else "no",
                        r["plans_simulated"], r["plans_per_search_s"], r["load_before"]] for r in data["timings"]])
    q = data["quality"]
    lines += ["", "70B actor on 128 GPUs, same seed, deterministic budgets:", ""]
    lines += md_table(["budget s", "plan s/iter", "plans simulated", "wall s", "load"],
                      [[r["budget_s"], f"{r['plan_iter_s']:.4f}", r["plans_simulated"], r["wall_s"], r["load"]]
                       for r in q["rows"]])
    gap = q["gap_10_vs_60"]
    lines += ["", f"A larger budget was never worse: {'yes' if q['larger_budget_never_worse'] else 'no'}"
              + ("" if gap is None else f"; the 10 s plan is {100 * gap:+.2f}% off the 60 s plan (goal: within 1%).")]
    lines += ["", f"Baseline: {data['baseline']['note']}."]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="time ppo_tiny only; budgets 0.3 and 3 s")
    parser.add_argument("--budgets", type=float, nargs="+", help="nominal budgets for the quality check")
    parser.add_argument("--json", type=Path, help="write the result here")
    args = parser.parse_args()
    data = search_goals(quick=args.quick, budgets=args.budgets, note=lambda s: print(f"... {s}", flush=True))
    print_goals(data)
    if args.json:
        args.json.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
