"""Stage overlap: fused vs unfused and one-step off-policy vs on-policy, measured and estimated.

Measured (one launch of 4 CPU workers, `ppo_longtail_tiny`: up to 64 new tokens, a long tail
of response lengths), each variant under the plan the planner searches for it:

- `unfused`: plan.fusion=off, on-policy (the baseline);
- `fused`: plan.fusion=inter (finished samples stream into the reward, ref and critic calls);
- `off_policy`: train.off_policy_steps=1 (generation of batch k+1 beside training of batch k);
- `split_unfused`, `split_fused`, `split_off_policy`: the same three on fixed layouts that
  keep generation apart (`split_layouts`: the actor generates on half the devices, the
  rest score and train), so that the mechanisms themselves are compared on equal layouts
  (the search may well pick layouts where nothing can stream or overlap);
- `pipe_unfused`, `pipe_intra`: fixed layouts where the actor and critic train on all
  devices at dp x pp 2 (`pipe_layouts`), plan.fusion=off vs intra (their train steps share
  one pipeline, runtime.engine.fused).

Each row: the median seconds per iteration after warm-up, the planner's estimate for that plan
(the simulator with the experiment's response-length distribution, plan.response_lengths),
the speedup over `unfused` (the split ones: over `split_unfused`), and the estimate
again with the response lengths the run measured (its metrics.jsonl). The machine's load average is recorded: on a shared machine
the measured times stretch and the estimate (fitted to a quiet machine) does not.

Estimated at published scales (docs/published-rlhf.md settings), with an RLHFuse-like
long-tailed length distribution (graph.lengths.LengthDist.longtail), for each: unfused,
fused (inter), intra (fused train pairs), auto, and one-step off-policy, each searched, and the same three on the
disaggregated heuristic's plan (every model on its own devices, OpenRLHF style).

    python experiments/bench/fusion.py [--iterations 6] [--warmup 2] [--quick] [--setting NAME]
        [--skip-measured] [--skip-published] [--variant NAME] [--json out.json] [key=value ...]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

EXPERIMENT = "ppo_longtail_tiny"


def _run_all(ctx: Any, jobs: list[Any]) -> list[Any]:
    from runtime.execution.worker import Worker

    return [Worker(ctx, job).run() for job in jobs]


VARIANTS: dict[str, list[str]] = {
    "unfused": ["plan.fusion=off"],
    "fused": ["plan.fusion=inter"],
    "off_policy": ["train.off_policy_steps=1"],
    "split_unfused": ["plan.fusion=off"],
    "split_fused": ["plan.fusion=inter"],
    "split_off_policy": ["train.off_policy_steps=1"],
    "pipe_unfused": ["plan.fusion=off"],
    "pipe_intra": ["plan.fusion=intra"],
}
"""Overrides of each variant; the first three run the plan searched for them, the split_*
ones the fixed split layouts (generation apart from scoring and training), the pipe_* ones
`pipe_layouts`."""


def pipe_layouts(devices: int = 4, micro_batches: int = 4) -> dict[str, Any]:
    """Every call on all devices (the rule reward on the last); the train calls at pp 2 (dp
    devices / 2) with `micro_batches`, the rest data-parallel: the layouts intra-stage fusion needs."""
    from graph.placement.layout import DeviceMesh, Layout

    mesh = DeviceMesh.span(0, devices)
    flat = Layout(mesh=mesh, dp=devices, tp=1, pp=1)
    pipe = Layout(mesh=mesh, dp=devices // 2, tp=1, pp=2, micro_batches=micro_batches)
    rule = Layout(mesh=DeviceMesh.span(devices - 1, 1), dp=1, tp=1, pp=1)  # the rule reward: one device
    return {name: pipe if name.endswith("_train") else rule if name == "reward_inf" else flat
            for name in ("actor_gen", "reward_inf", "ref_inf", "critic_inf", "actor_train", "critic_train")}


def _baseline(name: str) -> str:
    """The variant a variant's speedup is over."""
    return "split_unfused" if name.startswith("split_") else "pipe_unfused" if name.startswith("pipe_") else "unfused"


def split_layouts(devices: int = 4) -> dict[str, Any]:
    """The actor generates on the first half of the devices; the reward, ref and critic score,
    and the actor and critic train, on the second half (the layouts fusion and off-policy need)."""
    from graph.placement.layout import DeviceMesh, Layout

    half = devices // 2

    def lay(start: int, size: int, dp: int = 1) -> Layout:
        return Layout(mesh=DeviceMesh.span(start, size), dp=dp, tp=size // dp, pp=1)

    return {"actor_gen": lay(0, half, dp=half), "reward_inf": lay(devices - 1, 1),
            "ref_inf": lay(half, 1), "critic_inf": lay(devices - 1, 1),
            "actor_train": lay(half, half, dp=half), "critic_train": lay(half, half, dp=half)}


def measure_fusion(*, iterations: int = 6, warmup: int = 2, overrides: tuple[str, ...] = (),
                   budget: float = 1.0, variants: tuple[str, ...] = ()) -> dict[str, Any]:
    """Plan and run every variant (see the module docstring; those named in `variants`, with
    their baselines, when given) in one launch of the experiment's workers."""
    from planner.context import PlanContext
    from realloc.experiment import load_experiment
    from realloc.planning import cost_model_for, plan_experiment, plan_options
    from realloc.run import make_job
    from runtime.execution.launch import LaunchSpec, launch

    if warmup >= iterations:
        raise ValueError(f"warmup={warmup} leaves no measured iteration of {iterations}; lower it")
    base = [*overrides, f"train.iterations={iterations}", f"plan.time_budget_s={budget}"]
    exps, plans = {}, {}

    def context(exp: Any) -> PlanContext:
        o = plan_options(exp, compare=False)
        return PlanContext(exp.graph, cost_model_for(exp), space_options=o.space_options(),
                           off_policy_steps=o.off_policy_steps, fusion=o.fusion)

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown fusion bench variant {unknown[0]!r}; known: {', '.join(VARIANTS)}")
    wanted = set(variants) | {_baseline(v) for v in variants}
    for name, extra in VARIANTS.items():
        if variants and name not in wanted:
            continue
        exps[name] = load_experiment(EXPERIMENT, [*base, *extra])
        if name.startswith(("split_", "pipe_")):
            fixed = (split_layouts if name.startswith("split_") else pipe_layouts)(
                exps[name].config.cluster.devices_per_node)
            plans[name] = context(exps[name]).evaluate(fixed, name)
        else:
            plans[name] = plan_experiment(exps[name], compare=False, quiet=True).plan
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="realloc-fusion-") as root:
        jobs = [dataclasses.replace(make_job(exps[name], dict(plan.layouts), streamed=plan.streamed,
                                             fused=plan.fused),
                                    run_dir=str(Path(root) / name), plot_every=10**9)
                for name, plan in plans.items()]
        devices = next(iter(exps.values())).config.cluster.devices_per_node
        histories = launch(_run_all, (jobs,), LaunchSpec(nproc_per_node=devices))[0]
        # the same plans priced with the response lengths each run measured (its metrics.jsonl)
        with_lengths = {}
        for name, plan in plans.items():
            lengths = f"plan.response_lengths={Path(root) / name / 'metrics.jsonl'}"
            exp = load_experiment(EXPERIMENT, [*base, *VARIANTS[name], lengths])
            with_lengths[name] = context(exp).evaluate(plan.layouts, name, streamed=plan.streamed,
                                                      fused=plan.fused).iteration_time_s
    load_after = os.getloadavg()[0]
    measured = {name: statistics.median(r["iter_time_s"] for r in h[warmup:]) for name, h in zip(plans, histories)}
    rows = {}
    for name, plan in plans.items():
        est = plan.iteration_time_s or float("nan")
        rows[name] = {
            "measured_s": round(measured[name], 4), "estimated_s": round(est, 4),
            "estimate_error": round(est / measured[name] - 1.0, 3),
            "measured_speedup": round(measured[_baseline(name)] / measured[name], 3),
            "estimated_speedup": round((plans[_baseline(name)].iteration_time_s or est) / est, 3),
            "estimated_measured_lengths_s": round(with_lengths[name] or float("nan"), 4),
            "streamed": [list(e) for e in plan.streamed],
            "fused": [list(p) for p in plan.fused],
            "layouts": {c.name: str(c.layout) for c in plan.calls},
            "response_len": round(statistics.mean(r["actor_gen/response_len"] for r in histories[list(plans).index(name)]), 2),
            "call_time_s": {call: round(statistics.median(r["call_time_s"].get(call, 0.0)
                                                          for r in histories[list(plans).index(name)][warmup:]), 4)
                            for call in histories[0][0]["call_time_s"]},
        }
    return {"experiment": EXPERIMENT, "devices": devices, "iterations": iterations, "warmup": warmup,
            "load_before": round(load_before, 2), "load_after": round(load_after, 2), "plans": rows}


def estimate_published(*, budget: float = 1.0, quick: bool = False,
                       names: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """Estimates at the published settings (those whose name contains one of `names`, when
    given) with a long-tailed length distribution."""
    from cost_model.estimator import AnalyticCostModel
    from cost_model.hardware import preset
    from graph.dataflow import DataflowGraph
    from graph.lengths import LengthDist
    from graph.placement.layout import Cluster
    from planner.make import make_plan
    from planner.options import PlanMode, PlanOptions
    from realloc.bench.published_rlhf import SETTINGS, graph

    rows = []
    chosen = (SETTINGS[0], SETTINGS[3]) if quick else SETTINGS  # quick: 8 A100 and 8 H100
    for s in [s for s in chosen if not names or any(n in s.name for n in names)]:
        g0 = graph(s)
        calls = [dataclasses.replace(c, response_lengths=LengthDist.longtail(c.max_new_tokens))
                 if c.name == "actor_gen" else c for c in g0.calls]
        g = DataflowGraph(models=g0.models.values(), calls=calls, dataset_keys=g0.dataset_keys)
        cluster = Cluster(num_nodes=max(1, s.gpus // 8), devices_per_node=min(8, s.gpus))
        cost = AnalyticCostModel(preset(s.hardware), cluster)
        row: dict[str, Any] = {"setting": s.name, "gpus": s.gpus}
        disagg = {"mode": PlanMode.HEURISTIC, "heuristic": "disaggregated"}
        for name, opts in (("unfused", {}), ("fused", {"fusion": "inter"}), ("intra", {"fusion": "intra"}),
                           ("auto", {"fusion": "auto"}),
                           ("off_policy", {"off_policy_steps": 1}), ("disagg_unfused", disagg),
                           ("disagg_fused", {**disagg, "fusion": "inter"}),
                           ("disagg_off_policy", {**disagg, "off_policy_steps": 1})):
            try:
                plan = make_plan(g, cost, PlanOptions(time_budget_s=budget, compare_heuristics=False, **opts)).plan
                row[name] = {"iteration_s": round(plan.iteration_time_s or float("nan"), 2),
                             "streamed": len(plan.streamed), "fused": len(plan.fused)}
            except ValueError as exc:
                row[name] = {"iteration_s": None, "no_plan": str(exc).split(";")[0]}
        for name in ("fused", "intra", "auto", "off_policy", "disagg_fused", "disagg_off_policy"):
            base = row["disagg_unfused" if name.startswith("disagg") else "unfused"].get("iteration_s")
            it = row[name].get("iteration_s")
            row[name]["speedup"] = round(base / it, 3) if base and it else None
        rows.append(row)
    return rows


def print_fusion(result: dict[str, Any]) -> None:
    n, w = result["iterations"], result["warmup"]
    print(f"{result['experiment']} on {result['devices']} CPU workers: median of the last {n - w} of {n} "
          f"iterations; load average {result['load_before']} -> {result['load_after']}")
    print(f"{'variant':<26} {'measured s':>11} {'estimated s':>12} {'est/meas-1':>11} "
          f"{'meas. speedup':>14} {'est. speedup':>13} {'est. (run lengths) s':>21}  streamed")
    for name, r in result["plans"].items():
        print(f"{name:<26} {r['measured_s']:>11.3f} {r['estimated_s']:>12.3f} {r['estimate_error']:>+11.1%} "
              f"{r['measured_speedup']:>13.2f}x {r['estimated_speedup']:>12.2f}x "
              f"{r['estimated_measured_lengths_s']:>21.3f}  {len(r['streamed'])} edges, "
              f"{len(r.get('fused', ()))} fused pairs")


def print_published(rows: list[dict[str, Any]]) -> None:
    print("published settings, long-tailed lengths (estimated s/iteration and speedup over unfused):")
    for r in rows:
        parts = [f"unfused {r['unfused'].get('iteration_s')}"]
        for name in ("fused", "intra", "auto", "off_policy"):
            parts.append(f"{name} {r[name].get('iteration_s')} ({r[name].get('speedup')}x)")
        parts.append(f"disaggregated heuristic: unfused {r['disagg_unfused'].get('iteration_s')}")
        for name in ("disagg_fused", "disagg_off_policy"):
            parts.append(f"{name[7:]} {r[name].get('iteration_s')} ({r[name].get('speedup')}x)")
        why = r["unfused"].get("no_plan")
        print(f"  {r['setting']}: " + (f"no feasible plan ({why})" if why else ", ".join(parts)))


def render(data: Mapping[str, Any]) -> list[str]:
    """The bench report's fusion section (realloc.bench.suite)."""
    from realloc.bench.suite import _pct, _x, md_table

    m = data["measured"]
    lines = [f"**{m['experiment']}** on {m['devices']} CPU workers: median s/iteration of the last "
             f"{m['iterations'] - m['warmup']} of {m['iterations']} iterations (load {m['load_before']} -> "
             f"{m['load_after']}).", ""]
    lines += md_table(["variant", "measured s", "estimated s", "estimate error", "measured speedup",
                       "estimated speedup"],
                      [[n, r["measured_s"], r["estimated_s"], _pct(r["estimate_error"]), _x(r["measured_speedup"]),
                        _x(r["estimated_speedup"])] for n, r in m["plans"].items()])
    lines += ["", "Published settings with RLHFuse-like long-tailed lengths (estimated s/iteration):", ""]
    rows = []
    names = ("fused", "intra", "auto", "off_policy", "disagg_unfused", "disagg_fused", "disagg_off_policy")
    for r in data["published"]:
        cells = [r["unfused"].get("iteration_s")]
        for name in names:
            it, sp = r.get(name, {}).get("iteration_s"), r.get(name, {}).get("speedup")
            if name not in r:  # a report from before the variant existed
                cells.append("-")
                continue
            cells.append("no plan" if it is None else f"{it} ({sp}x)" if sp is not None else it)
        rows.append([r["setting"], *cells])
    lines += md_table(["setting", "unfused", "fused", "intra", "auto", "off-policy", "disaggregated",
                       "disaggregated fused", "disaggregated off-policy"], rows)
    return lines


def readme_row(data: Mapping[str, Any]) -> list[str]:
    """The README table's row of the fusion section."""
    m = data["measured"]
    cells = [f"{n}: {r['measured_s']:.2f} s ({r['measured_speedup']:.2f}x; est. {r['estimated_s']:.2f} s)"
             for n, r in m["plans"].items()]
    return [f"stage overlap, {m['experiment']}, {m['devices']} CPU workers (measured)", "; ".join(cells)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*")
    parser.add_argument("--iterations", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--quick", action="store_true", help="published scales: the two 8-GPU settings only")
    parser.add_argument("--skip-measured", action="store_true")
    parser.add_argument("--skip-published", action="store_true")
    parser.add_argument("--setting", action="append", default=[],
                        help="published settings whose name contains this (repeatable)")
    parser.add_argument("--variant", action="append", default=[],
                        help=f"measure only this variant and its baseline (repeatable; {', '.join(VARIANTS)})")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    out: dict[str, Any] = {}
    if not args.skip_measured:
        out["measured"] = measure_fusion(iterations=args.iterations, warmup=args.warmup,
                                         overrides=tuple(args.overrides), budget=args.budget,
                                         variants=tuple(args.variant))
        print_fusion(out["measured"])
    if not args.skip_published:
        out["published"] = estimate_published(budget=args.budget, quick=args.quick, names=tuple(args.setting))
        print_published(out["published"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
