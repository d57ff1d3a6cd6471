"""Work units of the simulator's work (reference microseconds, see planner.search): what
pricing a reallocation or a data transfer and what simulating a plan cost the search."""

from __future__ import annotations

import math

from graph.placement.layout import Layout

# Work units (reference microseconds, see planner.search) of the simulator's work, fitted by
# experiments/bench/search_units.py on one core of the development machine with the analytic
# cost model: pricing a reallocation the caches lack grows with the pieces of parameters
# its destination devices receive (see graph.placement.transfer) and with the devices
# of both layouts; a data transfer with the devices of both layouts; a simulation with its task
# instances' resources and dependencies, more under processor sharing (devices sharing host
# cores). Cheaper cost providers are over-charged (safe).
REALLOC_BASE_UNITS = 40.0
REALLOC_PIECE_UNITS = 1.5
REALLOC_DEVICE_UNITS = 1.0
DATA_BASE_UNITS = 9.5
DATA_DEVICE_UNITS = 2.9
SIM_BASE_UNITS = 14.0
SIM_INCIDENCE_UNITS = 0.24
SHARED_INCIDENCE_UNITS = 1.1


def realloc_pieces(src: Layout, dst: Layout) -> float:
    """About how many pieces `graph.placement.transfer` prices moving a model from `src` to `dst`."""
    pairs = src.pp + dst.pp - math.gcd(src.pp, dst.pp)  # (source stage, destination stage) pairs
    per_stage = dst.dp * dst.tp
    return per_stage * (2 * pairs + 4 * dst.pp) * (1 + src.tp / dst.tp) / 2


def realloc_units(src: Layout, dst: Layout) -> float:
    """Work units of pricing one reallocation from `src` to `dst`."""
    return (REALLOC_BASE_UNITS + REALLOC_PIECE_UNITS * realloc_pieces(src, dst)
            + REALLOC_DEVICE_UNITS * (src.mesh.size + dst.mesh.size))


def data_receivers(src: Layout, dst: Layout) -> int:
    """Devices of `dst` outside `src` (those a data transfer sends to)."""
    a, b = src.mesh.devices, dst.mesh.devices
    if a[-1] - a[0] + 1 == len(a) and b[-1] - b[0] + 1 == len(b):  # two runs
        return len(b) - max(0, min(a[-1], b[-1]) - max(a[0], b[0]) + 1)
    return len(set(b) - set(a))


def data_units(src: Layout, dst: Layout) -> float:
    """Work units of pricing one data transfer from `src` to `dst`."""
    return DATA_BASE_UNITS + DATA_DEVICE_UNITS * data_receivers(src, dst)
