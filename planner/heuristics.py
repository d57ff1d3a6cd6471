"""Heuristic baseline plans, registered by name.

- `symmetric`: every call on all devices with one shared dp x tp x pp (the best such
  layout by simulation), as hand-tuned Megatron setups do. Where generation may not
  use pp > 1, generate calls fold pp into dp (same tp).
- `colocated-dp`: DeepSpeed-Chat style: every model on all devices, data-parallel
  (tp = pp = 1) for inference and training with the optimizer states sharded over dp
  (the cost model's distributed optimizer, ZeRO-1, which it prices by default),
  generation at the tensor-parallel degree that simulates fastest. The cost model does
  not price ZeRO-3's parameter and gradient sharding, so when pure dp does not fit
  (four 7B models resident need ~100 GB per device on 8 GPUs), inference and training
  use the smallest tp with which the whole plan fits, standing in for it.
- `disaggregated`: OpenRLHF style: each weighted model (actor with its generation,
  critic, ref, reward) on its own device group, sized in proportion to its parameter
  memory (parameters, x8 for a trained model's grads and Adam states; whole nodes when
  the share reaches a node, else aligned power-of-two blocks);
  each call then takes a layout on its group by coordinate descent from the fastest
  ones, ranking memory overflow before time (the fastest layouts together often do not
  fit: actor generation next to actor training). A rule-based reward runs on the last
  device. Also tried: each frozen model shares the group of its trained twin (the
  model it is initialised from, else the same architecture and head: OpenRLHF's
  colocated actor+ref and critic+reward); the faster feasible variant wins.

Each heuristic is `fn(ctx: PlanContext) -> Plan` and raises ValueError when it has no
feasible plan for the experiment, saying why.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from graph.placement.layout import DeviceMesh, Layout
from graph.registry import Registry
from graph.spec import Call, CallKind
from planner.context import PlanContext
from planner.errors import PlanError
from planner.plan import Plan
from planner.space import Candidate, SpaceOptions, micro_batch_counts, strategies, tp_allowed

Heuristic = Callable[[PlanContext], Plan]
HEURISTICS: Registry[Heuristic] = Registry("heuristic", key="plan.mode")
"""Heuristic name -> the function building its plan."""


def register_heuristic(name: str) -> Callable[[Heuristic], Heuristic]:
    """Decorator: register a heuristic under `name` (duplicates raise)."""

    return HEURISTICS.register(name)


def known_heuristics() -> tuple[str, ...]:
    """Registered names, in registration order."""
    return HEURISTICS.names()


def get_heuristic(name: str) -> Heuristic:
    """The heuristic called `name`; UnknownNameError listing the known ones."""
    return HEURISTICS.get(name)


def run_heuristic(name: str, ctx: PlanContext) -> Plan:
    """Build the named heuristic's plan."""
    return get_heuristic(name)(ctx)


# --------------------------------------------------------------------------- helpers


def _fastest_mb(ctx: PlanContext, call_name: str, mesh: DeviceMesh,
                strategy: tuple[int, int, int], *, lean: bool = False) -> Candidate | None:
    """The fastest micro-batch count for the strategy (the smallest peak when `lean`)."""
    call = ctx.graph.call(call_name)
    dp, tp, pp = strategy
    best = None
    for m in micro_batch_counts(call, dp, ctx.space_options) or [call.micro_batches]:
        c = ctx.try_candidate(call, Layout(mesh=mesh, dp=dp, tp=tp, pp=pp, micro_batches=m))
        if c is None:
            continue
        score = (c.estimate.peak_bytes, c.estimate.time_s) if lean else (c.estimate.time_s,)
        if best is None or score < best[0]:
            best = (score, c)
    return None if best is None else best[1]


def _rule_candidate(ctx: PlanContext, call_name: str, device: int) -> Candidate:
    layout = Layout(mesh=DeviceMesh(devices=(device,)), dp=1, tp=1, pp=1,
                    micro_batches=ctx.graph.call(call_name).micro_batches)
    return ctx.candidate(ctx.graph.call(call_name), layout)


def _is_rule(ctx: PlanContext, call_name: str) -> bool:
    return ctx.graph.models[ctx.graph.call(call_name).model].arch is None


def _best_of(ctx: PlanContext, options: list[list[Candidate]]) -> tuple[list[Candidate] | None, str]:
    """The fastest feasible option, or None and why the first option fails."""
    best, best_t = None, float("inf")
    for cands in options:
        t = ctx.time_of(cands)
        if t < best_t:
            best, best_t = cands, t
    if best is None and options:
        return None, "; ".join(ctx.sim.simulate(options[0]).reasons)
    return best, ""


def _best(ctx: PlanContext, options: list[list[Candidate]], name: str, why: str) -> Plan:
    best, reason = _best_of(ctx, options)
    if best is None:
        raise PlanError(f"heuristic {name!r} has no feasible plan: {reason or why}")
    return ctx.plan_from(best, f"heuristic:{name}")


# --------------------------------------------------------------------------- symmetric


@register_heuristic("symmetric")
def symmetric(ctx: PlanContext) -> Plan:
    """Every call on all devices with one shared 3D layout: the fastest such plan."""
    mesh = DeviceMesh.span(0, ctx.cost.cluster.num_devices)
    shared: set[tuple[int, int, int]] | None = None
    loose = SpaceOptions(allow_pp_generate=True)
    for call in ctx.graph.calls:
        if _is_rule(ctx, call.name):
            continue
        allowed = set(strategies(call, ctx.graph.models[call.model], mesh.size,
                                 ctx.cost.cluster, loose))
        shared = allowed if shared is None else shared & allowed
    options = []
    for strategy, lean in itertools.product(sorted(shared or ()), (False, True)):
        cands = []
        for call in ctx.graph.calls:
            if _is_rule(ctx, call.name):
                cands.append(_rule_candidate(ctx, call.name, 0))
                continue
            dp, tp, pp = strategy
            if call.kind is CallKind.GENERATE and pp > 1 and not ctx.space_options.allow_pp_generate:
                dp, pp = dp * pp, 1
            c = _fastest_mb(ctx, call.name, mesh, (dp, tp, pp), lean=lean)
            if c is None:
                break
            cands.append(c)
        else:
            options.append(cands)
    return _best(ctx, options, "symmetric",
                 "no single dp x tp x pp over all devices fits every call")


# --------------------------------------------------------------------------- colocated-dp


@register_heuristic("colocated-dp")
def colocated_dp(ctx: PlanContext) -> Plan:
    """All models on all devices, data-parallel; generation at the best tensor-parallel size."""
    n = ctx.cost.cluster.num_devices
    mesh = DeviceMesh.span(0, n)
    weighted = [c for c in ctx.graph.calls if not _is_rule(ctx, c.name)]
    gen_tps = _common_tps(ctx, [c for c in weighted if c.kind is CallKind.GENERATE], n)
    train_tps = _common_tps(ctx, [c for c in weighted if c.kind is not CallKind.GENERATE], n)
    reason = "no tensor-parallel size suits every model"
    for train_tp in train_tps:  # pure dp first; more tp only when the plan does not fit
        options = []
        for gen_tp, lean in itertools.product(gen_tps, (False, True)):
            cands = []
            for call in ctx.graph.calls:
                if _is_rule(ctx, call.name):
                    cands.append(_rule_candidate(ctx, call.name, 0))
                    continue
                tp = gen_tp if call.kind is CallKind.GENERATE else train_tp
                c = _fastest_mb(ctx, call.name, mesh, (n // tp, tp, 1), lean=lean)
                if c is None:
                    break
                cands.append(c)
            else:
                options.append(cands)
        best, why = _best_of(ctx, options)
        if best is not None:
            return ctx.plan_from(best, "heuristic:colocated-dp")
        reason = why or reason
    raise PlanError(f"heuristic 'colocated-dp' has no feasible plan: {reason}")


def _common_tps(ctx: PlanContext, calls: list[Call], n: int) -> list[int]:
    """Tensor-parallel sizes dividing n that suit the models of every call in `calls`."""
    return [tp for tp in range(1, n + 1) if n % tp == 0 and all(
        tp_allowed(ctx.graph.models[c.model], tp, ctx.cost.cluster) for c in calls)]


# --------------------------------------------------------------------------- disaggregated


@register_heuristic("disaggregated")
def disaggregated(ctx: PlanContext) -> Plan:
    """Each model on its own device group, sized by memory; frozen twins share as a fallback."""
    roles = [r for r, m in ctx.graph.models.items()
             if m.arch is not None and ctx.graph.calls_of(r)]
    errors = []
    plans = []
    for groups in _groupings(ctx, roles):
        try:
            plans.append(_disaggregated_plan(ctx, groups))
        except ValueError as exc:
            errors.append(str(exc))
    if not plans:
        raise PlanError(f"heuristic 'disaggregated' has no feasible plan: {'; or '.join(errors)}")
    return min(plans, key=lambda p: p.iteration_time_s or float("inf"))


def _groupings(ctx: PlanContext, roles: list[str]) -> list[list[list[str]]]:
    """One group per model; then each frozen model with the trained model of the same arch
    (OpenRLHF's colocated actor+ref and critic+reward)."""
    alone = [[r] for r in roles]
    trained = [r for r in roles if ctx.graph.train_call(r) is not None]
    paired: dict[str, list[str]] = {r: [r] for r in trained}
    for r in roles:
        if r in paired:
            continue
        twin = _twin(ctx, r, trained)
        paired.setdefault(twin or r, [twin] if twin else []).append(r)
    shared = list(paired.values())
    return [alone] if len(shared) == len(alone) else [alone, shared]


def _twin(ctx: PlanContext, role: str, trained: list[str]) -> str | None:
    """The trained model a frozen one shares a group with: the one it is initialised from,
    else the same architecture and head (reward with critic), else the same architecture."""
    spec = ctx.graph.models[role]
    if spec.init_from in trained:
        return spec.init_from
    same = [t for t in trained if ctx.graph.models[t].arch == spec.arch]
    head = [t for t in same if ctx.graph.models[t].value_head == spec.value_head]
    return (head or same or [None])[0]


def _disaggregated_plan(ctx: PlanContext, groups: list[list[str]]) -> Plan:
    cluster = ctx.cost.cluster
    weights = [sum(float(ctx.graph.models[r].num_params) * (8 if ctx.graph.train_call(r) else 1)
                   for r in g) for g in groups]
    meshes = split_devices(cluster.num_devices, cluster.devices_per_node, weights)
    if meshes is None:
        raise PlanError(f"{len(groups)} device groups do not fit in {cluster.num_devices} devices")
    group = {r: mesh for g, mesh in zip(groups, meshes) for r in g}
    choice: dict[str, list[Candidate]] = {}
    for call in ctx.graph.calls:
        if _is_rule(ctx, call.name):
            choice[call.name] = [_rule_candidate(ctx, call.name, cluster.num_devices - 1)]
            continue
        mesh = group[call.model]
        model = ctx.graph.models[call.model]
        opts = []
        for strategy, lean in itertools.product(
                strategies(call, model, mesh.size, cluster, ctx.space_options), (False, True)):
            c = _fastest_mb(ctx, call.name, mesh, strategy, lean=lean)
            if c is not None and c not in opts:
                opts.append(c)
        if not opts:
            raise PlanError(f"call {call.name!r} does not fit its group {mesh} of {mesh.size} devices")
        choice[call.name] = sorted(opts, key=lambda c: c.estimate.time_s)
    return _coordinate_descent(ctx, choice, "disaggregated")


def _coordinate_descent(ctx: PlanContext, choice: dict[str, list[Candidate]], name: str) -> Plan:
    """One call at a time, the option that most reduces memory overflow, then time.

    Ranking overflow first walks out of an infeasible start (e.g. every call at its
    fastest, which together overflow) towards a plan that fits; ValueError with the
    simulator's reasons when none does.
    """
    names = [c.name for c in ctx.graph.calls]

    def score(cands: list[Candidate]) -> tuple[float, float]:
        res = ctx.sim.simulate(cands)
        return (0.0 if res.feasible else 1.0 + res.overflow_ratio, res.iteration_time_s)

    cur = [choice[n][0] for n in names]
    best = score(cur)
    for _ in range(3):
        moved = False
        for i, n in enumerate(names):
            for c in choice[n]:
                trial = cur[:i] + [c] + cur[i + 1:]
                s = score(trial)
                if s < best:
                    cur, best, moved = trial, s, True
        if not moved:
            break
    if best[0] > 0:
        raise PlanError("; ".join(ctx.sim.simulate(cur).reasons))
    return ctx.plan_from(cur, f"heuristic:{name}")


def _round_size(share: float, dpn: int) -> int:
    if share >= dpn:
        return int(share // dpn) * dpn
    size = 1
    while size * 2 <= share:
        size *= 2
    return size


def _pack(sizes: list[int], num_devices: int, dpn: int) -> list[int] | None:
    """Start device of each group (whole-node groups first), or None if they do not fit."""
    starts: list[int | None] = [None] * len(sizes)
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])
    next_node = 0
    for i in order:
        if sizes[i] >= dpn:
            starts[i] = next_node * dpn
            next_node += sizes[i] // dpn
    num_nodes = num_devices // dpn
    fill = [0] * num_nodes
    for i in order:
        if sizes[i] >= dpn:
            continue
        node = next((k for k in range(next_node, num_nodes) if fill[k] + sizes[i] <= dpn), None)
        if node is None:
            return None
        starts[i] = node * dpn + fill[node]
        fill[node] += sizes[i]
    if next_node > num_nodes:
        return None
    return [s for s in starts if s is not None] if None not in starts else None


def split_devices(num_devices: int, devices_per_node: int,
                  weights: list[float]) -> list[DeviceMesh] | None:
    """Disjoint meshes sized in proportion to `weights`; None if there are too few devices."""
    k = len(weights)
    if k == 0 or k > num_devices:
        return None
    total = sum(weights) or 1.0
    ideal = [num_devices * w / total for w in weights]
    sizes = [max(1, _round_size(s, devices_per_node)) for s in ideal]
    while _pack(sizes, num_devices, devices_per_node) is None:
        i = max(range(k), key=lambda j: (sizes[j] / ideal[j], sizes[j]))
        if sizes[i] == 1:
            return None
        sizes[i] = sizes[i] - devices_per_node if sizes[i] > devices_per_node else sizes[i] // 2
    grown = True
    while grown:
        grown = False
        for i in sorted(range(k), key=lambda j: sizes[j] / ideal[j]):
            bigger = sizes[i] + devices_per_node if sizes[i] >= devices_per_node else sizes[i] * 2
            trial = sizes[:i] + [bigger] + sizes[i + 1:]
            if _pack(trial, num_devices, devices_per_node) is not None:
                sizes, grown = trial, True
                break
    starts = _pack(sizes, num_devices, devices_per_node)
    assert starts is not None
    return [DeviceMesh.span(s, n) for s, n in zip(starts, sizes)]
