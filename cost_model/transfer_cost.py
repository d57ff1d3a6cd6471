"""Pricing parameter reallocations: the time a TransferPlan (or its flows) takes on a cluster.

The plan itself is plain data derived in `graph.placement.transfer`; this module only
prices it, link by link.
"""

from __future__ import annotations

from collections.abc import Iterable

from cost_model.hardware import HardwareSpec
from cost_model.provider import MoveEstimate
from graph.placement.layout import Cluster
from graph.placement.transfer import TransferLoads, TransferPlan, loads_of_flows


def price_loads(loads: TransferLoads, hardware: HardwareSpec) -> MoveEstimate:
    """Price per-device loads: every device sends and receives at once.

    Each device has one intra-node and one inter-node link, per direction, used
    concurrently; a device's time is its slowest link-direction, plus one message latency
    per peer. The move takes as long as the slowest device.
    """
    if loads.bytes_total == 0:
        return MoveEstimate(time_s=0.0, bytes_total=0.0)
    near_bw, far_bw = hardware.link_bandwidth(False), hardware.link_bandwidth(True)
    near_lat, far_lat = hardware.link_latency(False), hardware.link_latency(True)
    sent, recv = loads.sent, loads.recv
    time_s = busiest = 0.0
    for dev, (near_peers, far_peers) in loads.peers.items():
        s_near, s_far = sent.get((dev, False), 0.0), sent.get((dev, True), 0.0)
        r_near, r_far = recv.get((dev, False), 0.0), recv.get((dev, True), 0.0)
        link = max(s_near / near_bw, r_near / near_bw, s_far / far_bw, r_far / far_bw)
        time_s = max(time_s, link + near_peers * near_lat + far_peers * far_lat)
        busiest = max(busiest, s_near + s_far, r_near + r_far)
    return MoveEstimate(time_s=time_s, bytes_total=loads.bytes_total, bytes_inter_node=loads.bytes_inter_node,
                        busiest_rank_bytes=busiest)


def price_flows(flows: Iterable[tuple[int, int, float]], hardware: HardwareSpec,
                cluster: Cluster) -> MoveEstimate:
    """Price point-to-point flows (src, dst, bytes) (see `price_loads`)."""
    return price_loads(loads_of_flows(flows, cluster), hardware)


def price_transfer(plan: TransferPlan, hardware: HardwareSpec, cluster: Cluster) -> MoveEstimate:
    """Price a TransferPlan by link (see `price_loads`)."""
    return price_flows(plan.flows(), hardware, cluster)
