"""Data-key transfer between two calls' layouts."""

from __future__ import annotations

import pytest

from cost_model.datamove import data_flows, key_bytes
from cost_model.estimator import AnalyticCostModel
from cost_model.hardware import preset
from cost_model.layout import Cluster, DeviceMesh, Layout
from graph.interfaces import GenerateArgs
from graph.spec import Call, CallKind

GEN = Call(name="gen", model="actor", kind=CallKind.GENERATE, interface="generate",
           args=GenerateArgs(max_new_tokens=64, num_samples=4), batch_size=8, prompt_len=100,
           response_len=28, max_new_tokens=64)
TRAIN = Call(name="train", model="actor", kind=CallKind.TRAIN, interface="ppo_actor", batch_size=32,
             prompt_len=100, response_len=28)


def test_key_bytes_by_hand() -> None:
    # 8 prompts x 4 samples = 32 sequences of 100 + 28 tokens
    assert key_bytes(GEN, TRAIN, "packed_input_ids") == 8 * 32 * 128  # int64 ids
    assert key_bytes(GEN, TRAIN, "logprobs") == 4 * 32 * 128  # float32
    assert key_bytes(GEN, TRAIN, "rewards") == 4 * 32  # one scalar per sequence


def test_flows_are_token_balanced_overlaps() -> None:
    src = Layout(mesh=DeviceMesh.span(0, 2), dp=2, tp=1, pp=1)
    dst = Layout(mesh=DeviceMesh.span(2, 3), dp=3, tp=1, pp=1)
    total = key_bytes(GEN, TRAIN, "logprobs")
    flows = data_flows(GEN, TRAIN, "logprobs", src, dst)
    # src halves [0,1/2), [1/2,1); dst thirds: 0 <- 1/3 from 0; 1 <- 1/6 from 0 and 1/6 from 1; 2 <- 1/3 from 1
    want = {(0, 2): 1 / 3, (0, 3): 1 / 6, (1, 3): 1 / 6, (1, 4): 1 / 3}
    assert {(s, d): b / total for s, d, b in flows} == pytest.approx(want)
    # the same layout moves nothing
    assert data_flows(GEN, TRAIN, "logprobs", src, src) == []


def test_data_estimate_prices_flows() -> None:
    cluster = Cluster(num_nodes=2, devices_per_node=4)
    cm = AnalyticCostModel(preset("a100-80g"), cluster)
    src = Layout(mesh=DeviceMesh.span(0, 4), dp=4, tp=1, pp=1)
    dst = Layout(mesh=DeviceMesh.span(4, 4), dp=2, tp=2, pp=1)
    move = cm.data_estimate(GEN, TRAIN, "logprobs", src, dst)
    total = key_bytes(GEN, TRAIN, "logprobs")
    # each dst DP rank's half goes to both of its TP ranks: 2x the key, all across nodes
    assert move.bytes_total == pytest.approx(2 * total) == pytest.approx(move.bytes_inter_node)
    assert move.time_s > 0
