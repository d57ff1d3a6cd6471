"""`realloc profile --quick` end to end on 2 gloo workers (one launch), and the grids."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cost_model.profile import load_profile
from runtime.profiling.machine import FULL, QUICK, synthetic_arch


def test_grids_and_synthetic_model() -> None:
    assert QUICK.repeats < FULL.repeats and set(QUICK.tp_degrees) <= set(FULL.tp_degrees)
    assert len(QUICK.layers) >= 2  # two depths separate per-layer from per-pass costs
    arch = synthetic_arch(64, 2, 64)
    assert (arch.num_layers, arch.ffn_hidden_size, arch.num_heads % 4) == (2, 128, 0)


@pytest.mark.slow
def spec_rule_fitted(profile) -> bool:
    return profile.calibration.rule_seq_overhead_s is not None and profile.spec.rule_seq_overhead_s >= 0


def test_realloc_profile_quick_writes_a_loadable_profile(tmp_path: Path) -> None:
    from realloc.cli import main

    out = tmp_path / "quick.json"
    assert main(["profile", "--quick", "--devices", "2", "--out", str(out)]) == 0
    raw = json.loads(out.read_text())
    assert raw["measured"]["machine"]["workers"] == 2 and raw["measured"]["date"].endswith("Z")
    profile = load_profile(out)
    samples = profile.samples
    # compute: 2 shapes x (forward, forward+backward) x 2 depths x TP 1 and 2, and the speed
    # samples: one larger layer at tp 1, forward and forward+backward at one shape
    main = [s for s in samples.compute if not s.speed]
    assert len(main) == 2 * 2 * 2 * 2 and {s.hidden for s in main} == set(QUICK.hidden_sizes)
    assert {s.layers for s in main} == {1, 2} and {s.busy for s in main} == {1, 2}
    speed = [s for s in samples.compute if s.speed]
    assert [(s.hidden, s.passes, s.tp, s.decode) for s in speed] == [(256, 1, 1, False), (256, 3, 1, False),
                                                                      (256, 1, 1, True)]  # + a decode-shaped pass
    # the speed table: the main fit's largest size at 1, the larger layer's measured speed
    table = profile.calibration.compute_speed_by_hidden
    assert set(table) == {max(QUICK.hidden_sizes), 256} and table[max(QUICK.hidden_sizes)] == 1.0
    assert table[256] > 0 and profile.spec.compute_speed_by_hidden == table
    assert set(profile.calibration.decode_speed_by_hidden) == {max(QUICK.hidden_sizes), 256}
    assert len(samples.decode) == 2 * 2 * 2 * 2 and {s.steps for s in samples.decode} == {1, 5}
    ops = {(s.op, s.group_size) for s in samples.collectives}
    assert ops == {("all_reduce", 2), ("all_gather", 2), ("reduce_scatter", 2), ("p2p", 2)}
    assert {(s.kind, s.dp) for s in samples.calls} == {(k, d) for k in ("train_step", "train", "inference",
                                                                       "generate") for d in (1, 2)} | {("rule", 1)}
    assert {s.seqs for s in samples.calls} == {4, 16}  # two batch sizes separate per-sequence costs
    assert len(samples.optimizer) == 2 and len(samples.contention) == 3
    # memory: reads of 4x and 8x the last-level cache, the DRAM rate decoding a large model reaches
    assert [round(m.bytes / m.cache_bytes) for m in samples.memory] == [4, 8]
    assert profile.spec.dram_bandwidth > 0 and profile.spec.cache_bytes == samples.memory[0].cache_bytes
    # reallocations around four layouts of 2 ranks (one of them local copies only) and one data transfer
    assert [m.kind for m in samples.moves] == ["realloc"] * 4 + ["data"]
    assert min(m.peers for m in samples.moves if m.kind == "realloc") == 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if cores >= 2:  # one layer with 1 thread and with all cores, per hidden size of the grid
        # (first the co-run model's, timed with all the cores' threads too)
        assert [(s.hidden, s.threads, s.layers) for s in samples.threads] == \
            [(h, cores, QUICK.corun_max_layers) for h in QUICK.speed_hidden] + [(h, cores, 1) for h in QUICK.thread_hidden]
        assert set(profile.calibration.thread_efficiency_by_hidden) == set(QUICK.thread_hidden) | set(QUICK.speed_hidden)
        assert profile.spec.thread_efficiency_by_hidden == profile.calibration.thread_efficiency_by_hidden
        # co-run: the model (both shapes) of each speed size and a read beyond the cache, on both workers
        assert [(s.kind, s.hidden, s.workers) for s in samples.corun] == \
            [(k, h, 2) for h in QUICK.speed_hidden for k in ("compute", "decode")] + [("memory", 0, 2)]
        assert samples.corun[-1].bytes == 4 * samples.memory[0].cache_bytes
        assert profile.spec.corun_workers == 2 and 0 < profile.spec.corun_memory_speed <= 1
        assert set(profile.spec.corun_speed_by_hidden) == set(QUICK.speed_hidden)
    rule = [s for s in samples.calls if s.kind == "rule"]  # a rule-based reward, per batch size
    assert sorted(s.seqs for s in rule) == [4, 16] and spec_rule_fitted(profile)
    spec = profile.spec
    assert spec.kind == "cpu-gloo" and spec.devices_per_node == 2
    # the fitted numbers are what the estimator runs on, and every fitted rate is positive
    assert spec.flops("fp32") > 0 and spec.layer_overhead_s >= 0 and spec.intra_node_latency >= 0
    assert set(spec.call_overhead_s) >= {"inference", "generate"}
