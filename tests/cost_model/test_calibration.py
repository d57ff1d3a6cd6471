"""Fitting achieved rates from samples and applying them over the analytic defaults."""

from __future__ import annotations

import pytest

from cost_model.calibration import (
    Calibration,
    CollectiveSample,
    ComputeSample,
    MemorySample,
    apply_calibration,
    fit_calibration,
    samples_from,
)
from cost_model.collectives import collective_time
from cost_model.estimator import AnalyticCostModel
from cost_model.hardware import preset
from cost_model.layout import Cluster, DeviceMesh, Layout
from graph.spec import Call, CallKind, ModelArch, ModelSpec


def _synthetic_samples() -> list:
    # ground truth: 2e10 FLOP/s fp32 with 1e-4 s per pass; 5e9 B/s memory; intra link 1e9 B/s,
    # 5e-4 s per step; inter link 2e8 B/s, 1e-3 s per step
    compute = [ComputeSample(flops=f, passes=p, dtype="fp32", time_s=p * 1e-4 + f / 2e10)
               for f in (1e8, 4e8, 1.6e9) for p in (1, 3)]
    memory = [MemorySample(bytes=b, time_s=2e-5 + b / 5e9) for b in (1e6, 1e7, 1e8)]
    coll = []
    for link, bw, lat in (("intra", 1e9, 5e-4), ("inter", 2e8, 1e-3)):
        for n in (2, 4):
            for nbytes in (1e4, 1e6, 1e7):
                for op, factor, steps in (("all_reduce", 2 * (n - 1) / n, 2 * (n - 1)),
                                          ("all_gather", (n - 1) / n, n - 1)):
                    coll.append(CollectiveSample(op=op, link=link, group_size=n, bytes=nbytes,
                                                 time_s=steps * lat + factor * nbytes / bw))
    return [compute, memory, coll]


def test_fit_recovers_ground_truth() -> None:
    cal = fit_calibration(samples_from(*_synthetic_samples()))
    assert cal.flops["fp32"] == pytest.approx(2e10, rel=1e-6)
    assert cal.layer_overhead_s == pytest.approx(1e-4, rel=1e-6)
    assert cal.memory_bandwidth == pytest.approx(5e9, rel=1e-6)
    assert cal.link_bandwidth["intra"] == pytest.approx(1e9, rel=1e-6)
    assert cal.link_latency["inter"] == pytest.approx(1e-3, rel=1e-6)


def test_fitted_rates_override_the_defaults() -> None:
    base = preset("cpu-gloo")
    cal = fit_calibration(samples_from(*_synthetic_samples()))
    spec = apply_calibration(base, cal)
    assert spec.flops("fp32") == pytest.approx(2e10)
    assert spec.achieved_memory_bandwidth == pytest.approx(5e9)  # above the preset's peak: peak raised
    assert spec.link_bandwidth(False) == pytest.approx(1e9) and spec.link_latency(True) == pytest.approx(1e-3)
    cluster = Cluster(num_nodes=2, devices_per_node=2)
    # a collective priced with the calibrated spec reproduces the measured time
    assert collective_time("all_reduce", 1e6, [0, 1], spec, cluster) == pytest.approx(2 * 5e-4 + 1e6 / 1e9)
    # and the estimator's forward time follows the fitted FLOP/s
    arch = ModelArch(family="llama", num_layers=2, hidden_size=64, ffn_hidden_size=128, num_heads=8,
                     num_kv_heads=4, vocab_size=128)
    call = Call(name="lp", model="ref", kind=CallKind.INFERENCE, interface="logprobs", batch_size=4,
                prompt_len=8, response_len=8)
    lay = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    slow = AnalyticCostModel(base, cluster, dtype="fp32").call_estimate(call, ModelSpec(role="ref", arch=arch), lay)
    fast = AnalyticCostModel(spec, cluster, dtype="fp32").call_estimate(call, ModelSpec(role="ref", arch=arch), lay)
    assert fast.breakdown["compute_s"] < slow.breakdown["compute_s"]


def test_bad_samples_are_rejected() -> None:
    with pytest.raises(ValueError, match="unknown collective 'allreduce'"):
        CollectiveSample(op="allreduce", link="intra", group_size=2, bytes=1, time_s=1)
    with pytest.raises(ValueError, match="link 'nvlink'"):
        CollectiveSample(op="all_reduce", link="nvlink", group_size=2, bytes=1, time_s=1)
    with pytest.raises(ValueError, match="unknown field 'flop'"):
        Calibration.from_dict({"flop": {}})
