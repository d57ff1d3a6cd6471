"""Hardware presets and spec validation."""

from __future__ import annotations

import json

import pytest

from cost_model.hardware import PRESETS, GiB, HardwareSpec, preset


def test_presets_and_achieved_rates() -> None:
    assert set(PRESETS) == {"a100-40g", "a100-80g", "h100-80g", "h200", "cpu-gloo"}
    a100 = preset("a100-80g")
    assert a100.peak_flops["bf16"] == 312e12 and a100.memory_bytes == 80 * GiB
    assert a100.flops("bf16") == pytest.approx(312e12 * a100.matmul_efficiency)
    assert a100.link_bandwidth(True) < a100.link_bandwidth(False)
    assert preset("cpu-gloo").kind == "cpu-gloo"
    # a dtype without a peak falls back to fp32
    assert preset("cpu-gloo").flops("fp16") == pytest.approx(50e9 * 0.5)


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown hardware preset 'a100'; known: a100-40g, a100-80g, h100-80g, h200, cpu-gloo"):
        preset("a100")


def test_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match="memory_bandwidth must be > 0"):
        preset("h100-80g").replace(memory_bandwidth=0)
    with pytest.raises(ValueError, match="kind 'tpu' unknown"):
        preset("h100-80g").replace(kind="tpu")
    with pytest.raises(ValueError, match="peak_flops"):
        HardwareSpec(name="x", peak_flops={"int8": 1e12})
    with pytest.raises(ValueError, match="unknown field 'bandwidth'"):
        HardwareSpec.from_dict({"name": "x", "bandwidth": 1})
    assert HardwareSpec.from_dict(preset("h200").to_dict()) == preset("h200")


def test_threads_per_worker_speed_up_compute_and_take_cores():
    from cost_model.hardware import preset

    hw = preset("cpu-gloo").replace(host_cores=2.0, thread_efficiency=0.5, optimizer_param_time_s=3e-9)
    assert hw.thread_options() == (1, 2)
    assert hw.with_threads(1) is hw
    two = hw.with_threads(2)
    # 1 + (2 - 1) x 0.5 = 1.5 times the compute; each busy worker takes 2 of the 2 cores
    assert two.peak_flops == {"fp32": 75e9, "bf16": 15e9}
    assert two.memory_bandwidth == 15e9 and two.optimizer_param_time_s == pytest.approx(2e-9)
    assert two.host_cores == 1.0 and two.threads_per_device == 2
    assert two.layer_overhead_s == hw.layer_overhead_s  # fixed overheads do not scale
    assert two.slowdown(1) == 1.0 and two.slowdown(2) == 2.0
    assert two.thread_options() == (2,)
    assert preset("cpu-gloo").replace(host_cores=1.94).thread_options() == (1, 2)
    assert preset("cpu-gloo").thread_options() == (1,)  # cores not shared: nothing to choose
    assert preset("h100-80g").thread_options() == (1,)
    with pytest.raises(ValueError, match="thread_efficiency must be in"):
        hw.replace(thread_efficiency=1.5)
    with pytest.raises(ValueError, match="already has 2 threads"):
        two.with_threads(2)


def test_measured_thread_efficiency_is_taken_at_the_models_layer_size():
    from cost_model.hardware import preset

    hw = preset("cpu-gloo").replace(host_cores=2.0, thread_efficiency=0.6,
                                    thread_efficiency_by_hidden={64: 0.1, 256: 0.5, 1024: 0.9})
    assert hw.thread_efficiency_at(None) == 0.6  # no size: the unmeasured default
    assert hw.thread_efficiency_at(32) == 0.1 and hw.thread_efficiency_at(4096) == 0.9  # nearest outside
    # between 64 and 256, in log(hidden): 128 is half-way, 0.1 + 0.5 x (0.5 - 0.1) = 0.3
    assert hw.thread_efficiency_at(128) == pytest.approx(0.3)
    # 512 is half-way between 256 and 1024 in log: 0.5 + 0.5 x 0.4 = 0.7
    assert hw.thread_efficiency_at(512) == pytest.approx(0.7)
    assert hw.thread_speedup(2, 512) == pytest.approx(1.7) and hw.thread_speedup(2) == pytest.approx(1.6)
    assert hw.with_threads(2, 512).peak_flops["fp32"] == pytest.approx(hw.peak_flops["fp32"] * 1.7)
    assert preset("cpu-gloo").thread_efficiency_at(512) == preset("cpu-gloo").thread_efficiency
    # a profile file keeps the table (JSON keys are strings)
    again = HardwareSpec.from_dict(json.loads(json.dumps(hw.to_dict())))
    assert again.thread_efficiency_by_hidden == {64: 0.1, 256: 0.5, 1024: 0.9}
    with pytest.raises(ValueError, match=r"thread_efficiency_by_hidden\[64\]"):
        hw.replace(thread_efficiency_by_hidden={64: 1.5})
    with pytest.raises(ValueError, match="must map hidden sizes"):
        HardwareSpec.from_dict({**hw.to_dict(), "thread_efficiency_by_hidden": {"wide": 0.5}})


def test_corun_speed_scales_with_the_workers_computing_at_once_by_hand():
    from cost_model.hardware import preset

    hw = preset("cpu-gloo").replace(corun_workers=4, corun_speed_by_hidden={256: 0.9, 1024: 0.5},
                                    corun_decode_speed_by_hidden={256: 0.6}, corun_memory_speed=0.4)
    assert hw.corun_speed_at(512, 1) == 1.0  # alone: nothing shared
    # 4 measured at once: 512 is half-way between 256 and 1024 in log, 0.9 - 0.5 x 0.4 = 0.7
    assert hw.corun_speed_at(512, 4) == pytest.approx(0.7)
    # 2 of 4: a third of the way from alone to the measured slowdown, 1 - (1/3) x 0.3 = 0.9
    assert hw.corun_speed_at(512, 2) == pytest.approx(0.9)
    assert hw.corun_speed_at(512, 8) == pytest.approx(0.7)  # beyond the cores `slowdown` prices the rest
    assert hw.corun_speed_at(512, 4, decode=True) == pytest.approx(0.6)  # nearest measured size
    assert hw.corun_speed_at(512, 4, memory=True) == pytest.approx(0.4)
    assert preset("cpu-gloo").corun_speed_at(512, 4) == 1.0  # none measured
    again = HardwareSpec.from_dict(json.loads(json.dumps(hw.to_dict())))
    assert again.corun_speed_by_hidden == {256: 0.9, 1024: 0.5} and again.corun_workers == 4
    with pytest.raises(ValueError, match=r"corun_speed_by_hidden\[256\] = 1.5.*<= 1"):
        hw.replace(corun_speed_by_hidden={256: 1.5})
    with pytest.raises(ValueError, match="corun_memory_speed must be in"):
        hw.replace(corun_memory_speed=0.0)
    with pytest.raises(ValueError, match="corun_workers must be 0"):
        hw.replace(corun_workers=1)
