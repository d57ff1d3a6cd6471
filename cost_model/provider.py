"""What the planner asks of a cost model: the contract, in plain data.

The planner depends only on `CostProvider`; `cost_model.estimator` implements it
analytically (calibrated by measured profiles), and tests can substitute synthetic
costs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from graph.placement.layout import Cluster, Layout
from graph.spec import Call, ModelSpec


@dataclass(frozen=True, kw_only=True)
class CallEstimate:
    """Time and per-device memory of one call under one layout."""

    time_s: float
    """Estimated wall time of the call."""
    peak_bytes: float
    """Peak memory per device while the call runs, the replica's own weights included."""
    resident_bytes: float
    """Memory per device that stays after the call: weights, plus grads and optimizer states of a train call's replica."""
    breakdown: Mapping[str, float] = field(default_factory=dict)
    """Named terms of the estimate (seconds for time terms, bytes for memory terms)."""
    feasible: bool = True
    """False when the layout cannot run the call (memory, divisibility, ...)."""
    reason: str = ""
    """Why the layout is infeasible, naming the term that overflows."""


@dataclass(frozen=True, kw_only=True)
class MoveEstimate:
    """Cost of moving parameters or data between two layouts."""

    time_s: float
    """Estimated wall time."""
    bytes_total: float
    """Bytes sent over any link."""
    bytes_inter_node: float = 0.0
    """Bytes crossing node boundaries."""
    busiest_rank_bytes: float = 0.0
    """Bytes sent or received by the busiest rank."""


class CostProvider(Protocol):
    """The cost queries the planner and simulator make."""

    cluster: Cluster
    device_memory_bytes: float

    def call_estimate(self, call: Call, model: ModelSpec, layout: Layout) -> CallEstimate:
        """Time and memory of `call` on `model` under `layout`."""
        ...

    def realloc_estimate(self, model: ModelSpec, src: Layout, dst: Layout) -> MoveEstimate:
        """Cost of moving `model`'s parameters from layout `src` to layout `dst`."""
        ...

    def data_estimate(self, producer: Call, consumer: Call, key: str,
                      src: Layout, dst: Layout) -> MoveEstimate:
        """Cost of moving data key `key` from `producer`'s layout to `consumer`'s."""
        ...
