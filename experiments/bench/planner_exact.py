"""Annealing vs exact search on random mid-size instances (<= 8 devices, up to 5 calls).

    PYTHONPATH=$PWD python experiments/bench/planner_exact.py [--seeds 20] [--budget 0.5]
        [--max-plans 200000]

Prints, per seed, the plan-space size, the exact optimum and the annealing result, then
the share of seeds where annealing found the optimum and the time of both searches.
Uses the synthetic costs of the tests (tests/planner/synthetic.py).
"""

from __future__ import annotations

import argparse
import time

from planner.search import SearchOptions, anneal_search
from tests.planner.instances import random_instance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=0.5)
    parser.add_argument("--max-plans", type=int, default=200_000)
    args = parser.parse_args()
    hits, exact_s, anneal_s = 0, 0.0, 0.0
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        t0 = time.perf_counter()
        ctx, exact = random_instance(seed, max_plans=args.max_plans)
        t1 = time.perf_counter()
        found = anneal_search(ctx.sim, ctx.spaces, options=SearchOptions(time_budget_s=args.budget, seed=seed))
        t2 = time.perf_counter()
        exact_s, anneal_s = exact_s + t1 - t0, anneal_s + t2 - t1
        ok = found.sim.iteration_time_s <= exact.sim.iteration_time_s * (1 + 1e-9)
        hits += ok
        plans = 1
        for space in ctx.spaces.values():
            plans *= len(space.candidates)
        print(f"seed {seed}: {ctx.cost.cluster.num_devices} devices, {len(ctx.spaces)} calls, "
              f"{plans} plans; exact {exact.sim.iteration_time_s:.5f} s, annealing "
              f"{found.sim.iteration_time_s:.5f} s {'=' if ok else '>'}", flush=True)
    print(f"annealing found the optimum in {hits}/{args.seeds} seeds; exact search {exact_s:.1f} s "
          f"(with instance drawing), annealing {anneal_s:.1f} s")


if __name__ == "__main__":
    main()
