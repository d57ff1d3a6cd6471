"""Measured iteration time of the searched plan against each heuristic, on the same workers.

One launch of `cluster.devices_per_node` workers (4 CPU processes by default) runs the
experiment under the searched plan and under every heuristic that has a plan, one after
another, and prints the median iteration time of each (after warm-up iterations) next to
the cost model's estimate, with the measured speedup of the searched plan.

    python experiments/bench/plans_measured.py [EXP] [--iterations 12] [--warmup 3] [key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path
from typing import Any

from planner import known_heuristics
from realloc.experiment import load_experiment
from realloc.planning import plan_experiment
from realloc.run import make_job
from runtime.execution.launch import LaunchSpec, launch
from runtime.execution.worker import Worker


def _run_all(ctx, jobs):
    return [Worker(ctx, job).run() for job in jobs]


def measure_plans(exp_name: str, *, iterations: int = 12, warmup: int = 3, overrides: tuple[str, ...] = (),
                  heuristics: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Run `exp_name` under the searched plan and each heuristic with a plan (all, or
    `heuristics`), in one launch.

    Returns {"experiment", "iterations", "warmup", "plans": {name: {"measured_s",
    "estimated_s", "search_speedup"}}, "errors": {heuristic: why it has no plan}}.
    """
    if warmup >= iterations:
        raise ValueError(f"warmup={warmup} leaves no measured iteration of {iterations}; lower it")
    over = [*overrides, f"train.iterations={iterations}"]
    plans = {"search": plan_experiment(load_experiment(exp_name, over), compare=False, quiet=True).plan}
    errors = {}
    for name in known_heuristics() if heuristics is None else heuristics:
        try:
            exp = load_experiment(exp_name, [*over, f"plan.mode=heuristic:{name}"])
            plans[name] = plan_experiment(exp, compare=False, quiet=True).plan
        except ValueError as exc:
            errors[name] = " ".join(str(exc).split())
    exp = load_experiment(exp_name, over)
    with tempfile.TemporaryDirectory(prefix="realloc-bench-") as root:
        jobs = [dataclasses.replace(make_job(exp, dict(plan.layouts), threads_per_worker=plan.threads_per_worker), run_dir=str(Path(root) / name),
                                    plot_every=10**9)
                for name, plan in plans.items()]
        histories = launch(_run_all, (jobs,), LaunchSpec(nproc_per_node=exp.config.cluster.devices_per_node))[0]
    measured = {name: statistics.median(r["iter_time_s"] for r in history[warmup:])
                for name, history in zip(plans, histories)}
    rows = {name: {"measured_s": round(measured[name], 4), "estimated_s": round(plan.iteration_time_s, 4),
                   "search_speedup": round(measured[name] / measured["search"], 3),
                   "layouts": {c.name: str(c.layout) for c in plan.calls}}
            for name, plan in plans.items()}
    return {"experiment": exp.config.name, "devices": exp.config.cluster.devices_per_node,
            "iterations": iterations, "warmup": warmup, "plans": rows, "errors": errors}


def print_plans(result: dict[str, Any]) -> None:
    n, w = result["iterations"], result["warmup"]
    print(f"{result['experiment']}: {n} iterations, median of the last {n - w}")
    print(f"{'plan':<16} {'measured s/iter':>16} {'estimated s/iter':>17} {'search speedup':>15}")
    for name, r in result["plans"].items():
        print(f"{name:<16} {r['measured_s']:>16.3f} {r['estimated_s']:>17.4f} {r['search_speedup']:>14.2f}x")
    for name, err in result["errors"].items():
        print(f"{name}: no plan ({err})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exp", nargs="?", default="ppo_tiny")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    print_plans(measure_plans(args.exp, iterations=args.iterations, warmup=args.warmup,
                              overrides=tuple(args.overrides)))


if __name__ == "__main__":
    main()
