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

from planner import known_heuristics
from realloc.experiment import load_experiment
from realloc.planning import plan_experiment
from realloc.run import make_job
from runtime.executor import Worker
from runtime.launch import LaunchSpec, launch


def _run_all(ctx, jobs):
    return [Worker(ctx, job).run() for job in jobs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("exp", nargs="?", default="ppo_tiny")
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--iterations", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    overrides = [*args.overrides, f"train.iterations={args.iterations}"]
    plans = {"search": plan_experiment(load_experiment(args.exp, overrides), compare=False, quiet=True).plan}
    for name in known_heuristics():
        try:
            exp = load_experiment(args.exp, [*overrides, f"plan.mode=heuristic:{name}"])
            plans[name] = plan_experiment(exp, compare=False, quiet=True).plan
        except ValueError as exc:
            print(f"{name}: no plan ({exc})")
    root = Path(tempfile.mkdtemp(prefix="realloc-bench-"))
    exp = load_experiment(args.exp, overrides)
    jobs = []
    for name, plan in plans.items():
        job = make_job(exp, dict(plan.layouts))
        jobs.append(dataclasses.replace(job, run_dir=str(root / name)))
    histories = launch(_run_all, (jobs,), LaunchSpec(nproc_per_node=exp.config.cluster.devices_per_node))[0]
    measured = {}
    for name, history in zip(plans, histories):
        times = [r["iter_time_s"] for r in history[args.warmup:]]
        measured[name] = statistics.median(times)
    print(f"{exp.config.name}: {args.iterations} iterations, median of the last {args.iterations - args.warmup}")
    print(f"{'plan':<16} {'measured s/iter':>16} {'estimated s/iter':>17} {'search speedup':>15}")
    for name, plan in plans.items():
        speed = measured[name] / measured["search"]
        print(f"{name:<16} {measured[name]:>16.3f} {plan.iteration_time_s:>17.4f} {speed:>14.2f}x")


if __name__ == "__main__":
    main()
