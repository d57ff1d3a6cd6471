"""Hardware presets and spec validation."""

from __future__ import annotations

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
