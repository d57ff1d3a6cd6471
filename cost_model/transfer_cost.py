"""Pricing parameter reallocations: the time a TransferPlan (or its flows) takes on a cluster.

The plan itself is plain data derived in `graph.placement.transfer`; this module only
prices it, link by link.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from cost_model.hardware import HardwareSpec
from cost_model.provider import MoveEstimate
from graph.placement.layout import Cluster
from graph.placement.transfer import TransferPlan


def price_flows(flows: Iterable[tuple[int, int, float]], hardware: HardwareSpec,
                cluster: Cluster) -> MoveEstimate:
    """Price point-to-point flows (src, dst, bytes): every device sends and receives at once.

    Each device has one intra-node and one inter-node link, per direction, used
    concurrently; a device's time is its slowest link-direction, plus one message latency
    per distinct peer. The move takes as long as the slowest device.
    """
    sent: dict[tuple[int, bool], float] = defaultdict(float)
    recv: dict[tuple[int, bool], float] = defaultdict(float)
    peers: dict[int, set[int]] = defaultdict(set)
    total = inter = 0.0
    for s, d, nbytes in flows:
        if s == d or nbytes <= 0:
            continue
        far = cluster.node_of(s) != cluster.node_of(d)
        sent[(s, far)] += nbytes
        recv[(d, far)] += nbytes
        peers[s].add(d)
        peers[d].add(s)
        total += nbytes
        inter += nbytes if far else 0.0
    if total == 0:
        return MoveEstimate(time_s=0.0, bytes_total=0.0)
    time_s = 0.0
    busiest = 0.0
    for dev, others in peers.items():
        link_times = [table[(dev, far)] / hardware.link_bandwidth(far)
                      for table in (sent, recv) for far in (False, True)]
        far_peers = sum(cluster.node_of(o) != cluster.node_of(dev) for o in others)
        lat = (len(others) - far_peers) * hardware.link_latency(False) + far_peers * hardware.link_latency(True)
        time_s = max(time_s, max(link_times) + lat)
        busiest = max(busiest, sent[(dev, False)] + sent[(dev, True)], recv[(dev, False)] + recv[(dev, True)])
    return MoveEstimate(time_s=time_s, bytes_total=total, bytes_inter_node=inter, busiest_rank_bytes=busiest)


def price_transfer(plan: TransferPlan, hardware: HardwareSpec, cluster: Cluster) -> MoveEstimate:
    """Price a TransferPlan by link (see `price_flows`)."""
    return price_flows(plan.flows(), hardware, cluster)
