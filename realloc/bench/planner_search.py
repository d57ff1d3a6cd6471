"""Benchmark the planner at published scales: search time, time to 99%, plan vs heuristics.

    PYTHONPATH=$PWD python experiments/bench/planner_search.py [--budget 20] \
        [--provider realloc.bench.synthetic:SyntheticCost] [--only 7b+7b@8] [--json out.json]

`--provider module:factory` names a callable `factory(cluster) -> CostProvider`, so the
same script runs with the analytic cost model once it is wired in. The experiments are
PPO with a LLaMA actor (and ref) and a 7B critic (and reward) as in ReaLHF's table:
7B+7B on 8 GPUs up to 70B+7B on 128 GPUs, 8 GPUs per node. Sequence lengths and batch
size are flags (defaults are our choice, not a claim about the paper's setup).

Printed per experiment: search wall time and plans simulated, the time at which the best
plan first came within 1% of the final one, and the estimated iteration time of the
searched plan and of each heuristic with the speedup over it. With `--cold`, also a
search that starts without the heuristic plan (how fast the annealing itself gets there).
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

from cost_model.provider import CostProvider
from graph.dataflow import DataflowGraph
from graph.placement.layout import Cluster
from graph.spec import ModelArch, ModelSpec
from planner.make import make_plan
from planner.options import PlanOptions


def llama(layers: int, hidden: int, ffn: int, heads: int, kv_heads: int) -> ModelArch:
    """A LLaMA-family architecture."""
    return ModelArch(family="llama", num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn,
                     num_heads=heads, num_kv_heads=kv_heads, vocab_size=32000, max_position_embeddings=4096)


SIZES = {
    "7b": llama(32, 4096, 11008, 32, 32),
    "13b": llama(40, 5120, 13824, 40, 40),
    "34b": llama(48, 8192, 22016, 64, 8),
    "70b": llama(80, 8192, 28672, 64, 8),
}


@dataclass(frozen=True, kw_only=True)
class Experiment:
    """One benchmark point."""

    actor: str
    critic: str
    num_gpus: int

    @property
    def name(self) -> str:
        return f"{self.actor}+{self.critic}@{self.num_gpus}"


EXPERIMENTS = (
    Experiment(actor="7b", critic="7b", num_gpus=8),
    Experiment(actor="13b", critic="7b", num_gpus=16),
    Experiment(actor="34b", critic="7b", num_gpus=32),
    Experiment(actor="70b", critic="7b", num_gpus=64),
    Experiment(actor="70b", critic="7b", num_gpus=128),
)


def ppo_graph(actor: ModelArch, critic: ModelArch, *, batch_size: int, prompt_len: int,
              response_len: int) -> DataflowGraph:
    """PPO from the project's template: generate, reward / ref / values inference, two trains."""
    from graph.dataset_keys import dataset_keys
    from graph.templates import TemplateParams, build_template

    models = {"actor": ModelSpec(role="actor", arch=actor, trainable=True),
              "critic": ModelSpec(role="critic", arch=critic, trainable=True, value_head=True),
              "ref": ModelSpec(role="ref", arch=actor),
              "reward": ModelSpec(role="reward", arch=critic, value_head=True)}
    params = TemplateParams(batch_size=batch_size, prompt_len=prompt_len, response_len=response_len,
                            generate={"max_new_tokens": response_len})
    return DataflowGraph(models=models.values(), calls=build_template("ppo", params, models),
                         dataset_keys=dataset_keys("prompts"))


def load_factory(spec: str) -> Callable[[Cluster], CostProvider]:
    """`module:callable` -> the callable."""
    module, _, name = spec.partition(":")
    if not name:
        raise ValueError(f"--provider {spec!r}: use module:callable, e.g. realloc.bench.synthetic:SyntheticCost")
    return getattr(importlib.import_module(module), name)


def time_to_quality(trace: tuple[tuple[float, int, float], ...], final: float,
                    quality: float = 0.99) -> float:
    """Wall seconds until the best plan was within 1/quality of the final one."""
    for wall, _units, best in trace:
        if final / best >= quality:
            return wall
    return float("nan")


def run(exp: Experiment, factory: Callable[[Cluster], CostProvider], args: argparse.Namespace) -> dict:
    cluster = Cluster(num_nodes=max(1, exp.num_gpus // 8), devices_per_node=min(8, exp.num_gpus))
    cost = factory(cluster)
    graph = ppo_graph(SIZES[exp.actor], SIZES[exp.critic], batch_size=args.batch_size,
                      prompt_len=args.prompt_len, response_len=args.response_len)
    t0 = time.perf_counter()
    result = make_plan(graph, cost, PlanOptions(time_budget_s=args.budget, seed=args.seed))
    total = time.perf_counter() - t0
    stats = result.search
    assert stats is not None
    final = result.plan.iteration_time_s or float("nan")
    row = {
        "experiment": exp.name,
        "search_wall_s": round(stats.wall_s, 2),
        "make_plan_wall_s": round(total, 2),
        "evaluations": stats.num_evaluations,
        "steps": stats.num_steps,
        "wall_clock_stop": stats.wall_clock_stop,
        "time_to_99pct_s": round(time_to_quality(stats.trace, final), 3),
        "plan_iter_s": round(final, 3),
        "heuristics": {n: {"iter_s": round(p.iteration_time_s or 0, 3),
                           "speedup": round(result.speedup_over(n) or 0, 3)}
                       for n, p in result.baselines.items()},
        "heuristic_errors": dict(result.baseline_errors),
        "plan": {c.name: str(c.layout) for c in result.plan.calls},
    }
    if args.cold:  # the annealing alone, without a heuristic start
        from planner.context import PlanContext
        from planner.search import SearchOptions, anneal_search

        ctx = PlanContext(graph, factory(cluster))
        cold = anneal_search(ctx.sim, ctx.spaces, (), SearchOptions(time_budget_s=args.budget, seed=args.seed))
        row["cold_plan_iter_s"] = round(cold.sim.iteration_time_s, 3)
        row["cold_search_wall_s"] = round(cold.stats.wall_s, 2)
        row["cold_time_to_99pct_s"] = round(time_to_quality(cold.stats.trace, final), 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--provider", default="realloc.bench.synthetic:SyntheticCost")
    parser.add_argument("--budget", type=float, default=20.0, help="nominal search seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument("--response-len", type=int, default=256)
    parser.add_argument("--only", action="append", help="experiment name(s), e.g. 70b+7b@128")
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--cold", action="store_true",
                        help="also search without the heuristic start (fastest-per-call and random starts)")
    args = parser.parse_args()
    factory = load_factory(args.provider)
    rows = []
    for exp in EXPERIMENTS:
        if args.only and exp.name not in args.only:
            continue
        row = run(exp, factory, args)
        rows.append(row)
        heur = "  ".join(f"{n} {h['iter_s']}s ({h['speedup']}x)" for n, h in row["heuristics"].items())
        print(f"{row['experiment']:>14}: search {row['search_wall_s']}s ({row['evaluations']} plans, "
              f"99% at {row['time_to_99pct_s']}s, stop={row['wall_clock_stop']}), "
              f"plan {row['plan_iter_s']}s | {heur}", flush=True)
        if args.cold:
            print(f"{'':>16}cold start: plan {row['cold_plan_iter_s']}s in {row['cold_search_wall_s']}s, "
                  f"within 1% of the warm plan at {row['cold_time_to_99pct_s']}s")
        for name, err in row["heuristic_errors"].items():
            print(f"{'':>16}{name}: {err}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
