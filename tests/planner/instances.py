"""Random small planning instances (<= 8 devices) whose plan space is small enough to enumerate."""

from __future__ import annotations

import math
import random
from functools import cache

from graph.dataflow import DataflowGraph
from graph.placement.layout import Cluster
from planner.context import PlanContext
from planner.search import SearchResult, exact_search
from planner.space import SpaceOptions
from tests.planner.graphs import fan_graph, frozen_replica_graph, gen_train_graph, rule_graph
from tests.planner.synthetic import GIB, SyntheticCost, arch

CLUSTERS = ((1, 2), (1, 4), (2, 2), (1, 8), (2, 4))


@cache
def random_instance(seed: int, *, max_plans: int = 6000) -> tuple[PlanContext, SearchResult]:
    """A graph, cluster and synthetic costs drawn from `seed` (at most `max_plans` plans), with
    its exact optimum."""
    rng = random.Random(seed)
    for _ in range(50):
        nodes, dpn = rng.choice(CLUSTERS)
        cluster = Cluster(num_nodes=nodes, devices_per_node=dpn)
        size = rng.choice([(8, 1024, 8, 8), (16, 2048, 16, 4), (24, 3072, 24, 8)])
        pick = rng.randrange(4)
        graph: DataflowGraph = (gen_train_graph(arch(*size)) if pick == 0 else
                                (fan_graph, frozen_replica_graph, rule_graph)[pick - 1]())
        cost = SyntheticCost(cluster, device_memory_bytes=rng.choice([2, 8, 16, 80]) * GIB,
                             inter_bw=rng.choice([5e9, 25e9]), tp_overhead=rng.choice([0.03, 0.15]))
        ctx = PlanContext(graph, cost, space_options=SpaceOptions(micro_batch_choices=rng.choice([1, 2])))
        try:
            sizes = [len(s.candidates) for s in ctx.spaces.values()]
        except ValueError:
            continue
        if math.prod(sizes) > max_plans:
            continue
        try:
            return ctx, exact_search(ctx.sim, ctx.spaces)
        except ValueError:  # no feasible plan at all: draw again
            continue
    raise AssertionError(f"seed {seed}: no small instance drawn")
