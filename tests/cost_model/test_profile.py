"""Profile files: load/save round trip, presets by name, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cost_model.hardware import preset
from cost_model.profile import Profile, load_hardware, load_profile, save_profile
from cost_model.samples import CollectiveSample, ComputeSample, Samples


def test_round_trip_keeps_everything(tmp_path: Path) -> None:
    samples = Samples(compute=(ComputeSample(flops=1e9, time_s=0.05, dtype="fp32"),
                               ComputeSample(flops=4e9, time_s=0.2, passes=3, dtype="fp32")),
                      collectives=(CollectiveSample(op="all_reduce", link="intra", group_size=2,
                                                    bytes=1e6, time_s=2e-3),
                                   CollectiveSample(op="all_reduce", link="intra", group_size=2,
                                                    bytes=1e7, time_s=1.1e-2)))
    path = tmp_path / "mine.json"
    src = json.dumps({"format": "realloc-profile", "version": 1, "base": "cpu-gloo",
                      "hardware": {"devices_per_node": 4}, "samples": samples.to_dict()})
    path.write_text(src)
    loaded = load_profile(path)
    assert loaded.hardware.devices_per_node == 4 and loaded.hardware.name == "mine"
    assert loaded.samples == samples and loaded.calibration is not None  # fitted on load
    again_path = tmp_path / "again.json"
    save_profile(loaded, again_path)
    again = load_profile(again_path)
    assert again == loaded
    assert again.spec == loaded.spec
    assert load_hardware(str(again_path)) == loaded.spec
    # the calibrated spec differs from the preset where it was measured
    assert loaded.spec.flops("fp32") != preset("cpu-gloo").flops("fp32")


def test_plain_spec_profile_and_presets_by_name(tmp_path: Path) -> None:
    path = tmp_path / "h.json"
    save_profile(Profile(hardware=preset("h100-80g")), path)
    assert load_hardware(path) == preset("h100-80g")
    assert load_hardware("a100-40g") == preset("a100-40g")
    with pytest.raises(ValueError, match="unknown hardware preset 'v100'"):
        load_hardware("v100")


def test_bad_files_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "realloc-profile", "version": 1, "hardwar": {}}))
    with pytest.raises(ValueError, match="unknown key 'hardwar'"):
        load_profile(path)
    path.write_text(json.dumps({"format": "other", "version": 1}))
    with pytest.raises(ValueError, match="'format' must be 'realloc-profile'"):
        load_profile(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_profile(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_profile(tmp_path / "none.json")


def test_shipped_example_profile_loads() -> None:
    path = Path(__file__).resolve().parents[2] / "experiments" / "profiles" / "example-2proc-cpu.json"
    spec = load_hardware(path)
    assert spec.kind == "cpu-gloo" and spec.devices_per_node == 2 and spec.memory_bytes == 12 * 1024**3
    assert spec.name == "example-2proc-cpu"


def test_round_trip_with_overhead_samples_and_measurement_record(tmp_path: Path) -> None:
    from cost_model.calibration import fit_calibration
    from cost_model.samples import CallSample, ContentionSample, DecodeSample, OptimizerSample

    samples = Samples(
        contention=(ContentionSample(devices=4, alone_s=0.1, together_s=0.21),),
        compute=(ComputeSample(flops=1e7, time_s=0.01, dtype="fp32", layers=1, busy=2),
                 ComputeSample(flops=2e7, time_s=0.03, dtype="fp32", layers=2, passes=3)),
        decode=(DecodeSample(steps=3, batch=2, layers=2, bytes=1e5, prefill_flops=1e6, time_s=0.02,
                             dtype="fp32"),),
        optimizer=(OptimizerSample(params=1e4, time_s=0.004), OptimizerSample(params=1e5, time_s=0.01)),
        calls=(CallSample(kind="train", dp=1, overhead_s=0.003),
               CallSample(kind="generate", dp=2, overhead_s=-0.001, busy=2)))
    profile = Profile(hardware=preset("cpu-gloo").replace(name="mine", devices_per_node=4), samples=samples,
                      calibration=fit_calibration(samples), base="cpu-gloo",
                      measured={"date": "2026-11-21T18:00:00Z", "machine": {"cpus": 2, "workers": 4}})
    path = tmp_path / "mine.json"
    save_profile(profile, path)
    again = load_profile(path)
    assert again == profile
    assert again.measured["machine"]["cpus"] == 2
    assert again.spec.host_cores == pytest.approx(4 * 0.1 / 0.21)
    # without a calibration section the same samples are fitted on load, to the same numbers
    d = json.loads(path.read_text())
    del d["calibration"]
    path.write_text(json.dumps(d))
    assert load_profile(path).spec == profile.spec


def test_unknown_sample_kind_and_fields_are_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"format": "realloc-profile", "version": 1, "base": "cpu-gloo", "samples": {"decodes": []}}))
    with pytest.raises(ValueError, match="unknown kind 'decodes'"):
        load_profile(path)
    path.write_text(json.dumps({"format": "realloc-profile", "version": 1, "base": "cpu-gloo",
                                "samples": {"calls": [{"kind": "train", "dp": 1, "overhead": 0.1}]}}))
    with pytest.raises(ValueError, match=r"samples\['calls'\].*overhead"):
        load_profile(path)
