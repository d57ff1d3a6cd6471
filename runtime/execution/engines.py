"""The engines one rank holds: every (model, layout) the plan places, built in one global order.

A model's *home* is its train call's layout (or its first call's); its other layouts are
replicas, refreshed from the home by reallocation. A trained model's replica can be freed
between uses (`free`) and given storage again just before its next refresh (`materialize`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from graph.dataflow import DataflowGraph
from graph.placement.layout import Layout
from graph.spec import CallKind
from runtime.engine.model_engine import ModelEngine, build_engine
from runtime.execution.program import home_layouts, placement


def model_seed(graph: DataflowGraph, role: str, seed: int) -> int:
    """Initial-weight seed of a model; `init_from` shares the source's seed (and weights)."""
    roles = list(graph.models)
    source = graph.models[role].init_from or role
    return seed * 1009 + roles.index(source)


def trained_models(graph: DataflowGraph) -> list[str]:
    """Roles of the models some call trains, in graph order."""
    return [role for role in graph.models
            if any(c.kind is CallKind.TRAIN for c in graph.calls_of(role))]


def local_shards(engine: ModelEngine | None) -> dict[str, torch.Tensor] | None:
    """This rank's shards of `engine` by global name (live tensors); None without an engine."""
    return None if engine is None else {n: s.tensor for n, s in engine.named_local_shards().items()}


class EngineSet:
    """Every (model, layout) engine of the plan, built world-collectively in one order;
    this rank holds those whose mesh contains it (the others are None)."""

    def __init__(self, graph: DataflowGraph, layouts: Mapping[str, Layout], rank: int, seed: int) -> None:
        self.homes: dict[str, Layout] = home_layouts(graph, layouts)
        """Role -> the placement its weights live in."""
        self.by_key: dict[tuple[str, Layout], ModelEngine | None] = {}
        """(role, placement) -> this rank's engine, or None when the rank is outside it."""
        for role, model in graph.models.items():
            if model.is_rule or role not in self.homes:
                continue
            wanted = [self.homes[role]] + [placement(layouts[c.name]) for c in graph.calls_of(role)]
            for layout in dict.fromkeys(wanted):  # unique, home first
                self.by_key[(role, layout)] = build_engine(model, layout, rank,
                                                           seed=model_seed(graph, role, seed))
        self.freed: dict[tuple[str, Layout], list[torch.Size]] = {}
        """Replicas whose storage is dropped, with their parameters' shapes."""

    def get(self, role: str, layout: Layout) -> ModelEngine | None:
        """This rank's engine of `role` in `layout` (micro-batches ignored), or None."""
        return self.by_key.get((role, placement(layout)))

    def home(self, role: str) -> ModelEngine | None:
        """This rank's engine of `role` in its home layout, or None."""
        return self.get(role, self.homes[role])

    def held(self) -> int:
        """How many engines this rank holds."""
        return sum(e is not None for e in self.by_key.values())

    def free(self, role: str, layout: Layout) -> int:
        """Drop a replica's parameter storage until its next refresh; returns the bytes freed."""
        engine, key = self.get(role, layout), (role, placement(layout))
        if engine is None or key in self.freed:
            return 0
        params = engine.refreshed_parameters()  # a LoRA replica keeps its frozen base
        self.freed[key] = [p.shape for p in params]
        freed = 0
        for param in params:
            freed += param.numel() * param.element_size()
            param.data = torch.empty(0, dtype=param.dtype, device=param.device)
        return freed

    def materialize(self, role: str, layout: Layout) -> None:
        """Give a freed replica storage again (its contents are about to be overwritten)."""
        shapes = self.freed.pop((role, placement(layout)), None)
        engine = self.get(role, layout)
        if shapes is None or engine is None:
            return
        for param, shape in zip(engine.refreshed_parameters(), shapes):
            param.data = torch.empty(shape, dtype=param.dtype, device=param.device)
