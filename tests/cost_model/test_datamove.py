"""Data-key transfer between two calls' layouts."""

from __future__ import annotations

import pytest

from cost_model.datamove import data_flows, dataset_key_bytes, key_bytes, side_sequences
from cost_model.estimator import AnalyticCostModel
from cost_model.hardware import preset
from graph.catalog import GenerateArgs, PPOActorArgs
from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.spec import Call, CallKind

GEN = Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate",
           args=GenerateArgs(max_new_tokens=64, num_samples=4), batch_size=8, prompt_len=100,
           response_len=28, max_new_tokens=64, inputs=("prompts",), outputs=("seq", "logp"))
REW = Call(name="rew", model="reward", kind=CallKind.INFERENCE, interface="reward_model", batch_size=32,
           prompt_len=100, response_len=28, inputs=("seq",), outputs=("score",))
TRAIN = Call(name="train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor", batch_size=32,
             prompt_len=100, response_len=28)


def test_key_bytes_by_hand() -> None:
    # 8 prompts x 4 samples = 32 sequences of 100 + 28 tokens; sizes follow the output's role
    assert key_bytes(GEN, TRAIN, "seq") == 8 * 32 * 128 + 16 * 32  # int64 ids and two lengths
    assert key_bytes(GEN, TRAIN, "logp") == 4 * 32 * 128  # float32 per token
    assert key_bytes(REW, TRAIN, "score") == 4 * 32  # one scalar per sequence


def test_flows_follow_the_executor() -> None:
    src = Layout(mesh=DeviceMesh.span(0, 2), dp=2, tp=1, pp=1)
    dst = Layout(mesh=DeviceMesh.span(1, 4), dp=4, tp=1, pp=1)
    total = key_bytes(GEN, TRAIN, "logp")
    # device 1 already holds the result; 2, 3, 4 each get it whole, round-robin from 0, 1, 0
    assert data_flows(GEN, TRAIN, "logp", src, dst) == [(0, 2, total), (1, 3, total), (0, 4, total)]
    assert data_flows(GEN, TRAIN, "logp", src, src) == []


def test_data_estimate_prices_flows() -> None:
    cluster = Cluster(num_nodes=2, devices_per_node=4)
    cm = AnalyticCostModel(preset("a100-80g"), cluster)
    src = Layout(mesh=DeviceMesh.span(0, 4), dp=4, tp=1, pp=1)
    dst = Layout(mesh=DeviceMesh.span(4, 4), dp=2, tp=2, pp=1)
    move = cm.data_estimate(GEN, TRAIN, "logp", src, dst)
    total = key_bytes(GEN, TRAIN, "logp")
    # each of the 4 consumer devices on the other node gets the whole key
    assert move.bytes_total == pytest.approx(4 * total) == pytest.approx(move.bytes_inter_node)
    assert move.time_s > 0


def test_ptx_key_is_sized_as_token_ids_by_the_consumers_role() -> None:
    train = Call(name="train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor",
                 args=PPOActorArgs(ptx_coef=0.5), batch_size=32, prompt_len=100, response_len=28,
                 inputs=("seq", "logp", "ref", "score", "values", "ptx"))
    # 32 ptx sequences of 100 + 28 tokens as int64 ids plus two int64 lengths each
    assert key_bytes(GEN, train, "ptx") == 8 * 32 * 128 + 16 * 32
    assert dataset_key_bytes(train, "ptx") == 8 * 32 * 128 + 16 * 32
    assert dataset_key_bytes(train, "score") == 4 * 32  # a per-sequence role
    assert dataset_key_bytes(train, "logp") == 4 * 32 * 128  # a per-token role
    assert side_sequences(train) == 32 and side_sequences(TRAIN) == 0 and side_sequences(GEN) == 0


def test_data_loads_price_like_the_flows() -> None:
    """data_loads (what the estimator prices) gives the loads of data_flows, on any placement."""
    from cost_model.datamove import data_loads
    from cost_model.transfer_cost import price_flows, price_loads

    hw = preset("h100-80g").replace(data_overhead_s=1e-3)
    cluster = Cluster(num_nodes=4, devices_per_node=4)
    meshes = [(0, 1), (0, 2), (2, 2), (0, 4), (4, 4), (2, 8), (0, 16), (5, 1)]
    for s0, sn in meshes:
        for d0, dn in meshes:
            src = Layout(mesh=DeviceMesh.span(s0, sn), dp=sn, tp=1, pp=1)
            dst = Layout(mesh=DeviceMesh.span(d0, dn), dp=dn, tp=1, pp=1)
            flows = data_flows(GEN, TRAIN, "seq", src, dst)
            loads, sends = data_loads(GEN, TRAIN, "seq", src, dst, cluster)
            want, got = price_flows(flows, hw, cluster), price_loads(loads, hw)
            assert got.time_s == pytest.approx(want.time_s)
            assert got.bytes_total == pytest.approx(want.bytes_total)
            assert got.bytes_inter_node == pytest.approx(want.bytes_inter_node)
            assert got.busiest_rank_bytes == pytest.approx(want.busiest_rank_bytes)
            most = max((sum(1 for s, _, _ in flows if s == x) for x, _, _ in flows), default=0)
            assert sends == most
