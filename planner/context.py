"""Everything a planner step needs about one experiment: graph, costs, space, simulator.

`PlanContext` prices single layouts (with the same checks as the plan space), turns a
layout per call into a priced `Plan`, and builds the searchable space lazily.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

from cost_model.provider import CostProvider
from graph.dataflow import DataflowGraph
from graph.overlap import intra_candidates, stream_candidates
from graph.placement.layout import Layout
from graph.sampling import expected_runs
from graph.spec import Call, CallKind
from planner.errors import PlanError
from planner.plan import CallPlan, Plan
from planner.simulator import SimResult, Simulator
from planner.space import (
    GIB,
    CallSpace,
    Candidate,
    Pricer,
    SpaceOptions,
    build_space,
    make_candidate,
    tp_allowed,
)


class PlanContext:
    """One experiment's graph and cost provider, with caches shared by every planner mode."""

    def __init__(self, graph: DataflowGraph, cost: CostProvider, *,
                 space_options: SpaceOptions | None = None, num_iterations: int = 4,
                 off_policy_steps: int = 0, fusion: str = "off") -> None:
        self.graph = graph
        self.cost = cost
        self.space_options = space_options or SpaceOptions()
        self.sim = Simulator(graph, cost, num_iterations=num_iterations, off_policy_steps=off_policy_steps,
                             fusion=fusion)
        self.pricer = Pricer(cost, expected_runs(graph))

    @cached_property
    def spaces(self) -> Mapping[str, CallSpace]:
        """Feasible candidates per call (ValueError when a call fits nowhere)."""
        return build_space(self.graph, self.cost, self.space_options)

    # ------------------------------------------------------------------ single layouts

    def layout_problem(self, call: Call, layout: Layout) -> str:
        """Why `layout` cannot run `call` (empty when it can), with the fix."""
        model = self.graph.models[call.model]
        cluster = self.cost.cluster
        if layout.mesh.devices[-1] >= cluster.num_devices:
            return (f"mesh {layout.mesh} uses devices beyond the cluster's {cluster.num_devices}; "
                    f"use device ids below {cluster.num_devices}")
        if model.arch is None:
            if layout.strategy != (1, 1, 1):
                return "a rule-based reward has no weights; give it one device with dp=tp=pp=1"
            return ""
        arch = model.arch
        if not tp_allowed(model, layout.tp, cluster):
            return (f"tp={layout.tp} must divide num_heads={arch.num_heads}, divide or be a multiple "
                    f"of num_kv_heads={arch.num_kv_heads}, and be <= {cluster.devices_per_node} "
                    "devices per node")
        if layout.pp > arch.num_layers:
            return f"pp={layout.pp} exceeds the model's {arch.num_layers} layers; lower pp"
        if (layout.pp > 1 and call.kind is CallKind.GENERATE
                and not self.space_options.allow_pp_generate):
            return "generation with pp > 1 is disabled; use pp=1 or set allow_pp_generate"
        if layout.dp * layout.micro_batches > call.batch_size:
            return (f"dp={layout.dp} x micro_batches={layout.micro_batches} exceeds the batch of "
                    f"{call.batch_size} sequences; lower dp or micro_batches")
        return ""

    def candidate(self, call: Call, layout: Layout) -> Candidate:
        """Price one layout; ValueError naming the call when it is not allowed or does not fit."""
        problem = self.layout_problem(call, layout)
        if problem:
            raise PlanError(f"call {call.name!r}: layout {layout}: {problem}")
        est = self.pricer.price(call, self.graph.models[call.model], layout)
        memory = self.cost.device_memory_bytes
        if not est.feasible or est.peak_bytes > memory:
            why = est.reason or (f"peak {est.peak_bytes / GIB:.2f} GiB exceeds "
                                 f"{memory / GIB:.2f} GiB by {(est.peak_bytes - memory) / GIB:.2f} GiB")
            memory_bound = "exceed" in why or (est.feasible and est.peak_bytes > memory)
            fix = ("use more devices, more tp/pp or more micro-batches" if memory_bound
                   else "pick a tp that divides it")
            raise PlanError(f"call {call.name!r}: layout {layout} does not fit: {why}; {fix}")
        return make_candidate(layout, est)

    def try_candidate(self, call: Call, layout: Layout) -> Candidate | None:
        """`candidate`, or None instead of an error."""
        try:
            return self.candidate(call, layout)
        except ValueError:
            return None

    # ------------------------------------------------------------------ whole plans

    def candidates_of(self, layouts: Mapping[str, Layout]) -> list[Candidate]:
        """Priced candidates in graph order; ValueError naming a missing or bad call."""
        out = []
        for call in self.graph.calls:
            if call.name not in layouts:
                raise PlanError(f"no layout for call {call.name!r}; give one for every call")
            out.append(self.candidate(call, layouts[call.name]))
        return out

    def plan_from(self, cands: list[Candidate] | tuple[Candidate, ...], source: str,
                  sim: SimResult | None = None, streamed: tuple[tuple[str, str], ...] | None = None,
                  fused: tuple[tuple[str, str], ...] | None = None) -> Plan:
        """A priced Plan from one candidate per call (graph order); `streamed` edges and `fused`
        train pairs as `Simulator.simulate` takes them (default: what plan.fusion implies)."""
        if (sim is None or not sim.timeline or (streamed is not None and tuple(streamed) != sim.streamed)
                or (fused is not None and tuple(sorted(fused)) != sim.fused)):
            sim = self.sim.simulate(cands, detail=True, streamed=streamed, fused=fused)
        calls = tuple(
            CallPlan(name=call.name, model=call.model, layout=c.layout, time_s=c.estimate.time_s,
                     peak_bytes=c.estimate.peak_bytes, resident_bytes=c.estimate.resident_bytes)
            for call, c in zip(self.graph.calls, cands)
        )
        return Plan(cluster=self.cost.cluster, calls=calls, source=source,
                    device_memory_bytes=self.cost.device_memory_bytes,
                    iteration_time_s=sim.iteration_time_s, feasible=sim.feasible,
                    reasons=sim.reasons, reallocations=sim.reallocations,
                    transfers=sim.transfers, device_peak_bytes=sim.device_peak_bytes,
                    timeline=sim.timeline, streamed=sim.streamed, fused=sim.fused)

    def evaluate(self, layouts: Mapping[str, Layout], source: str,
                 streamed: tuple[tuple[str, str], ...] | None = None,
                 fused: tuple[tuple[str, str], ...] | None = None) -> Plan:
        """Price and simulate a layout per call."""
        return self.plan_from(self.candidates_of(layouts), source, streamed=streamed, fused=fused)

    def choose_streaming(self, cands: list[Candidate] | tuple[Candidate, ...]) -> tuple[tuple[str, str], ...]:
        """plan.fusion=auto: the streamed edges, decided per edge greedily (an edge is kept when
        streaming it lowers the simulated iteration time), in graph order."""
        if self.sim.off_policy_steps:
            return ()  # the next batch generates ahead: nothing of it streams within an iteration
        meshes = {c.name: cand.key[0] for c, cand in zip(self.graph.calls, cands)}
        chosen: list[tuple[str, str]] = []
        best = self.sim.simulate(cands, streamed=()).iteration_time_s
        for edge in stream_candidates(self.graph, meshes):
            t = self.sim.simulate(cands, streamed=(*chosen, edge)).iteration_time_s
            if t < best * (1 - 1e-9):
                chosen.append(edge)
                best = t
        return tuple(chosen)

    def choose_fused(self, cands: list[Candidate] | tuple[Candidate, ...],
                     streamed: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
        """plan.fusion=auto: the fused train pairs, decided per pair greedily (a pair is kept when
        fusing it lowers the simulated iteration time), in graph order."""
        if self.sim.off_policy_steps:
            return ()  # the off-policy step order does not fuse train calls (graph.overlap.check_fusion)
        meshes = {c.name: cand.key[0] for c, cand in zip(self.graph.calls, cands)}
        shapes = {c.name: cand.key[1:] for c, cand in zip(self.graph.calls, cands)}
        chosen: list[tuple[str, str]] = []
        best = self.sim.simulate(cands, streamed=streamed, fused=()).iteration_time_s
        for pair in intra_candidates(self.graph, meshes, shapes):
            t = self.sim.simulate(cands, streamed=streamed, fused=(*chosen, pair)).iteration_time_s
            if t < best * (1 - 1e-9):
                chosen.append(pair)
                best = t
        return tuple(chosen)

    def time_of(self, cands: list[Candidate]) -> float:
        """Simulated iteration time, inf when the plan does not fit in memory."""
        res = self.sim.simulate(cands)
        return res.iteration_time_s if res.feasible else float("inf")
