"""End to end against a peer: realloc's GRPO vs TRL's GRPOTrainer on the same work and cores.

Both systems train the same model from the same initial weights (realloc's random
initialisation of the actor, saved as a HF checkpoint that TRL loads; the reference model
is a copy of it in both), on the same prompts in the same order (realloc's batches of the
arithmetic task, handed to TRL as an unshuffled dataset), with the same group size,
generation length, sampling (temperature, no top-k/top-p), step contents (one epoch, one
mini-batch, one optimizer step per iteration: clipped ratio eps 0.2, k3 KL to the
reference at the same coefficient, token-mean loss, AdamW at a constant learning rate,
gradient clip 1.0) and numerics (fp32, no autocast, no gradient checkpointing, eager
attention in HF).

Equal resources: every system gets the machine's cores (`--cores`, default all of them).
TRL runs with that many torch threads; realloc runs on 1 worker with that many threads, and
under its searched plan on `--devices` workers (default: one per core) whose threads add up
to the same cores (the plan's threads per worker where it sets them, else cores / workers).

Equal work: by default every response is exactly `max_new_tokens` long in both systems
(EOS is masked until then: `min_new_tokens = max_new_tokens`), so both generate the same
tokens per step and tokens/s (the headline) compares equal work; with `--natural-lengths`
responses stop at EOS and tokens/s is a per-generated-token normalisation.

Rounds: the systems run interleaved (TRL, realloc 1 worker, realloc planned, TRL, ...),
`--rounds` times, each system in its own fresh processes; a round's figure is the median
over its steps after warm-up, and the report gives the median and min-max over rounds per
system, with the time per phase (generate, score, reference, train, other).

    PYTHONPATH=$PWD python experiments/bench/peer_trl.py [--size tiny|smollm2-135m-body] [--steps 8]
        [--warmup 3] [--rounds 3] [--cores N] [--devices N]

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
    """Measured steps after warm-up, per round."""
    warmup: int = 3
    """Steps run first in every run and not measured."""
    rounds: int = 3
    """Interleaved rounds (each system once per round, in fresh processes)."""
    threads: int = 0
    """Cores every system gets: TRL's torch threads, realloc's 1-worker threads, the sum of the
    planned workers' threads (0: all of the machine's cores)."""
    devices: int = 0
    """Workers of realloc's planned run (0: one per core)."""
    equal_lengths: bool = True
    """Every response exactly max_new_tokens long in both systems (EOS masked until then)."""
    seed: int = 1
    """Seed of the initial weights, the data and realloc's sampling."""

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ValueError(f"size={self.size!r} is unknown; known: {', '.join(SIZES)}")
        for name in ("prompts", "max_new_tokens", "steps", "rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("threads", "devices"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (0: one per core), got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"group_size must be >= 2 (GRPO), got {self.group_size}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup}")
        if self.threads == 0:
            object.__setattr__(self, "threads", os.cpu_count() or 1)
        if self.devices == 0:
            object.__setattr__(self, "devices", self.threads)

    @property
    def threads_per_worker(self) -> int:
        """Threads of each planned worker when the plan does not set them: an equal share of the cores."""
        return max(1, self.threads // self.devices)

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
        f"graph.generate.min_new_tokens={s.max_new_tokens if s.equal_lengths else 0}",
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
            answer: list[str], counts: list[tuple[int, int]], clock: dict[str, list[float]], **_: Any) -> list[float]:
    """realloc's `arithmetic_exact` rule (1 right, 0 wrong); records samples, tokens made and its time."""
    from runtime.rewards.rules import arithmetic_exact

    t0 = time.perf_counter()
    counts.append((len(completion_ids), sum(len(ids) for ids in completion_ids)))
    out = [1.0 if arithmetic_exact(p, c, {"answer": float(a)}) else 0.0
           for p, c, a in zip(prompts, completions, answer)]
    clock["score"][-1] += time.perf_counter() - t0
    return out


TRL_PHASES = ("generate", "score", "reference")
"""Phases timed inside TRL's step; the rest of the step (loss, backward, optimizer, the
trainer's own work) is its `train` phase."""


def run_trl(s: PeerSettings, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    """Train with TRL's GRPOTrainer in this process; per-step times (and per phase), samples and tokens."""
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
    clock: dict[str, list[float]] = {p: [] for p in TRL_PHASES}

    class StepClock(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0 = time.perf_counter()
            for times in clock.values():
                times.append(0.0)

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step_s.append(time.perf_counter() - self.t0)

    lengths = {"min_new_tokens": s.max_new_tokens} if s.equal_lengths else {}
    config = GRPOConfig(
        output_dir=str(workdir / "trl"), per_device_train_batch_size=s.samples_per_step,
        num_generations=s.group_size, gradient_accumulation_steps=1, num_iterations=1,
        max_steps=s.iterations, learning_rate=s.lr, lr_scheduler_type="constant", warmup_steps=0,
        weight_decay=0.0, max_grad_norm=1.0, beta=s.kl_coef, epsilon=0.2, loss_type="dapo",
        scale_rewards="group", temperature=s.temperature, top_p=1.0, top_k=0,
        max_completion_length=s.max_new_tokens, generation_kwargs=lengths, bf16=False, fp16=False,
        gradient_checkpointing=False, use_cpu=True, shuffle_dataset=False, seed=s.seed, data_seed=s.seed,
        logging_steps=10**6, save_strategy="no", report_to="none", disable_tqdm=True, dataloader_num_workers=0,
        model_init_kwargs={"dtype": torch.float32, "attn_implementation": "eager"},
    )
    trainer = GRPOTrainer(
        model=str(checkpoint), reward_funcs=[functools.partial(_reward, counts=counts, clock=clock)], args=config,
        train_dataset=Dataset.from_list(prompt_schedule(s)),
        processing_class=hf_char_tokenizer(SIZES[s.size]["vocab_size"]), callbacks=[StepClock()],
    )

    def timed(fn: Any, phase: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if (name := phase(*args)) is not None:
                    clock[name][-1] += time.perf_counter() - t0
        return wrapper

    model = trainer.model
    model.generate = timed(model.generate, lambda *a: "generate")
    logps = trainer._get_per_token_logps_and_entropies
    trainer._get_per_token_logps_and_entropies = timed(
        logps, lambda m, *a: "reference" if m is not None and m is getattr(trainer, "ref_model", None) else None)
    ref = getattr(trainer, "ref_model", None)
    trainer.train()
    return {"step_s": step_s, "generate_s": clock["generate"], "phase_s": clock,
            "samples": [c[0] for c in counts], "tokens": [c[1] for c in counts], "threads": torch.get_num_threads(),
            "workers": 1, "reference_model": ref is not None, "peak_rss_gib": _peak_rss_gib(),
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


PHASES = ("generate", "score", "reference", "train", "other")
"""Where a step's time goes, in both systems: generating, rewarding, the reference model's
log-probs, training (for TRL: the rest of its step), and (realloc) data movement between calls."""


def call_phase(call: Any) -> str:
    """The phase of one of realloc's calls: generate, score (reward), reference (other inference) or train."""
    kind = str(getattr(call.kind, "value", call.kind))
    if kind in ("generate", "train"):
        return kind
    return "score" if call.model == "reward" else "reference"


def run_realloc(s: PeerSettings, workdir: Path, *, devices: int) -> dict[str, Any]:
    """Train with realloc on `devices` workers under its searched plan; per-iteration figures.

    One worker gets all `s.threads`; several get the plan's threads per worker where the plan
    sets them, else an equal share of the cores."""
    from realloc.planning import plan_experiment
    from realloc.run import make_job
    from runtime.execution.launch import LaunchSpec, launch

    run_dir = workdir / f"realloc-{devices}"
    exp = load(s, devices=devices, run_dir=str(run_dir))
    plan = plan_experiment(exp, compare=False, quiet=True).plan
    planned = plan.threads_per_worker
    threads = s.threads if devices == 1 else (planned or s.threads_per_worker)
    job = dataclasses.replace(make_job(exp, dict(plan.layouts), threads_per_worker=threads), plot_every=10**9)
    results = launch(_realloc_worker, (job, threads), LaunchSpec(nproc_per_node=devices))
    history = results[0][0]
    n = s.samples_per_step
    calls = {c.name: exp.graph.call(c.name) for c in plan.calls}
    phase_s: dict[str, list[float]] = {p: [] for p in PHASES}
    for r in history:
        done = 0.0
        for p in PHASES[:-1]:
            t = sum(r["call_time_s"].get(name, 0.0) for name, c in calls.items() if call_phase(c) == p)
            phase_s[p].append(t)
            done += t
        phase_s["other"].append(max(0.0, r["iter_time_s"] - done))
    busy = {d for c in plan.calls for d in c.layout.mesh.devices}
    return {"step_s": [r["iter_time_s"] for r in history],
            "generate_s": phase_s["generate"], "phase_s": phase_s,
            "samples": [n] * len(history),
            "tokens": [round(r["actor_gen/response_len"] * n) for r in history],
            "threads": threads, "workers": devices, "busy_workers": len(busy),
            "peak_rss_gib": sum(rss for _, rss in results.values()),  # all workers together
            "call_s": {c.name: [r["call_time_s"].get(c.name, float("nan")) for r in history] for c in plan.calls},
            "plan": {c.name: str(c.layout) for c in plan.calls}}


# --------------------------------------------------------------------------- comparison


def summarise(raw: dict[str, Any], warmup: int) -> dict[str, Any]:
    """One run's medians after warm-up: seconds per step (per phase and per call, where known),
    samples/s, generated tokens/s, the share of a step spent generating; peak resident memory of
    all processes."""
    steps = raw["step_s"][warmup:]
    if not steps:
        raise ValueError(f"no measured steps: {len(raw['step_s'])} steps ran, warm-up {warmup}")
    tokens = raw["tokens"][warmup:warmup + len(steps)]
    samples = raw["samples"][warmup:warmup + len(steps)]
    gen = raw["generate_s"][warmup:warmup + len(steps)]
    med = statistics.median(steps)
    phases = {}
    if "phase_s" in raw:
        known = {p: raw["phase_s"][p][warmup:warmup + len(steps)] for p in raw["phase_s"]}
        if "train" not in known:  # TRL: the rest of its step
            known["train"] = [t - sum(v[i] for v in known.values()) for i, t in enumerate(steps)]
        phases = {p: round(statistics.median(known[p]), 4) for p in PHASES if p in known}
    return {
        "step_s": round(med, 4),
        "samples_per_s": round(statistics.median(n / t for n, t in zip(samples, steps)), 2),
        "tokens_per_s": round(statistics.median(k / t for k, t in zip(tokens, steps)), 1),
        "tokens_per_step": round(statistics.mean(tokens), 2),
        "generate_share": round(statistics.median(g / t for g, t in zip(gen, steps)), 3),
        "steps": len(steps),
        "threads": raw["threads"],
        **({"workers": raw["workers"]} if "workers" in raw else {}),
        **({"busy_workers": raw["busy_workers"]} if "busy_workers" in raw else {}),
        "peak_rss_gib": round(raw["peak_rss_gib"], 2) if "peak_rss_gib" in raw else None,
        **({"phase_s": phases} if phases else {}),
        **({"call_s": {k: round(statistics.median(v[warmup:]), 4) for k, v in raw["call_s"].items()}}
           if "call_s" in raw else {}),
        **({"plan": raw["plan"]} if "plan" in raw else {}),
    }


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Several rounds' summaries of one system: medians over rounds, with min-max of the rates
    and the step time, and the cores it used (workers x threads per worker)."""
    if not rounds:
        raise ValueError("no rounds to aggregate")
    out: dict[str, Any] = {"rounds": len(rounds)}
    for key in ("step_s", "samples_per_s", "tokens_per_s"):
        values = [r[key] for r in rounds]
        out[key] = round(statistics.median(values), 4)
        out[f"{key}_range"] = [min(values), max(values)]
    out["tokens_per_step"] = round(statistics.median(r["tokens_per_step"] for r in rounds), 2)
    out["generate_share"] = round(statistics.median(r["generate_share"] for r in rounds), 3)
    if all("phase_s" in r for r in rounds):
        out["phase_s"] = {p: round(statistics.median(r["phase_s"][p] for r in rounds), 4)
                          for p in PHASES if all(p in r["phase_s"] for r in rounds)}
    out["threads"] = rounds[0]["threads"]
    out["workers"] = rounds[0].get("workers", 1)
    out["busy_workers"] = rounds[0].get("busy_workers", out["workers"])
    out["cores_used"] = out["threads"] * out["busy_workers"]  # idle workers wait in gloo, off the cores
    out["peak_rss_gib"] = max((r["peak_rss_gib"] for r in rounds if r.get("peak_rss_gib") is not None), default=None)
    for key in ("call_s", "plan"):
        if key in rounds[0]:
            out[key] = ({c: round(statistics.median(r[key][c] for r in rounds), 4) for c in rounds[0][key]}
                        if key == "call_s" else rounds[0][key])
    return out


TRL_NAME = "TRL GRPOTrainer"


def system_names(s: PeerSettings, *, one_worker: bool = True) -> list[str]:
    """The systems of a comparison, in their run order within a round."""
    names = [f"realloc, 1 worker x {s.threads} threads"] if one_worker else []
    return names + [f"realloc, {s.devices} workers (planned)"]


def compare(s: PeerSettings, *, trl: bool | None = None, one_worker: bool = True,
            log: Any = None) -> dict[str, Any]:
    """Run the side-by-side, `s.rounds` interleaved rounds; `trl=None` runs TRL when it is installed."""
    trl = trl_available() if trl is None else trl
    runs: dict[str, list[dict[str, Any]]] = {}
    errors: dict[str, str] = {}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="realloc-peer-") as tmp:
        workdir = Path(tmp)
        runners = {}
        if trl:
            checkpoint = save_initial_actor(s, workdir / "init")
            runners[TRL_NAME] = lambda: trl_in_subprocess(s, checkpoint, workdir)
        names = system_names(s, one_worker=one_worker)
        if one_worker:
            runners[names[0]] = lambda: run_realloc(s, workdir, devices=1)
        runners[names[-1]] = lambda: run_realloc(s, workdir, devices=s.devices)
        for r in range(s.rounds):
            for name, fn in runners.items():
                if name in errors:
                    continue
                t0 = time.perf_counter()
                try:
                    runs.setdefault(name, []).append(summarise(fn(), s.warmup))
                except Exception as exc:  # a failing system is reported, the others still run
                    errors[name] = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
                if log:
                    log(f"round {r + 1}/{s.rounds} {name}: {time.perf_counter() - t0:.1f} s")
    rows = {name: aggregate(rounds) for name, rounds in runs.items() if rounds and name not in errors}
    base = rows.get(TRL_NAME)
    if base:
        for row in rows.values():
            row["speedup_vs_trl"] = round(row["tokens_per_s"] / base["tokens_per_s"], 2)
    tokens = {row["tokens_per_step"] for row in rows.values()}
    return {"settings": dataclasses.asdict(s), "systems": rows, "errors": errors,
            "cores": os.cpu_count(), "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2),
            "equal_tokens": len(tokens) <= 1, "trl_installed": trl_available(),
            **({} if trl_available() else {"note": INSTALL_HINT})}


def headline(s: dict[str, Any]) -> str:
    """What the comparison holds equal, in one line."""
    work = ("every response exactly max_new_tokens long in both systems (equal generated tokens)"
            if s["equal_lengths"] else "responses stop at EOS: tokens/s is normalised per generated token")
    return (f"size {s['size']}: {s['prompts']} prompts x {s['group_size']} samples, {s['max_new_tokens']} new "
            f"tokens, {work}; {s['threads']} cores for every system; {s['rounds']} interleaved rounds of "
            f"{s['steps']} measured steps after {s['warmup']} warm-up; median [min-max] over rounds")


def workers_text(system: dict[str, Any]) -> str:
    """"W x T" (workers x threads per worker), with how many work where a plan leaves some idle."""
    workers, busy = system.get("workers", 1), system.get("busy_workers", system.get("workers", 1))
    return f"{workers} x {system['threads']}" + (f" ({busy} busy)" if busy < workers else "")


def print_comparison(result: dict[str, Any]) -> None:
    print(headline(result["settings"]))
    print(f"machine: {result['cores']} cores, 1-minute load {result['load_before']} -> {result['load_after']}")
    print(f"{'system':<36}{'workers x threads':>18}{'tokens/s':>10}{'min-max':>14}{'s/step':>9}{'tok/step':>9}"
          f"{'vs TRL':>8}   s per phase: " + "/".join(PHASES))
    for name, r in result["systems"].items():
        lo, hi = r["tokens_per_s_range"]
        ph = r.get("phase_s", {})
        print(f"{name:<36}{workers_text(r):>18}{r['tokens_per_s']:>10.0f}"
              f"{f'{lo:.0f}-{hi:.0f}':>14}{r['step_s']:>9.3f}{r['tokens_per_step']:>9.1f}"
              f"{r.get('speedup_vs_trl', float('nan')):>7.2f}x   " + "/".join(f"{ph[p]:.3f}" if p in ph else "-"
                                                                      for p in PHASES))
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cores", type=int, default=0, help="cores every system gets (default: all)")
    parser.add_argument("--devices", type=int, default=0, help="workers of the planned run (default: one per core)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--natural-lengths", action="store_true",
                        help="stop responses at EOS (tokens/s then normalises per generated token)")
    parser.add_argument("--json", help="also write the result to this file")
    args = parser.parse_args()
    s = PeerSettings(size=args.size, steps=args.steps, warmup=args.warmup, rounds=args.rounds, threads=args.cores,
                     devices=args.devices, max_new_tokens=args.max_new_tokens, equal_lengths=not args.natural_lengths)
    result = compare(s, log=lambda m: print(m, file=sys.stderr, flush=True))
    print_comparison(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
