"""End to end against a peer: realloc's GRPO vs TRL's GRPOTrainer on the same work.

Both systems train the same model from the same initial weights (realloc's random
initialisation of the actor, saved as a HF checkpoint that TRL loads; the reference model
is a copy of it in both), on the same prompts in the same order (realloc's batches of the
arithmetic task, handed to TRL as an unshuffled dataset), with the same group size,
generation length, sampling (temperature, no top-k/top-p), step contents (one epoch, one
mini-batch, one optimizer step per iteration: clipped ratio eps 0.2, k3 KL to the
reference at the same coefficient, token-mean loss, AdamW at a constant learning rate,
gradient clip 1.0) and numerics (fp32, no autocast, no gradient checkpointing, eager
attention in HF, the same number of torch threads). Each system runs in its own
processes, one after the other in the same invocation; the figures are medians over the
steps after warm-up. Generated tokens are counted as produced (EOS included, nothing after
it), because an early EOS changes the work done.

realloc is measured on 1 worker (the same threads as TRL) and on the planned
`devices` workers (4 CPU processes sharing the machine's cores).

    PYTHONPATH=$PWD python experiments/bench/peer_trl.py [--size tiny|smollm2-135m-body] [--steps 8]
        [--warmup 3] [--threads 1] [--devices 4]

TRL is an optional extra: `pip install -c experiments/bench/peer-constraints.txt -e '.[peer]'`
(the constraints keep torch==2.13.0 and transformers==5.23.0). Nothing is downloaded at run time.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_DATASETS_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true", "TOKENIZERS_PARALLELISM": "false"}
"""Set in the TRL process before any HF import: TRL's only network attempt is telemetry."""

INSTALL_HINT = ("TRL is not installed; install the peer extra: pip install -c "
                "experiments/bench/peer-constraints.txt -e '.[peer]' (the constraints keep torch==2.13.0 "
                "and transformers==5.23.0)")

SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(num_layers=2, hidden_size=64, ffn_hidden_size=128, num_heads=4, num_kv_heads=2,
                 vocab_size=64, max_position_embeddings=128),
    # SmolLM2-135M's transformer (30 layers, hidden 576, ffn 1536, 9/3 heads), random weights, with
    # the character vocabulary instead of its 49152 tokens (the prompts are characters anyway, and
    # three such models' vocabularies in several processes do not fit this shared 24 GiB machine):
    # 106M parameters, so arithmetic dominates
    "smollm2-135m-body": dict(num_layers=30, hidden_size=576, ffn_hidden_size=1536, num_heads=9, num_kv_heads=3,
                              vocab_size=64, max_position_embeddings=2048),
}
"""Model sizes of the comparison: the tiny CPU model, and one where arithmetic dominates."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PeerSettings:
    """One side-by-side: what both systems run."""

    size: str = "tiny"
    """Model size, a key of SIZES."""
    prompts: int = 8
    """Prompts per step."""
    group_size: int = 4
    """Responses per prompt (so prompts x group_size samples per step)."""
    max_new_tokens: int = 8
    """Most tokens generated per response."""
    temperature: float = 1.0
    """Sampling temperature (no top-k, no top-p in either system)."""
    lr: float = 1e-3
    """Constant AdamW learning rate."""
    kl_coef: float = 0.04
    """k3 KL-to-reference loss coefficient (TRL's beta)."""
    steps: int = 8
    """Measured steps after warm-up."""
    warmup: int = 3
    """Steps run first and not measured."""
    threads: int = 1
    """torch threads of TRL and of realloc's 1-worker run (OMP_NUM_THREADS too)."""
    devices: int = 4
    """Workers of realloc's planned run."""
    seed: int = 1
    """Seed of the initial weights, the data and realloc's sampling."""

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size={self.size!r} is unknown; known: {', '.join(SIZES)}")
        for name in ("prompts", "max_new_tokens", "steps", "threads", "devices"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (GRPO), got {self.group_size}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")

    @property
    def iterations(self) -> int:
        """Steps run in all."""
        return self.warmup + self.steps

    @property
    def samples_per_step(self) -> int:
        """Responses generated and trained on per step."""
        return self.prompts * self.group_size


def trl_available() -> bool:
    """Whether TRL can be imported (without importing it)."""
    import importlib.util

    return importlib.util.find_spec("trl") is not None


# --------------------------------------------------------------------------- shared set-up


def overrides(s: PeerSettings, *, devices: int, run_dir: str) -> list[str]:
    """Overrides of `grpo_tiny` that make realloc run the settings."""
    arch = ", ".join(f"{k}: {v}" for k, v in SIZES[s.size].items())
    return [
        f"models.actor.arch={{family: llama, {arch}}}",
        f"graph.batch_size={s.prompts}", f"graph.group_size={s.group_size}",
        f"graph.generate.max_new_tokens={s.max_new_tokens}", f"graph.generate.temperature={s.temperature}",
        f"graph.train.lr={s.lr}", f"graph.train.kl_coef={s.kl_coef}", "graph.train.kl_estimator=k3",
        "graph.train.lr_schedule=constant", "graph.train.grad_clip=1.0",
        f"cluster.devices_per_node={devices}", f"train.iterations={s.iterations}", f"seed={s.seed}",
        f"data.seed={s.seed}", f"train.run_dir={run_dir}",
    ]


def load(s: PeerSettings, *, devices: int, run_dir: str) -> Any:
    from realloc.experiment import load_experiment

    return load_experiment("grpo_tiny", overrides(s, devices=devices, run_dir=run_dir))


def save_initial_actor(s: PeerSettings, directory: Path) -> Path:
    """realloc's initial actor weights (random, from its seed) as a HF checkpoint in `directory`."""
    from runtime.engine import convert
    from runtime.engine.hf_checkpoint import save_hf_checkpoint
    from runtime.execution.engines import model_seed

    exp = load(s, devices=1, run_dir=str(directory / "unused"))
    arch = exp.graph.models["actor"].arch
    hf = convert.random_hf_state(arch, seed=model_seed(exp.graph, "actor", exp.config.seed), value_head=False)
    save_hf_checkpoint(str(directory), hf, arch, value_head=False)
    return directory


def prompt_schedule(s: PeerSettings) -> list[dict[str, str]]:
    """The records realloc reads, in its order: step after step of `prompts` records."""
    from runtime.data.records import batches, load_records

    exp = load(s, devices=1, run_dir="unused")
    d = exp.config.data
    records = load_records(fmt=d.format, path=d.path, generator=d.generator, num_records=d.num_records, seed=d.seed)
    rows = []
    for _, indices in zip(range(s.iterations), batches(len(records), s.prompts, d.seed)):
        rows.extend({"prompt": records[i].prompt, "answer": records[i].answer} for i in indices)
    return rows


def hf_char_tokenizer(vocab_size: int) -> Any:
    """A HF fast tokenizer with exactly realloc's character ids (BOS prepended, lower-cased),
    padded with digit-free filler tokens up to the model's vocabulary so sampled ids decode."""
    from runtime.data.tokenizer import char_hf_tokenizer

    return char_hf_tokenizer(vocab_size=vocab_size, add_bos=True)


# --------------------------------------------------------------------------- TRL side


def _reward(prompts: list[str], completions: list[str], completion_ids: list[list[int]],
            answer: list[str], counts: list[tuple[int, int]], **_: Any) -> list[float]:
    """realloc's `arithmetic_exact` rule (1 right, 0 wrong); records samples and tokens made."""
    from runtime.rewards.rules import arithmetic_exact

    counts.append((len(completion_ids), sum(len(ids) for ids in completion_ids)))
    return [1.0 if arithmetic_exact(p, c, {"answer": float(a)}) else 0.0
            for p, c, a in zip(prompts, completions, answer)]


def run_trl(s: PeerSettings, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    """Train with TRL's GRPOTrainer in this process; per-step times, samples and tokens."""
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    import functools

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(s.threads)
    counts: list[tuple[int, int]] = []
    step_s: list[float] = []
    gen_s: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()
            gen_s.append(0.0)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step_s.append(time.perf_counter() - self.t0)

    config = GRPOConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=s.samples_per_step,
        num_generations=s.group_size, gradient_accumulation_steps=1, num_iterations=1,
        max_steps=s.iterations, learning_rate=s.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, beta=s.kl_coef, epsilon=0.2, loss_type="dapo",
        scale_rewards="group", temperature=s.temperature, top_p=1.0, top_k=0,
        max_completion_length=s.max_new_tokens, bf16=False, fp16=False, gradient_checkpointing=False,
        use_cpu=True, shuffle_dataset=False, seed=s.seed, data_seed=s.seed, logging_steps=10**6,
        save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        model_init_kwargs={"dtype": torch.float32, "attn_implementation": "eager"},
    )
    trainer = GRPOTrainer(
        model=str(checkpoint), reward_funcs=[functools.partial(_reward, counts=counts)], args=config,
        train_dataset=Dataset.from_list(prompt_schedule(s)),
        processing_class=hf_char_tokenizer(SIZES[s.size]["vocab_size"]), callbacks=[StepClock()],
    )
    model = trainer.model
    generate = model.generate

    def timed_generate(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return generate(*args, **kwargs)
        finally:
            gen_s[-1] += time.perf_counter() - t0

    model.generate = timed_generate
    trainer.train()
    return {"step_s": step_s, "generate_s": gen_s, "samples": [c[0] for c in counts],
            "tokens": [c[1] for c in counts], "threads": torch.get_num_threads(), "peak_rss_gib": _peak_rss_gib(),
            "autocast": bool(config.bf16 or config.fp16), "gradient_checkpointing": config.gradient_checkpointing}


def trl_in_subprocess(s: PeerSettings, checkpoint: Path, workdir: Path, timeout_s: float = 1200) -> dict[str, Any]:
    """run_trl in a fresh interpreter (its own threads, env and accelerate state)."""
    out = workdir / "trl.json"
    env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": str(s.threads), "MKL_NUM_THREADS": str(s.threads),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "realloc.bench.peer_trl", "--trl-worker", json.dumps(dataclasses.asdict(s)),
           str(checkpoint), str(workdir), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(f"TRL run failed: {tail[-1] if tail else proc.returncode}")
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- realloc side


def _peak_rss_gib() -> float:
    """This process's peak resident memory (Linux reports KiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _realloc_worker(ctx: Any, job: Any, threads: int) -> tuple[list[dict[str, Any]], float]:
    import torch

    from runtime.execution.worker import Worker

    class TrainOnly(Worker):
        """Skips the final HF export: a benchmark keeps no models, and the export's gathered
        copy would count in the peak memory the comparison reports."""

        def save_models(self, root: Path) -> None:
            return None

    if threads:
        torch.set_num_threads(threads)
    return TrainOnly(ctx, job).run(), _peak_rss_gib()


def run_realloc(s: PeerSettings, workdir: Path, *, devices: int) -> dict[str, Any]:
    """Train with realloc on `devices` workers under its searched plan; per-iteration figures."""
    from realloc.planning import plan_experiment
    from realloc.run import make_job
    from runtime.execution.launch import LaunchSpec, launch

    run_dir = workdir / f"realloc-{devices}"
    exp = load(s, devices=devices, run_dir=str(run_dir))
    plan = plan_experiment(exp, compare=False, quiet=True).plan
    job = dataclasses.replace(make_job(exp, dict(plan.layouts)), plot_every=10**9)
    threads = s.threads if devices == 1 else 0  # 0: the launcher's share of the cores per worker
    results = launch(_realloc_worker, (job, threads), LaunchSpec(nproc_per_node=devices))
    history = results[0][0]
    n = s.samples_per_step
    return {"step_s": [r["iter_time_s"] for r in history],
            "generate_s": [r["call_time_s"].get("actor_gen", float("nan")) for r in history],
            "samples": [n] * len(history),
            "tokens": [round(r["actor_gen/response_len"] * n) for r in history],
            "threads": threads or max(1, (os.cpu_count() or 1) // devices),
            "peak_rss_gib": sum(rss for _, rss in results.values()),  # all workers together
            "call_s": {c.name: [r["call_time_s"].get(c.name, float("nan")) for r in history] for c in plan.calls},
            "plan": {c.name: str(c.layout) for c in plan.calls}}


# --------------------------------------------------------------------------- comparison


def summarise(raw: dict[str, Any], warmup: int) -> dict[str, Any]:
    """Medians after warm-up: seconds per step (and per call, where known), samples/s, generated
    tokens/s, the share of a step spent generating; peak resident memory of all processes."""
    steps = raw["step_s"][warmup:]
    if not steps:
        raise ValueError(f"no measured steps: {len(raw['step_s'])} steps ran, warm-up {warmup}")
    tokens = raw["tokens"][warmup:warmup + len(steps)]
    samples = raw["samples"][warmup:warmup + len(steps)]
    gen = raw["generate_s"][warmup:warmup + len(steps)]
    med = statistics.median(steps)
    return {
        "step_s": round(med, 4),
        "samples_per_s": round(statistics.median(n / t for n, t in zip(samples, steps)), 2),
        "tokens_per_s": round(statistics.median(k / t for k, t in zip(tokens, steps)), 1),
        "tokens_per_step": round(statistics.mean(tokens), 2),
        "generate_share": round(statistics.median(g / t for g, t in zip(gen, steps)), 3),
        "steps": len(steps),
        "threads": raw["threads"],
        "peak_rss_gib": round(raw["peak_rss_gib"], 2) if "peak_rss_gib" in raw else None,
        **({"call_s": {k: round(statistics.median(v[warmup:]), 4) for k, v in raw["call_s"].items()}}
           if "call_s" in raw else {}),
        **({"plan": raw["plan"]} if "plan" in raw else {}),
    }


def compare(s: PeerSettings, *, trl: bool | None = None, one_worker: bool = True) -> dict[str, Any]:
    """Run the side-by-side; `trl=None` runs TRL when it is installed."""
    trl = trl_available() if trl is None else trl
    rows: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="realloc-peer-") as tmp:
        workdir = Path(tmp)
        runners = {}
        if trl:
            checkpoint = save_initial_actor(s, workdir / "init")
            runners["TRL GRPOTrainer"] = lambda: trl_in_subprocess(s, checkpoint, workdir)
        if one_worker:
            runners["realloc, 1 worker"] = lambda: run_realloc(s, workdir, devices=1)
        runners[f"realloc, {s.devices} workers (planned)"] = lambda: run_realloc(s, workdir, devices=s.devices)
        for name, fn in runners.items():
            try:
                rows[name] = summarise(fn(), s.warmup)
            except Exception as exc:  # a failing system is reported, the others still run
                errors[name] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    base = rows.get("TRL GRPOTrainer")
    if base:
        for row in rows.values():
            row["speedup_vs_trl"] = round(row["samples_per_s"] / base["samples_per_s"], 2)
    return {"settings": dataclasses.asdict(s), "systems": rows, "errors": errors,
            "trl_installed": trl_available(), **({} if trl_available() else {"note": INSTALL_HINT})}


def print_comparison(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(f"size {s['size']}: {s['prompts']} prompts x {s['group_size']} samples, <= {s['max_new_tokens']} new "
          f"tokens, {s['steps']} measured steps after {s['warmup']} warm-up, {s['threads']} thread(s)")
    print(f"{'system':<30}{'s/step':>9}{'samples/s':>11}{'tokens/s':>10}{'tok/step':>10}{'gen share':>10}{'vs TRL':>8}")
    for name, r in result["systems"].items():
        print(f"{name:<30}{r['step_s']:>9.3f}{r['samples_per_s']:>11.1f}{r['tokens_per_s']:>10.0f}"
              f"{r['tokens_per_step']:>10.1f}{r['generate_share']:>10.2f}{r.get('speedup_vs_trl', float('nan')):>7.2f}x")
    for name, err in result["errors"].items():
        print(f"{name}: failed: {err}")
    if "note" in result:
        print(result["note"])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--trl-worker":
        settings, checkpoint, workdir, out = sys.argv[2:6]
        result = run_trl(PeerSettings(**json.loads(settings)), Path(checkpoint), Path(workdir))
        Path(out).write_text(json.dumps(result))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    s = PeerSettings(size=args.size, steps=args.steps, warmup=args.warmup, threads=args.threads,
                     devices=args.devices, max_new_tokens=args.max_new_tokens)
    result = compare(s)
    print_comparison(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
