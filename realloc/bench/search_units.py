"""Fit the search's work units (planner.work_units) to the CPU time the simulator really takes.

    PYTHONPATH=$PWD python experiments/bench/search_units.py [--states 60] [--seed 0]

A work unit is meant to be a reference microsecond of one core, so that a nominal search
second (`plan.time_budget_s`) takes about a second there. This draws random plans of
several experiments (tiny CPU ones, and the paper's at 8 to 1024 GPUs), times on one
core (process CPU time, the least of three tries) pricing each reallocation and data
transfer with empty caches, and each simulation with full ones, fits the unit constants
by least squares on relative error, and prints them with the ratio of predicted to
measured time per experiment before and after the fit. Paste the fitted constants into
planner/work_units.py. CPU time is less sensitive than wall time to other processes, but a
loaded machine still inflates it: the 1-minute load average is printed.
"""

from __future__ import annotations

import argparse
import os
import random
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import planner.work_units as units
from planner.context import PlanContext

EXPERIMENTS = (
    ("ppo_tiny", []), ("grpo_tiny", []),
    ("paper/ppo-7b-7b-8gpu", []), ("paper/ppo-34b-7b-32gpu", []), ("paper/ppo-70b-7b-128gpu", []),
    ("paper/ppo-70b-7b-128gpu", ["cluster.nodes=128", "graph.batch_size=4096"]),
)


def _cpu(fn: Callable[[], Any], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best * 1e6


def _samples(name: str, overrides: list[str], num_states: int, seed: int) -> dict[str, list]:
    from realloc.experiment import load_experiment
    from realloc.planning import cost_model_for

    exp = load_experiment(name, overrides)
    cost = cost_model_for(exp)
    ctx = PlanContext(exp.graph, cost)
    sim = ctx.sim
    names = [c.name for c in exp.graph.calls]
    rng = random.Random(seed)
    out: dict[str, list] = {"realloc": [], "data": [], "sim": []}
    for _ in range(num_states):
        cands = [rng.choice(ctx.spaces[n].candidates) for n in names]
        prim = sim.primaries(cands)
        for i, call in enumerate(exp.graph.calls):
            p = prim.get(call.model)
            if p is not None and p.key != cands[i].key:
                a, b = sim._canonical(p.layout, cands[i].layout)
                model = exp.graph.models[call.model]

                def price(model=model, a=a, b=b) -> None:
                    cost._realloc_cache.clear()
                    cost.realloc_estimate(model, a, b)

                out["realloc"].append((units.realloc_pieces(a, b), a.mesh.size + b.mesh.size, _cpu(price)))
            for j, key in sim.data_in[i]:
                if cands[j].key != cands[i].key:
                    src, dst = cands[j].layout, cands[i].layout
                    t = _cpu(lambda j=j, i=i, key=key, src=src, dst=dst: cost.data_estimate(
                        exp.graph.calls[j], exp.graph.calls[i], key, src, dst))
                    out["data"].append((units.data_receivers(src, dst), t))
        sim.simulate(cands)  # prices the moves: the timed runs below find them cached
        t = _cpu(lambda cands=cands: sim.simulate(cands))
        out["sim"].append((sim.last_incidences, t, bool(sim.host_cores)))
    return out


def _fit(rows: np.ndarray, t: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Non-negative least squares on relative error, each experiment weighing the same."""
    from cost_model.calibration import _nonneg_lstsq

    sizes = {g: int((groups == g).sum()) for g in set(groups.tolist())}
    w = 1.0 / t / np.sqrt(np.array([sizes[g] for g in groups.tolist()], dtype=float))
    return _nonneg_lstsq(rows * w[:, None], t * w)


def _units(consts: dict[str, float], kind: str, row: tuple) -> float:
    """Predicted units of one sample under `consts` (the committed value where absent)."""
    def g(name: str) -> float:
        return consts.get(name, getattr(units, name))

    if kind == "realloc":
        return g("REALLOC_BASE_UNITS") + g("REALLOC_PIECE_UNITS") * row[0] + g("REALLOC_DEVICE_UNITS") * row[1]
    if kind == "data":
        return g("DATA_BASE_UNITS") + g("DATA_DEVICE_UNITS") * row[0]
    per = g("SHARED_INCIDENCE_UNITS") if row[2] else g("SIM_INCIDENCE_UNITS")
    return g("SIM_BASE_UNITS") + per * row[0]


def _measured(kind: str, row: tuple) -> float:
    return row[1] if kind == "sim" else row[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", type=int, default=60, help="random plans per experiment")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"1-minute load average at the start: {os.getloadavg()[0]:.2f}")
    per_exp = {}
    for name, overrides in EXPERIMENTS:
        label = name + ("" if not overrides else " " + " ".join(overrides))
        per_exp[label] = _samples(name, overrides, args.states, args.seed)
        print(f"measured {label}", flush=True)
    realloc = [(*r, g) for g, s in enumerate(per_exp.values()) for r in s["realloc"]]
    data = [(*r, g) for g, s in enumerate(per_exp.values()) for r in s["data"]]
    sims = [(*r, g) for g, s in enumerate(per_exp.values()) for r in s["sim"] if not r[2]]
    shared = [r for s in per_exp.values() for r in s["sim"] if r[2]]
    fitted = {}
    if realloc:
        c = _fit(np.array([[1.0, p, n] for p, n, _, _ in realloc]), np.array([t for _, _, t, _ in realloc]),
                 np.array([g for *_, g in realloc]))
        fitted.update(REALLOC_BASE_UNITS=c[0], REALLOC_PIECE_UNITS=c[1], REALLOC_DEVICE_UNITS=c[2])
    if data:
        c = _fit(np.array([[1.0, n] for n, _, _ in data]), np.array([t for _, t, _ in data]),
                 np.array([g for *_, g in data]))
        fitted.update(DATA_BASE_UNITS=c[0], DATA_DEVICE_UNITS=c[1])
    if sims:
        c = _fit(np.array([[1.0, k] for k, _, _, _ in sims]), np.array([t for _, t, _, _ in sims]),
                 np.array([g for *_, g in sims]))
        fitted.update(SIM_BASE_UNITS=c[0], SIM_INCIDENCE_UNITS=c[1])
    if shared:
        base = fitted.get("SIM_BASE_UNITS", units.SIM_BASE_UNITS)
        k = np.array([k for k, _, _ in shared], dtype=float)
        t = np.array([t for _, t, _ in shared])
        fitted["SHARED_INCIDENCE_UNITS"] = float(np.median((t - base) / k))
    for stage, consts in (("committed", {}), ("fitted", fitted)):
        print(f"\n{stage} constants: " + ", ".join(
            f"{k}={consts.get(k, getattr(units, k)):.3g}" for k in fitted))
        for label, s in per_exp.items():
            parts = []
            for kind in ("realloc", "data", "sim"):
                rows = s[kind]
                if rows:
                    ratio = np.median([_units(consts, kind, r) / _measured(kind, r) for r in rows])
                    parts.append(f"{kind} {ratio:.2f}x ({len(rows)})")
            print(f"  {label}: predicted / measured, median: " + ", ".join(parts))
    print(f"\n1-minute load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
