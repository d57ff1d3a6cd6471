"""Cost providers and graphs for planner tests.

The closed-form `SyntheticCost` and the graphs it plans live in `realloc.bench.synthetic`
(the planner benchmarks share them) and are re-exported here; `FixedCost` gives every call
a constant time so simulator timelines can be worked by hand.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cost_model.provider import CallEstimate, MoveEstimate
from graph.placement.layout import Cluster, Layout
from graph.spec import Call, ModelSpec
from realloc.bench.synthetic import (
    GIB,
    SyntheticCost,
    arch,
    fitted_graph,
    ppo_graph,
    same_placement,
)

__all__ = ["GIB", "FixedCost", "SyntheticCost", "arch", "fitted_graph", "ppo_graph"]


@dataclass
class FixedCost:
    """Constant times for hand-worked timelines: every layout of a call takes `times[call]`."""

    cluster: Cluster
    times: Mapping[str, float]
    realloc_s: float = 1.0
    data_s: float = 0.5
    resident: Mapping[str, float] = field(default_factory=dict)
    peak: Mapping[str, float] = field(default_factory=dict)
    device_memory_bytes: float = 100.0

    def call_estimate(self, call: Call, model: ModelSpec, layout: Layout) -> CallEstimate:
        return CallEstimate(time_s=self.times[call.name],
                            peak_bytes=self.peak.get(call.name, 0.0),
                            resident_bytes=self.resident.get(call.name, 0.0))

    def realloc_estimate(self, model: ModelSpec, src: Layout, dst: Layout) -> MoveEstimate:
        same = same_placement(src, dst)
        return MoveEstimate(time_s=0.0 if same else self.realloc_s, bytes_total=0.0 if same else 1.0)

    def data_estimate(self, producer: Call, consumer: Call, key: str,
                      src: Layout, dst: Layout) -> MoveEstimate:
        same = same_placement(src, dst)
        return MoveEstimate(time_s=0.0 if same else self.data_s, bytes_total=0.0 if same else 1.0)
