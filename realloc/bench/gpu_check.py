"""The GPU check: one script for whoever is lent a GPU (one H100/H200, <= 10 minutes).

    bash experiments/bench/gpu_check.sh [--out gpu_check.json] [--cpu-dry] [--only STEPS]

Steps, each with its own time limit, each recorded as ok | failed | skipped with a
one-line note, all in one JSON file (`--out`, default `$OUT/gpu_check.json` when `$OUT`
is set, else `gpu_check.json`):

| step | what | limit |
|---|---|---|
| env | torch, CUDA, the device, and that realloc's dependencies import | 60 s |
| tests | `pytest -m gpu` (the GPU tests) | 150 s |
| logits | bf16 logits of the Megatron engine against transformers on the same weights (SmolLM2-135M when its extra is installed, else a tiny random Llama) | 120 s |
| profile | `realloc profile --quick --devices 1` on the GPU: the profile to commit | 150 s |
| grpo | a short GRPO (`grpo_smollm2`, else `grpo_tiny`) on one GPU: tokens/s and the train call's MFU | 200 s |

Without CUDA every GPU step is skipped with a note saying so; `--cpu-dry` instead runs
each step's CPU form (fp32 logits of the tiny model, the commands the others would run),
which is what the CPU test suite checks. The JSON (schema_version 1): `schema_version`,
`date_utc`, `cpu_dry`, `cuda`, `device`, `load_avg`, `elapsed_s`, `steps` {NAME: {`status`,
`note`, `elapsed_s`, `data`}}, and `profile_path` (the profile the profile step wrote,
to commit as experiments/profiles/NAME.json).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCHEMA_VERSION = 1
STEPS = ("env", "tests", "logits", "profile", "grpo")
LIMITS = {"env": 60, "tests": 150, "logits": 120, "profile": 150, "grpo": 200}
NEEDED = ("torch", "transformers", "megatron.core", "hydra", "omegaconf", "networkx", "rich", "numpy")


class Skipped(Exception):
    """A step that cannot run here; its message is the note."""


def _cuda() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "no CUDA device (torch.cuda.is_available() is False)"
    return True, torch.cuda.get_device_name(0)


def _run(cmd: list[str], limit: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command from the repository root (realloc importable), within `limit` seconds."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", **(env or {})}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit, env=full_env)


# --------------------------------------------------------------------------- steps


def step_env(dry: bool) -> dict[str, Any]:
    import importlib.util
    import platform

    missing = [m for m in NEEDED if importlib.util.find_spec(m.split(".")[0]) is None
               or (m == "megatron.core" and importlib.util.find_spec("megatron") is None)]
    data: dict[str, Any] = {"python": platform.python_version(), "missing": missing}
    try:
        import torch

        data["torch"] = torch.__version__
        data["cuda_runtime"] = torch.version.cuda
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            data.update(device=torch.cuda.get_device_name(0), memory_bytes=props.total_memory,
                        capability=f"{props.major}.{props.minor}", count=torch.cuda.device_count())
    except ImportError:
        pass
    if missing:
        data["hint"] = ("install the wheels prepared by experiments/bench/gpu_wheels.sh: "
                        "pip install --no-index --find-links shared/wheels " + " ".join(missing))
    return data


def step_tests(dry: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"]
    if dry:
        return {"command": " ".join(cmd[1:])}
    proc = _run(cmd, LIMITS["tests"] - 5)
    tail = proc.stdout.strip().splitlines()[-1:] or [""]
    if proc.returncode not in (0, 5):
        raise RuntimeError(f"GPU tests failed: {tail[0]}")
    return {"command": " ".join(cmd[1:]), "summary": tail[0]}


def _hf_model(arch: Any, state: dict[str, Any]) -> Any:
    """A transformers model of `arch` holding `state` (the engine's weights, converted)."""
    import transformers

    config = transformers.AutoConfig.for_model(**arch.to_hf_config())
    config.bos_token_id = config.eos_token_id = config.pad_token_id = None
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model.eval()


def _full_logits(engine: Any, batch: Any) -> Any:
    """Full-vocabulary logits [B, T, V] of a batch through the engine's pipeline (one rank)."""
    import torch

    from runtime.engine import vocab_parallel
    from runtime.engine.schedule import run_micro_batches

    def grab(_mb: Any, out: Any) -> tuple[Any, dict[str, Any]]:
        full = vocab_parallel.gather_vocab(out.detach().float(), engine.pgc.tp, vocab_size=engine.arch.vocab_size)
        return torch.zeros(()), {"logits": full}

    engine.module.eval()
    with torch.no_grad():
        reports = run_micro_batches(engine, [batch], grab, forward_only=True)
    return reports[0]["logits"]


def logits_check(device: str, dtype_name: str) -> dict[str, Any]:
    """The engine's logits against transformers' on the same weights (one process, world of 1)."""
    import torch
    import torch.distributed as dist

    from graph.placement.layout import DeviceMesh, Layout
    from graph.spec import ModelArch, ModelSpec
    from runtime.data.batch import SeqBatch
    from runtime.engine import platform
    from runtime.engine.convert import megatron_to_hf
    from runtime.engine.model_engine import build_engine
    from runtime.execution.launch import free_port

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port("127.0.0.1")))
    platform.apply_platform_patches()
    dist.init_process_group(platform.backend(), rank=0, world_size=1)
    try:
        model = "tiny random llama"
        checkpoint = None
        arch = ModelArch(family="llama", num_layers=2, hidden_size=64, ffn_hidden_size=128, num_heads=4,
                         num_kv_heads=2, vocab_size=101, max_position_embeddings=64)
        if device == "cuda":
            from runtime.engine.real_models import shipped_model_dir, smollm2_available

            if smollm2_available():
                checkpoint = str(shipped_model_dir("smollm2"))
                arch = ModelArch.from_config_file(Path(checkpoint))
                model = "SmolLM2-135M-Instruct"
        spec = ModelSpec(role="actor", arch=arch, trainable=False, checkpoint=checkpoint)
        engine = build_engine(spec, Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1), 0, seed=1)
        hf = _hf_model(arch, megatron_to_hf(engine.global_state(), arch, value_head=False))
        hf = hf.to(device=device, dtype=getattr(torch, dtype_name))
        seqs = [[5, 9, 33, 2, 71, 8, 17, 3], [40, 41, 42, 1]]
        logits = _full_logits(engine, SeqBatch.from_lists(seqs, [2, 1]))
        with torch.no_grad():
            ref = hf(torch.tensor([seqs[0]], device=device)).logits[0].float().cpu()
        got = logits[0, :len(seqs[0])].float().cpu()
        err = float((got - ref).abs().max())
        scale = float(ref.abs().max())
        agree = float((got.argmax(-1) == ref.argmax(-1)).float().mean())
        return {"model": model, "engine_dtype": str(engine.dtype), "reference_dtype": dtype_name,
                "max_abs_err": err, "max_abs_logit": scale, "relative_err": err / max(scale, 1e-9),
                "argmax_agreement": agree}
    finally:
        dist.destroy_process_group()


def step_logits(dry: bool) -> dict[str, Any]:
    if dry:  # the same comparison, fp32 on CPU with the tiny model
        data = logits_check("cpu", "float32")
        if data["relative_err"] > 1e-4:
            raise RuntimeError(f"fp32 CPU logits differ from transformers by {data['relative_err']:.2e} (relative)")
        return data
    proc = _run([sys.executable, "-c", "import json, realloc.bench.gpu_check as g; "
                 "print(json.dumps(g.logits_check('cuda', 'bfloat16')))"], LIMITS["logits"] - 5)
    if proc.returncode != 0:
        raise RuntimeError("logits check failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if data["relative_err"] > 0.05 or data["argmax_agreement"] < 0.9:
        raise RuntimeError(f"bf16 logits too far from transformers: {data}")
    return data


def step_profile(dry: bool, out_dir: Path) -> dict[str, Any]:
    path = out_dir / "profile-gpu-1dev-quick.json"
    cmd = [sys.executable, "-m", "realloc.cli", "profile", "--quick", "--devices", "1", "--out", str(path)]
    if dry:
        return {"command": " ".join(cmd[1:]), "profile_path": str(path)}
    proc = _run(cmd, LIMITS["profile"] - 5)
    if proc.returncode != 0:
        raise RuntimeError("realloc profile failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    profile = json.loads(path.read_text())
    return {"command": " ".join(cmd[1:]), "profile_path": str(path), "calibration": profile.get("calibration")}


def grpo_numbers(run_dir: Path, experiment: str, overrides: list[str]) -> dict[str, Any]:
    """Tokens/s and the train call's MFU from a finished run's metrics and plan."""
    from cost_model.hardware import preset
    from cost_model.shapes import model_flops_per_token
    from realloc.experiment import load_experiment
    from runtime.rundir.metrics import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    steady = records[1:] or records
    exp = load_experiment(experiment, overrides)
    g = exp.graph
    gen = next(c for c in g.calls if c.kind.value == "generate")
    train = next(c for c in g.calls if c.kind.value == "train")
    iter_s = sorted(r["iter_time_s"] for r in steady)[len(steady) // 2]
    train_s = sorted(r["call_time_s"][train.name] for r in steady)[len(steady) // 2]
    samples = gen.batch_size * int(getattr(gen.args, "num_samples", 1) or 1)
    new_tokens = samples * (gen.response_len or gen.max_new_tokens)
    arch = g.models[train.model].arch
    flops = model_flops_per_token(arch, train.seq_len) * train.num_tokens
    peak = preset("h100-80g").peak_flops["bf16"]
    try:
        import torch

        if "h200" in torch.cuda.get_device_name(0).lower():
            peak = preset("h200").peak_flops["bf16"]
    except Exception:  # noqa: BLE001 -- no device: H100 peak
        pass
    return {"iterations": len(records), "median_iter_s": iter_s, "samples_per_s": samples / iter_s,
            "generated_tokens_per_s": new_tokens / iter_s,
            "tokens_per_s": samples * (gen.prompt_len + (gen.response_len or gen.max_new_tokens)) / iter_s,
            "train_call_s": train_s, "train_mfu": flops / (train_s * peak), "peak_flops": peak,
            "note": "tokens/s over whole iterations (generation, inference, training); MFU of the train call "
                    "alone (PaLM convention), against the bf16 dense peak"}


def step_grpo(dry: bool, out_dir: Path) -> dict[str, Any]:
    import shutil
    import tempfile

    from runtime.engine.real_models import smollm2_available

    experiment = "grpo_smollm2" if smollm2_available() else "grpo_tiny"
    run_dir = Path(tempfile.mkdtemp(prefix="gpu-grpo-")) / "run"  # checkpoints stay out of the report folder
    overrides = ["cluster.device=cuda", "cluster.devices_per_node=1", "cluster.profile=null",
                 "cluster.hardware=h100-80g", "train.iterations=4", f"train.run_dir={run_dir}"]
    cmd = [sys.executable, "-m", "realloc.cli", "run", experiment, *overrides]
    if dry:
        return {"command": " ".join(cmd[1:]), "experiment": experiment}
    proc = _run(cmd, LIMITS["grpo"] - 5)
    if proc.returncode != 0:
        raise RuntimeError("GRPO run failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1])
    data = {"command": " ".join(cmd[1:]), "experiment": experiment, **grpo_numbers(run_dir, experiment, overrides)}
    check = run_dir / "estimate_vs_measured.json"
    if check.is_file():
        data["estimate_vs_measured"] = json.loads(check.read_text())
    for name in ("metrics.jsonl", "plan.yaml", "estimate_vs_measured.json"):
        if (run_dir / name).is_file():
            shutil.copy(run_dir / name, out_dir / f"gpu-grpo-{name}")
    return data


# --------------------------------------------------------------------------- driver


def run_check(*, out: Path, cpu_dry: bool = False, only: tuple[str, ...] = (),
              echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the steps; write and return the JSON report."""
    t0 = time.perf_counter()
    cuda, device = _cuda()
    out.parent.mkdir(parents=True, exist_ok=True)
    steps: dict[str, Any] = {}
    runners: dict[str, Callable[[bool], dict[str, Any]]] = {
        "env": step_env, "tests": step_tests, "logits": step_logits,
        "profile": lambda dry: step_profile(dry, out.parent), "grpo": lambda dry: step_grpo(dry, out.parent)}
    for name in STEPS:
        if only and name not in only:
            continue
        s0 = time.perf_counter()
        try:
            if name != "env" and not cuda and not cpu_dry:
                raise Skipped(f"{device}; on a GPU machine run experiments/bench/gpu_check.sh (see its docstring)")
            data = runners[name](cpu_dry)
            entry = {"status": "ok", "note": "CPU dry run" if cpu_dry and name != "env" else "", "data": data}
        except Skipped as exc:
            entry = {"status": "skipped", "note": str(exc), "data": {}}
        except subprocess.TimeoutExpired:
            entry = {"status": "failed", "note": f"over its {LIMITS[name]} s limit", "data": {}}
        except Exception as exc:  # noqa: BLE001 -- one failed step must not stop the others
            entry = {"status": "failed", "note": f"{type(exc).__name__}: {exc}".splitlines()[0], "data": {}}
        entry["elapsed_s"] = round(time.perf_counter() - s0, 1)
        steps[name] = entry
        echo(f"{name}: {entry['status']} ({entry['elapsed_s']} s){' - ' + entry['note'] if entry['note'] else ''}")
    report = {"schema_version": SCHEMA_VERSION,
              "date_utc": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "cpu_dry": cpu_dry, "cuda": cuda, "device": device,
              "load_avg": [round(x, 2) for x in os.getloadavg()], "elapsed_s": round(time.perf_counter() - t0, 1),
              "steps": steps,
              "profile_path": steps.get("profile", {}).get("data", {}).get("profile_path")}
    out.write_text(json.dumps(report, indent=2) + "\n")
    echo(f"wrote {out}")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_out = Path(os.environ["OUT"]) / "gpu_check.json" if os.environ.get("OUT") else Path("gpu_check.json")
    parser.add_argument("--out", type=Path, default=default_out)
    parser.add_argument("--cpu-dry", action="store_true", help="run each step's CPU form (for the test suite)")
    parser.add_argument("--only", default="", help=f"comma-separated steps of {', '.join(STEPS)}")
    args = parser.parse_args()
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in STEPS]
    if unknown:
        parser.error(f"--only: unknown step {unknown[0]!r}; steps: {', '.join(STEPS)}")
    report = run_check(out=args.out, cpu_dry=args.cpu_dry, only=only)
    sys.exit(1 if any(s["status"] == "failed" for s in report["steps"].values()) else 0)


if __name__ == "__main__":
    main()
