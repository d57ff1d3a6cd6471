"""The planner's entry point: `make_plan(graph, cost, options) -> PlanResult`."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from cost_model.provider import CostProvider
from graph.dataflow import DataflowGraph
from graph.overlap import intra_candidates, stream_candidates
from planner.context import PlanContext
from planner.errors import PlanError
from planner.heuristics import known_heuristics, run_heuristic
from planner.options import PlanMode, PlanOptions
from planner.plan import Plan, load_plan
from planner.search import SearchStats, anneal_search


@dataclass(frozen=True, kw_only=True)
class PlanResult:
    """The chosen plan, the heuristic baselines it is compared with, and search statistics."""

    plan: Plan
    baselines: Mapping[str, Plan] = field(default_factory=dict)
    """Feasible heuristic plans by name."""
    baseline_errors: Mapping[str, str] = field(default_factory=dict)
    """Why a heuristic has no plan for this experiment, by name."""
    search: SearchStats | None = None
    """Statistics of the annealing search (mode search only)."""
    threads_tried: Mapping[int, float] = field(default_factory=dict)
    """Searched plan's estimated seconds per iteration by threads per worker, where the
    search chose the threads (CPU workers sharing cores); empty elsewhere."""
    notes: tuple[str, ...] = ()
    """Warnings about the plan's options, one line each (e.g. plan.fusion=intra with nothing to fuse)."""

    def speedup_over(self, name: str) -> float | None:
        """Baseline iteration time / plan iteration time (None when either is unknown)."""
        base = self.baselines.get(name)
        if base is None or not base.iteration_time_s or not self.plan.iteration_time_s:
            return None
        return base.iteration_time_s / self.plan.iteration_time_s


def make_plan(graph: DataflowGraph, cost: CostProvider,
              options: PlanOptions | None = None) -> PlanResult:
    """Plan `graph` on `cost.cluster` as `options` say; ValueError for anything a user can fix.

    Where the workers are CPU processes sharing cores (`cost.thread_options()` offers more
    than one count), the search also chooses the torch threads per worker: it searches the
    layouts under each count's cost model (`cost.with_threads`) and keeps the fastest plan,
    which may leave workers idle to give the busy ones more threads; the searches share
    `options.time_budget_s` equally. A plan file keeps its own threads per worker."""
    options = options or PlanOptions()
    choices = tuple(getattr(cost, "thread_options", lambda: ())())
    hidden = _largest_hidden(graph)
    if options.mode is PlanMode.FILE:
        threads = load_plan(str(options.file)).threads_per_worker
        result = _make_plan(graph, cost.with_threads(threads, hidden) if threads > 1 and len(choices) > 1 else cost,
                            options)
        return dataclasses.replace(result, plan=dataclasses.replace(result.plan, threads_per_worker=threads))
    if options.mode is not PlanMode.SEARCH or len(choices) < 2:
        return _make_plan(graph, cost, options)
    # plan.time_budget_s is the whole search's: each thread count gets its share
    share = dataclasses.replace(options, time_budget_s=options.time_budget_s / len(choices))
    tried = {t: _make_plan(graph, cost.with_threads(t, hidden), share) for t in choices}
    times = {t: r.plan.iteration_time_s for t, r in tried.items()}
    feasible = [t for t, r in tried.items() if r.plan.feasible and r.plan.iteration_time_s is not None]
    best = min(feasible or list(tried), key=lambda t: (times[t] if times[t] is not None else float("inf"), t))
    result = tried[best]
    return dataclasses.replace(result, plan=dataclasses.replace(result.plan, threads_per_worker=best),
                               threads_tried={t: v for t, v in times.items() if v is not None})


def _largest_hidden(graph: DataflowGraph) -> int | None:
    """Layer size the threads' speed-up is priced at: the largest model's (the one whose
    calls dominate); None for a graph of rule-based rewards only."""
    sizes = [m.arch.hidden_size for m in graph.models.values() if m.arch is not None]
    return max(sizes) if sizes else None


def _make_plan(graph: DataflowGraph, cost: CostProvider, options: PlanOptions) -> PlanResult:
    ctx = PlanContext(graph, cost, space_options=options.space_options(),
                      num_iterations=options.num_iterations, off_policy_steps=options.off_policy_steps,
                      fusion=options.fusion)
    baselines: dict[str, Plan] = {}
    errors: dict[str, str] = {}
    if options.compare_heuristics or options.mode is PlanMode.SEARCH:
        for name in known_heuristics():
            try:
                baselines[name] = run_heuristic(name, ctx)
            except ValueError as exc:
                errors[name] = str(exc)
    stats = None
    if options.mode is PlanMode.SEARCH:
        spaces = ctx.spaces  # raises naming a call that fits nowhere
        starts = [ctx.candidates_of(p.layouts)
                  for p in sorted(baselines.values(), key=lambda p: p.iteration_time_s or 0.0)]
        found = anneal_search(ctx.sim, spaces, starts[:1], options.search_options())
        plan = ctx.plan_from(list(found.candidates), "search", found.sim)
        stats = found.stats
    elif options.mode is PlanMode.HEURISTIC:
        plan = _heuristic(ctx, options.heuristic, baselines, errors)
    elif options.mode is PlanMode.MANUAL:
        plan = _manual(ctx, options)
    else:
        plan = _from_file(ctx, str(options.file))
    if options.fusion == "auto" and options.mode is not PlanMode.FILE:
        cands = ctx.candidates_of(plan.layouts)
        streamed = ctx.choose_streaming(cands)
        fused = ctx.choose_fused(cands, streamed)
        if streamed or fused:
            plan = ctx.plan_from(cands, plan.source, streamed=streamed, fused=fused)
    if not options.compare_heuristics:
        baselines, errors = {}, {}
    notes = ()
    if options.fusion in ("intra", "all") and not plan.fused:
        notes = (f"plan.fusion={options.fusion}: no fusable train pair (two train calls on the same "
                 "devices with the same dp, tp and pp > 1); the train calls run unfused",)
    return PlanResult(plan=plan, baselines=baselines, baseline_errors=errors, search=stats, notes=notes)


def _heuristic(ctx: PlanContext, name: str, baselines: dict[str, Plan],
               errors: dict[str, str]) -> Plan:
    if name in baselines:
        return baselines[name]
    try:
        return run_heuristic(name, ctx)  # unknown names raise listing the known ones
    except ValueError:
        if name in known_heuristics():
            ctx.spaces  # noqa: B018 -- a call that fits nowhere explains more than the heuristic
        raise


def _manual(ctx: PlanContext, options: PlanOptions) -> Plan:
    names = [c.name for c in ctx.graph.calls]
    for call in options.layouts:
        if call not in names:
            close = difflib.get_close_matches(call, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PlanError(f"plan.layouts has call {call!r}{hint}, which the experiment lacks; "
                             f"calls: {', '.join(names)}")
    missing = [n for n in names if n not in options.layouts]
    if missing:
        raise PlanError(f"plan.layouts has no layout for call(s) {', '.join(missing)}; "
                         "a manual plan needs one per call")
    layouts = {n: options.layouts[n].to_layout(n) for n in names}
    plan = ctx.evaluate(layouts, "manual")
    if not plan.feasible:
        raise PlanError(f"manual plan does not fit: {'; '.join(plan.reasons)}; move calls apart "
                         "or raise tp/pp")
    return plan


def _from_file(ctx: PlanContext, path: str) -> Plan:
    stored = load_plan(path)
    stored.check_matches(ctx.graph, ctx.cost.cluster)
    meshes = {c.name: c.layout.mesh.devices for c in stored.calls}
    bad = [e for e in stored.streamed if e not in stream_candidates(ctx.graph, meshes)]
    if bad:
        raise PlanError(f"plan file {path!r}: streamed edge {bad[0][0]} -> {bad[0][1]} cannot stream (the "
                        "consumer must be an inference call reading the generate call's samples on other devices)")
    shapes = {c.name: (c.layout.dp, c.layout.tp, c.layout.pp) for c in stored.calls}
    bad_pairs = [p for p in stored.fused if p not in intra_candidates(ctx.graph, meshes, shapes)]
    if bad_pairs:
        raise PlanError(f"plan file {path!r}: fused pair {bad_pairs[0][0]} + {bad_pairs[0][1]} cannot fuse (both "
                        "must be train calls on the same devices with the same dp, tp and pp > 1)")
    try:
        plan = ctx.evaluate(stored.layouts, f"file:{path}", streamed=stored.streamed or None,
                            fused=stored.fused or None)
    except ValueError as exc:
        raise PlanError(f"plan file {path!r} does not match the experiment: {exc}") from None
    if not plan.feasible:
        raise PlanError(f"plan file {path!r} does not fit this experiment: {'; '.join(plan.reasons)}")
    return plan
