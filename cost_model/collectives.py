"""Alpha-beta times of ring collectives and point-to-point sends.

For a group of n devices and a buffer of B bytes per device (NCCL's conventions):
- all-reduce moves 2(n-1)/n * B per device in 2(n-1) steps;
- all-gather and reduce-scatter move (n-1)/n * B (B = the full, gathered size) in n-1 steps;
- a point-to-point send moves B in one step.
A step costs the link latency; bytes flow at the achieved bandwidth of the slowest
link the group uses (inter-node when the group spans nodes). A measured profile may say an
all-gather or reduce-scatter moves its bytes slower than a ring would
(`HardwareSpec.collective_slowdown`: gloo's are not rings), and that any op moves a buffer
beyond the last-level cache slower still (`collective_slowdown_beyond_cache`: it streams
from memory).
"""

from __future__ import annotations

from collections.abc import Sequence

from cost_model.hardware import HardwareSpec
from graph.placement.layout import Cluster

OPS = ("all_reduce", "all_gather", "reduce_scatter", "p2p")


def wire_factor(op: str, n: int) -> tuple[float, int]:
    """(bytes on the wire per byte of buffer, number of latency steps) of `op` over n devices."""
    if op not in OPS:
        raise ValueError(f"unknown collective {op!r}; known: {', '.join(OPS)}")
    if op == "p2p":
        return 1.0, 1
    if n <= 1:
        return 0.0, 0
    if op == "all_reduce":
        return 2.0 * (n - 1) / n, 2 * (n - 1)
    return (n - 1) / n, n - 1


def spans_nodes(devices: Sequence[int], cluster: Cluster) -> bool:
    """Whether the devices sit on more than one node."""
    return len({cluster.node_of(d) for d in devices}) > 1


def collective_time(op: str, nbytes: float, devices: Sequence[int], hardware: HardwareSpec,
                    cluster: Cluster) -> float:
    """Seconds for `op` on a buffer of `nbytes` over `devices` (for p2p: the two endpoints)."""
    factor, steps = wire_factor(op, len(devices))
    if steps == 0 or nbytes <= 0:
        return 0.0
    far = spans_nodes(devices, cluster)
    slow = hardware.collective_slowdown.get(op, 1.0)
    if 0 < hardware.cache_bytes < nbytes:  # the buffer streams from memory
        slow = hardware.collective_slowdown_beyond_cache.get(op, slow)
    return steps * hardware.link_latency(far) + slow * factor * nbytes / hardware.link_bandwidth(far)
