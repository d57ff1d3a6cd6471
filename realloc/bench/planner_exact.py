"""Annealing vs exact search on random mid-size instances (<= 8 devices, up to 5 calls).

    PYTHONPATH=$PWD python experiments/bench/planner_exact.py [--seeds 20] [--budget 0.5]
        [--max-plans 200000]

Prints, per seed, the plan-space size, the exact optimum and the annealing result, then
the share of seeds where annealing found the optimum and the time of both searches.
Uses the synthetic costs and instances of `realloc.bench.synthetic`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from planner.search import SearchOptions, anneal_search
from realloc.bench.synthetic import random_instance


def exact_vs_anneal(*, seeds: int = 20, first_seed: int = 1000, budget: float = 0.5, max_plans: int = 200_000,
                    on_seed: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Per seed: plan-space size, exact optimum, annealing result and both times; and totals."""
    rows = []
    for seed in range(first_seed, first_seed + seeds):
        t0 = time.perf_counter()
        ctx, exact = random_instance(seed, max_plans=max_plans)
        t1 = time.perf_counter()
        found = anneal_search(ctx.sim, ctx.spaces, options=SearchOptions(time_budget_s=budget, seed=seed))
        t2 = time.perf_counter()
        plans = 1
        for space in ctx.spaces.values():
            plans *= len(space.candidates)
        best, got = exact.sim.iteration_time_s, found.sim.iteration_time_s
        row = {"seed": seed, "devices": ctx.cost.cluster.num_devices, "calls": len(ctx.spaces), "plans": plans,
               "exact_s": best, "anneal_s": got, "optimal": got <= best * (1 + 1e-9),
               "gap": got / best - 1, "exact_time_s": round(t1 - t0, 3), "anneal_time_s": round(t2 - t1, 3)}
        rows.append(row)
        if on_seed:
            on_seed(row)
    return {"seeds": seeds, "budget_s": budget, "optimal": sum(r["optimal"] for r in rows),
            "worst_gap": max(r["gap"] for r in rows), "exact_time_s": round(sum(r["exact_time_s"] for r in rows), 2),
            "anneal_time_s": round(sum(r["anneal_time_s"] for r in rows), 2), "rows": rows}


def _print_row(r: dict[str, Any]) -> None:
    print(f"seed {r['seed']}: {r['devices']} devices, {r['calls']} calls, {r['plans']} plans; exact "
          f"{r['exact_s']:.5f} s, annealing {r['anneal_s']:.5f} s {'=' if r['optimal'] else '>'}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--max-plans", type=int, default=200_000)
    args = parser.parse_args()
    out = exact_vs_anneal(seeds=args.seeds, first_seed=args.first_seed, budget=args.budget,
                          max_plans=args.max_plans, on_seed=_print_row)
    print(f"annealing found the optimum in {out['optimal']}/{args.seeds} seeds; exact search "
          f"{out['exact_time_s']:.1f} s (with instance drawing), annealing {out['anneal_time_s']:.1f} s")


if __name__ == "__main__":
    main()
