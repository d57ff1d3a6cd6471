"""TransferPlan correctness by numpy reconstruction, over every small TP x PP x DP pair of layouts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cost_model.hardware import preset
from cost_model.transfer_cost import price_flows, price_transfer
from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.placement.params import ParamInfo, param_manifest
from graph.placement.transfer import TransferPlan, op_local_slices, plan_transfer, transfer_flows
from graph.spec import ModelArch

ARCH = ModelArch(family="llama", num_layers=4, hidden_size=64, ffn_hidden_size=96, num_heads=8,
                 num_kv_heads=4, vocab_size=128)
TIED = ModelArch(family="qwen2", num_layers=4, hidden_size=64, ffn_hidden_size=96, num_heads=8,
                 num_kv_heads=4, vocab_size=128, tied_embeddings=True, qkv_bias=True)
STRATEGIES = [(dp, tp, pp) for tp in (1, 2, 4) for pp in (1, 2) for dp in (1, 2)]
CLUSTER = Cluster(num_nodes=8, devices_per_node=4)


def _global_tensors(manifest: tuple[ParamInfo, ...]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {p.data_name: rng.standard_normal(p.shape) for p in manifest if p.tied_to is None}


def _shard(full: np.ndarray, p: ParamInfo, tp: int, tp_rank: int) -> np.ndarray:
    parts = [full[tuple(slice(a, b) for a, b in s)] for s in p.shard_slices(tp, tp_rank)]
    return parts[0] if p.tp_dim is None else np.concatenate(parts, axis=p.tp_dim)


def _holdings(arch: ModelArch, layout: Layout, tensors: dict[str, np.ndarray], *,
              value_head: bool = False) -> dict[tuple[int, str], np.ndarray]:
    """(device, param name) -> the local shard the device holds under `layout`."""
    out = {}
    for p in param_manifest(arch, value_head=value_head, pp=layout.pp):
        for stage in p.stages(layout.pp, arch.num_layers):
            for dp_rank in range(layout.dp):
                for tp_rank in range(layout.tp):
                    dev = layout.device(dp_rank=dp_rank, tp_rank=tp_rank, pp_rank=stage)
                    out[(dev, p.name)] = _shard(tensors[p.data_name], p, layout.tp, tp_rank)
    return out


def _meshes(n_src: int, n_dst: int, mode: str) -> tuple[DeviceMesh, DeviceMesh]:
    start = {"same": 0, "overlapping": n_src // 2 if n_src > 1 else 0, "disjoint": n_src}[mode]
    return DeviceMesh.span(0, n_src), DeviceMesh.span(start, n_dst)


def _check(arch: ModelArch, src: Layout, dst: Layout, *, value_head: bool = False) -> TransferPlan:
    plan = plan_transfer(arch, src, dst, value_head=value_head, cluster=CLUSTER, dtype_bytes=8)
    tensors = _global_tensors(param_manifest(arch, value_head=value_head, pp=1))
    before = _holdings(arch, src, tensors, value_head=value_head)
    expected = _holdings(arch, dst, tensors, value_head=value_head)
    src_info = {p.name: p for p in param_manifest(arch, value_head=value_head, pp=src.pp)}
    dst_info = {p.name: p for p in param_manifest(arch, value_head=value_head, pp=dst.pp)}
    built = {key: np.full(v.shape, np.nan) for key, v in expected.items()}
    written = {key: np.zeros(v.shape, dtype=int) for key, v in expected.items()}
    for op in (*plan.local_copies, *plan.ops):
        src_local, dst_local = op_local_slices(src_info[op.src_param], dst_info[op.param], op, src, dst)
        data = before[(op.src, op.src_param)][tuple(slice(a, b) for a, b in src_local)]
        target = tuple(slice(a, b) for a, b in dst_local)
        built[(op.dst, op.param)][target] = data
        written[(op.dst, op.param)][target] += 1
        assert op.nbytes == data.size * 8
        if op.src != op.dst:
            # the destination must not already hold any of these bytes in the source layout
            p = dst_info[op.param]
            held = [run for (dev, name), _ in before.items() if dev == op.dst
                    for q in [src_info[name]] if q.data_name == p.data_name
                    for run in q.shard_runs(src.tp, src.coords(dev)[1])]
            lo, hi = op.slice[0 if p.tp_dim is None else p.tp_dim]
            assert all(hi <= a or b <= lo for a, b in held), (op, held)
    for key, want in expected.items():
        assert np.array_equal(written[key], np.ones_like(written[key])), f"{key}: bytes missing or received twice"
        np.testing.assert_array_equal(built[key], want, err_msg=str(key))
    return plan


@pytest.mark.parametrize("mode", ["same", "overlapping", "disjoint"])
def test_every_layout_pair_reconstructs_exactly(mode: str) -> None:
    for (sdp, stp, spp), (ddp, dtp, dpp) in itertools.product(STRATEGIES, STRATEGIES):
        smesh, dmesh = _meshes(sdp * stp * spp, ddp * dtp * dpp, mode)
        src = Layout(mesh=smesh, dp=sdp, tp=stp, pp=spp)
        dst = Layout(mesh=dmesh, dp=ddp, tp=dtp, pp=dpp)
        plan = _check(ARCH, src, dst)
        if src == dst:
            assert plan.ops == ()


@pytest.mark.parametrize("mode", ["same", "disjoint"])
def test_tied_embeddings_and_value_head(mode: str) -> None:
    for (sdp, stp, spp), (ddp, dtp, dpp) in [((1, 2, 1), (1, 1, 2)), ((2, 1, 2), (1, 4, 1)),
                                             ((1, 1, 1), (2, 2, 2)), ((1, 2, 2), (2, 1, 2))]:
        smesh, dmesh = _meshes(sdp * stp * spp, ddp * dtp * dpp, mode)
        src = Layout(mesh=smesh, dp=sdp, tp=stp, pp=spp)
        dst = Layout(mesh=dmesh, dp=ddp, tp=dtp, pp=dpp)
        _check(TIED, src, dst)
        _check(ARCH, src, dst, value_head=True)


def test_bytes_moved_are_what_each_destination_lacks() -> None:
    # TP2 x DP2 on [0-3] -> TP1 x DP4 on the same devices: every device already holds
    # half of every TP-split parameter, so exactly the other half moves; replicated
    # parameters (norms) do not move at all. Megatron 0.16.1 moved 1.5x this.
    src = Layout(mesh=DeviceMesh.span(0, 4), dp=2, tp=2, pp=1)
    dst = Layout(mesh=DeviceMesh.span(0, 4), dp=4, tp=1, pp=1)
    plan = plan_transfer(ARCH, src, dst, dtype_bytes=2)
    split = sum(p.numel for p in param_manifest(ARCH) if p.tp_dim is not None)
    assert plan.bytes_total == 4 * split // 2 * 2
    # every source sends the same amount: balanced over the DP replicas
    sent = [sum(op.nbytes for op in plan.sends_from(d)) for d in range(4)]
    assert max(sent) == min(sent)


def test_sources_prefer_the_same_node() -> None:
    # DP2 replicas on nodes 0 and 1 (2 devices per node); destination TP1 on device 4 (node 2)
    # and device 1 (node 0): device 1 must fetch from its own node's replica.
    cluster = Cluster(num_nodes=3, devices_per_node=2)
    src = Layout(mesh=DeviceMesh(devices=(0, 1, 2, 3)), dp=2, tp=2, pp=1)
    dst = Layout(mesh=DeviceMesh(devices=(1,)), dp=1, tp=1, pp=1)
    plan = plan_transfer(ARCH, src, dst, cluster=cluster)
    assert plan.ops and all(cluster.node_of(op.src) == 0 for op in plan.ops)


def test_plan_round_trips_as_plain_data_and_prices_by_link() -> None:
    src = Layout(mesh=DeviceMesh.span(0, 4), dp=1, tp=4, pp=1)
    dst = Layout(mesh=DeviceMesh.span(4, 4), dp=2, tp=1, pp=2)
    plan = plan_transfer(ARCH, src, dst, cluster=CLUSTER)
    assert TransferPlan.from_dict(plan.to_dict()) == plan
    hw = preset("a100-80g")
    move = price_transfer(plan, hw, CLUSTER)
    # node 0 holds the source, node 1 the destination: everything crosses nodes
    assert move.bytes_total == plan.bytes_total == move.bytes_inter_node
    recv = {d: sum(op.nbytes for op in plan.ops if op.dst == d) for d in range(4, 8)}
    sent = {s: sum(op.nbytes for op in plan.ops if op.src == s) for s in range(4)}
    assert move.busiest_rank_bytes == max(*recv.values(), *sent.values())
    peers = max(len({op.src for op in plan.ops if op.dst == d}) for d in recv)
    assert move.time_s >= move.busiest_rank_bytes / hw.link_bandwidth(True)
    assert move.time_s <= move.busiest_rank_bytes / hw.link_bandwidth(True) + 8 * peers * hw.inter_node_latency


def test_fast_flows_price_like_the_plan() -> None:
    # transfer_flows (what the estimator prices) must move the same bytes per destination
    # and over the same kinds of link as the plan the runtime executes
    hw = preset("h100-80g")
    cluster = Cluster(num_nodes=4, devices_per_node=2)
    for (sdp, stp, spp), (ddp, dtp, dpp) in [((2, 2, 1), (1, 1, 2)), ((1, 2, 2), (2, 2, 1)),
                                             ((2, 1, 2), (1, 4, 1)), ((1, 4, 1), (2, 1, 2))]:
        for mode in ("same", "overlapping", "disjoint"):
            smesh, dmesh = _meshes(sdp * stp * spp, ddp * dtp * dpp, mode)
            src = Layout(mesh=smesh, dp=sdp, tp=stp, pp=spp)
            dst = Layout(mesh=dmesh, dp=ddp, tp=dtp, pp=dpp)
            plan = plan_transfer(ARCH, src, dst, cluster=cluster)
            flows = transfer_flows(ARCH, src, dst, cluster=cluster)
            got = {d: sum(b for _, dd, b in flows if dd == d) for d in range(8)}
            want = {d: sum(op.nbytes for op in plan.ops if op.dst == d) for d in range(8)}
            assert got == pytest.approx(want)
            fast, exact = price_flows(flows, hw, cluster), price_transfer(plan, hw, cluster)
            assert fast.bytes_inter_node == pytest.approx(exact.bytes_inter_node)
            # spreading each slice over its holders never loads a rank more than the greedy choice
            assert fast.busiest_rank_bytes <= exact.busiest_rank_bytes * (1 + 1e-9)


def _flow_map(flows: list[tuple[int, int, float]]) -> dict[tuple[int, int], float]:
    out: dict[tuple[int, int], float] = {}
    for s, d, b in flows:
        out[(s, d)] = out.get((s, d), 0.0) + b
    return out


GPT2 = ModelArch(family="gpt2", num_layers=4, hidden_size=64, ffn_hidden_size=128, num_heads=4,
                 num_kv_heads=4, vocab_size=128, max_position_embeddings=64)


@pytest.mark.parametrize("arch,value_head,lora", [
    (ARCH, False, None), (TIED, False, None), (ARCH, True, None), (GPT2, False, None),
    (ARCH, True, "lora"), (TIED, False, "lora-all"),
])
def test_closed_form_flows_equal_the_slice_by_slice_reference(arch, value_head, lora) -> None:
    """The closed form of transfer_flows gives the flows the segment-by-segment derivation
    gives, pair by pair, over layouts of 1-8 devices placed same/overlapping/disjoint/offset
    on nodes of 2 and 4 devices."""
    from graph.spec import LoraSpec
    from tests.graph.placement.reference_flows import reference_flows

    spec = None if lora is None else LoraSpec(rank=4, alpha=8.0)
    strategies = [(dp, tp, pp) for tp in (1, 2, 4) for pp in (1, 2, 4) for dp in (1, 2)
                  if dp * tp * pp <= 8 and arch.num_heads % tp == 0]
    pairs = list(itertools.product(strategies, strategies))
    for k, ((sdp, stp, spp), (ddp, dtp, dpp)) in enumerate(pairs):
        cluster = Cluster(num_nodes=8, devices_per_node=2 if k % 2 else 4)
        for start in (0, 1, 3, sdp * stp * spp):
            src = Layout(mesh=DeviceMesh.span(0, sdp * stp * spp), dp=sdp, tp=stp, pp=spp)
            dst = Layout(mesh=DeviceMesh.span(start, ddp * dtp * dpp), dp=ddp, tp=dtp, pp=dpp)
            kwargs = dict(value_head=value_head, cluster=cluster, dtype_bytes=2, lora=spec,
                          trainable_only=lora == "lora")
            got = _flow_map(transfer_flows(arch, src, dst, **kwargs))
            want = _flow_map(reference_flows(arch, src, dst, **kwargs))
            assert got.keys() == want.keys(), (src, dst)
            for key, b in want.items():
                assert got[key] == pytest.approx(b, rel=1e-9), (src, dst, key)


@pytest.mark.parametrize("exact", [True, False])
def test_transfer_loads_are_the_loads_of_the_flows(monkeypatch, exact) -> None:
    """Bytes per device and link kind equal those of transfer_flows; peers exactly below
    EXACT_FLOWS flows, within a factor of 2 beyond (per holder group)."""
    import graph.placement.transfer as transfer
    from graph.placement.transfer import loads_of_flows, transfer_loads

    if not exact:
        monkeypatch.setattr(transfer, "EXACT_FLOWS", -1)
    strategies = [(dp, tp, pp) for tp in (1, 2, 4) for pp in (1, 2) for dp in (1, 2)]
    for k, ((sdp, stp, spp), (ddp, dtp, dpp)) in enumerate(itertools.product(strategies, strategies)):
        cluster = Cluster(num_nodes=8, devices_per_node=2 if k % 2 else 4)
        for start in (0, 1, sdp * stp * spp):
            src = Layout(mesh=DeviceMesh.span(0, sdp * stp * spp), dp=sdp, tp=stp, pp=spp)
            dst = Layout(mesh=DeviceMesh.span(start, ddp * dtp * dpp), dp=ddp, tp=dtp, pp=dpp)
            got = transfer_loads(ARCH, src, dst, cluster=cluster)
            want = loads_of_flows(transfer_flows(ARCH, src, dst, cluster=cluster), cluster)
            for table in ("sent", "recv"):
                a, b = getattr(got, table), getattr(want, table)
                assert {x for x, v in a.items() if v > 0} == {x for x, v in b.items() if v > 0}
                for x, v in b.items():
                    assert a.get(x, 0.0) == pytest.approx(v, rel=1e-9)
            assert got.bytes_total == pytest.approx(want.bytes_total)
            assert got.bytes_inter_node == pytest.approx(want.bytes_inter_node)
            if exact:
                assert got.peers == want.peers
            else:
                for dev, (near, far) in want.peers.items():
                    assert sum(got.peers[dev]) >= 1
                    assert (near + far) / 2 <= sum(got.peers[dev]) <= 2 * (near + far)
