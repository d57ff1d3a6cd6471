"""Reproduces the README's "a real model learns a real-looking task" numbers and curve.

    python -m realloc.bench.smollm2_words --out runs/smollm2_words [--minutes 30] [--seeds 1 2]
    python -m realloc.bench.smollm2_words --out runs/smollm2_words --summarise   # runs already made

(`python experiments/bench/smollm2_words.py ...` in a source checkout; needs the `smollm2` extra.)

GRPO on SmolLM2-135M-Instruct with the shipped word-problem task (`grpo_smollm2_words`: chat
prompts, the shipped reward functions `correct` and `answer_format`, a 32-problem validation
file answered greedily every `train.eval_every` iterations) on the experiment's 4 CPU workers.
Each seed trains for `--minutes` of wall-clock time; a control run (seed of the first, learning
rate `--control-lr`, ~0) shows what the same sampling gives without learning. Runs go one after
another, each stopped with SIGINT (as Ctrl-C would) when its time is up, so each has the machine
to itself; the load average is sampled every 30 s and reported.

The summary gives per run: iterations done, the mean sample reward over the first and the last
`--window` iterations, the validation reward at the first and the last evaluation, and the
wall time; the plot shows sample reward (trailing mean) and validation reward against minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

EXPERIMENT = "grpo_smollm2_words"


def _load_sampler(path: Path, stop: threading.Event) -> None:
    """Append "unix_time load1" every 30 s until `stop`."""
    with path.open("a") as f:
        while not stop.is_set():
            f.write(f"{time.time():.0f} {os.getloadavg()[0]:.2f}\n")
            f.flush()
            stop.wait(30)


def run_one(out: Path, tag: str, seed: int, lr: float, minutes: float, eval_every: int) -> int:
    """Train one run for `minutes` of wall clock, then stop it with SIGINT; its exit code."""
    run_dir = out / tag
    cmd = [sys.executable, "-m", "realloc.cli", "run", EXPERIMENT, f"seed={seed}", f"graph.train.lr={lr}",
           f"train.eval_every={eval_every}", "train.iterations=100000", f"train.run_dir={run_dir}"]
    stop = threading.Event()
    sampler = threading.Thread(target=_load_sampler, args=(out / f"{tag}.load", stop), daemon=True)
    sampler.start()
    with (out / f"{tag}.log").open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    stop.set()
    sampler.join()
    return proc.returncode


def read_run(run_dir: Path, window: int) -> dict[str, Any]:
    """What one run's metrics.jsonl says: curves and the summary numbers."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "reward" in r]
    if not rows:
        raise SystemExit(f"{run_dir}: no iterations in metrics.jsonl")
    wall = [float(r.get("iter_time_s", 0.0)) for r in rows]
    minutes = [sum(wall[: i + 1]) / 60 for i in range(len(wall))]
    rewards = [float(r["reward"]) for r in rows]
    evals = [(minutes[i], float(r["eval/reward"]), r.get("eval/reward_correct"), r.get("eval/reward_answer_format"))
             for i, r in enumerate(rows) if "eval/reward" in r]
    w = min(window, max(1, len(rewards) // 2))
    return {"iterations": len(rows), "minutes": round(minutes[-1], 1),
            "reward_first": sum(rewards[:w]) / w, "reward_last": sum(rewards[-w:]) / w, "window": w,
            "eval_first": evals[0][1] if evals else None, "eval_last": evals[-1][1] if evals else None,
            "eval_correct_last": evals[-1][2] if evals else None,
            "eval_format_last": evals[-1][3] if evals else None,
            "response_len_first": sum(float(r.get("actor_gen/response_len", 0)) for r in rows[:w]) / w,
            "response_len_last": sum(float(r.get("actor_gen/response_len", 0)) for r in rows[-w:]) / w,
            "curves": {"minutes": minutes, "reward": rewards, "eval": evals}}


def load_range(path: Path) -> list[float]:
    """[min, max] of the sampled 1-minute load averages (empty when none were sampled)."""
    if not path.exists():
        return []
    values = [float(line.split()[1]) for line in path.read_text().splitlines() if line.strip()]
    return [min(values), max(values)] if values else []


def plot(results: dict[str, Any], path: Path) -> None:
    """Sample reward (trailing mean of 5) and validation reward against wall-clock minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for i, (tag, res) in enumerate(results.items()):
        c = res["curves"]
        colour = "grey" if tag.startswith("control") else f"C{i}"
        trail = [sum(c["reward"][max(0, j - 4): j + 1]) / len(c["reward"][max(0, j - 4): j + 1])
                 for j in range(len(c["reward"]))]
        axes[0].plot(c["minutes"], c["reward"], color=colour, lw=0.6, alpha=0.4)
        axes[0].plot(c["minutes"], trail, color=colour, lw=2, label=tag)
        if c["eval"]:
            axes[1].plot([e[0] for e in c["eval"]], [e[1] for e in c["eval"]], "o-", color=colour, label=tag)
    axes[0].set_title("sample reward (light: per iteration, bold: trailing mean of 5)")
    axes[1].set_title("validation reward, greedy, 32 problems")
    for ax in axes:
        ax.set_xlabel("wall-clock minutes (4 CPU workers on 2 cores)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def table(results: dict[str, Any]) -> str:
    """Markdown, one row per run."""
    def f(v: Any) -> str:
        return "-" if v is None else f"{v:.3f}"

    lines = ["| run | lr | iterations | minutes | sample reward first -> last | validation reward first -> last "
             "| response tokens first -> last | load |", "|---|---|---|---|---|---|---|---|"]
    for tag, r in results.items():
        load = "-" if not r["load"] else f"{r['load'][0]:.1f}-{r['load'][1]:.1f}"
        lines.append(f"| {tag} | {r['lr']:g} | {r['iterations']} | {r['minutes']} | {f(r['reward_first'])} -> "
                     f"{f(r['reward_last'])} (first/last {r['window']}) | {f(r['eval_first'])} -> {f(r['eval_last'])} "
                     f"| {r['response_len_first']:.1f} -> {r['response_len_last']:.1f} | {load} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="directory for the runs, logs, summary.json and curves.png")
    p.add_argument("--minutes", type=float, default=30.0, help="wall-clock minutes per run (default 30)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    p.add_argument("--lr", type=float, default=1e-5, help="learning rate of the seeded runs")
    p.add_argument("--control-lr", type=float, default=1e-10, help="learning rate of the control run")
    p.add_argument("--eval-every", type=int, default=5)
    p.add_argument("--window", type=int, default=5, help="iterations averaged at the start and the end")
    p.add_argument("--summarise", action="store_true", help="only summarise runs already in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = {f"seed{s}": (s, args.lr) for s in args.seeds}
    runs[f"control{args.seeds[0]}"] = (args.seeds[0], args.control_lr)
    if not args.summarise:
        for tag, (seed, lr) in runs.items():
            print(f"{tag}: seed {seed}, lr {lr:g}, {args.minutes:g} minutes ...", flush=True)
            rc = run_one(out, tag, seed, lr, args.minutes, args.eval_every)
            if rc not in (0, 130):
                raise SystemExit(f"{tag} failed with exit {rc}; see {out / (tag + '.log')}")
    results = {}
    for tag, (seed, lr) in runs.items():
        if (out / tag / "metrics.jsonl").exists():
            results[tag] = {**read_run(out / tag, args.window), "seed": seed, "lr": lr,
                            "load": load_range(out / f"{tag}.load")}
    if not results:
        raise SystemExit(f"no runs in {out}")
    (out / "summary.json").write_text(json.dumps(results, indent=1))
    plot(results, out / "curves.png")
    print(table(results))
    print(f"wrote {out / 'summary.json'} and {out / 'curves.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
