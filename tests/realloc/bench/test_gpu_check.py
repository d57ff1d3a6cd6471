"""The GPU check's CPU parts: its JSON, skipping without CUDA, and each step's CPU form."""

from __future__ import annotations

import json

import pytest

from realloc.bench import gpu_check


def test_without_cuda_every_gpu_step_is_skipped_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "_cuda", lambda: (False, "no CUDA device (torch.cuda.is_available() is False)"))
    report = gpu_check.run_check(out=tmp_path / "g.json", echo=lambda _line: None)
    assert json.loads((tmp_path / "g.json").read_text()) == report
    assert report["schema_version"] == 1 and report["cuda"] is False and not report["cpu_dry"]
    assert list(report["steps"]) == list(gpu_check.STEPS)
    assert report["steps"]["env"]["status"] == "ok" and "torch" in report["steps"]["env"]["data"]
    for name in gpu_check.STEPS[1:]:
        step = report["steps"][name]
        assert step["status"] == "skipped" and "no CUDA device" in step["note"], step
    assert report["profile_path"] is None


def test_cpu_dry_runs_each_step_in_its_cpu_form(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "_cuda", lambda: (False, "no CUDA device"))
    report = gpu_check.run_check(out=tmp_path / "g.json", cpu_dry=True, echo=lambda _line: None)
    steps = report["steps"]
    assert all(s["status"] == "ok" for s in steps.values()), steps
    logits = steps["logits"]["data"]
    assert logits["relative_err"] < 1e-4 and logits["argmax_agreement"] == 1.0
    assert steps["tests"]["data"]["command"].startswith("-m pytest -m gpu")
    assert "profile --quick --devices 1" in steps["profile"]["data"]["command"]
    assert report["profile_path"].endswith(".json")
    assert "cluster.device=cuda" in steps["grpo"]["data"]["command"]


def test_grpo_numbers_from_a_run_directory(tmp_path):
    """Tokens/s and MFU from metrics worked by hand: grpo_tiny, 16 prompts x 4 samples."""
    from realloc.experiment import load_experiment

    exp = load_experiment("grpo_tiny", [])
    gen = next(c for c in exp.graph.calls if c.kind.value == "generate")
    train = next(c for c in exp.graph.calls if c.kind.value == "train")
    rows = [{"iteration": i, "iter_time_s": 2.0, "call_time_s": {train.name: 0.5}} for i in range(1, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = gpu_check.grpo_numbers(tmp_path, "grpo_tiny", [])
    samples = gen.batch_size * gen.args.num_samples
    assert data["samples_per_s"] == pytest.approx(samples / 2.0)
    assert data["generated_tokens_per_s"] == pytest.approx(samples * (gen.response_len or gen.max_new_tokens) / 2.0)
    assert 0 < data["train_mfu"] < 1e-3  # a tiny model: nowhere near the GPU's peak
