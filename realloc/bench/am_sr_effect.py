"""Reproduces the README's "Advantage Model and Selective Rehearsal: the effect" numbers.

    python -m realloc.bench.am_sr_effect --out runs/am_sr_effect [--seeds 1 2] [--ppo-iterations 200]

(`python experiments/bench/am_sr_effect.py ...` in a source checkout).

Tiny models on the char-level arithmetic task, three skills: addition, subtraction and
multiplication (one-digit answers). Per seed:
1. sft: the actor learns all three skills (prompt/answer pairs);
2. rm / am: a reward model (Bradley-Terry) and an Advantage Model (am_pairwise) trained on the
   SAME preference pairs, whose labeller is strict on addition (chosen: the right answer,
   rejected: a near miss) and lenient on subtraction (chosen: the right answer or one off by
   one, rejected: an answer at least 3 away), so the two kinds get different score scales and
   subtraction cannot tell right from off-by-one;
3. PPO of the SFT actor on addition and subtraction prompts only (multiplication is the
   held-out skill), against: the RM (`ppo_rm`), the AM (`ppo_am`), the AM with Selective
   Rehearsal from the rollouts (`ppo_am_sr`, graph.train.rehearsal_source=rollouts), the AM
   with Selective Rehearsal from the SFT data (`ppo_am_srdata`, rehearsal_source=data: the pool
   is the SFT pairs of all three kinds, multiplication included, each pair once; ranked per
   cluster by the policy's likelihood of the answer), the same ranked by the AM's score of each
   pair instead (`ppo_am_srdata_am`, rehearsal_rank=advantage, kept above an AM score of 0),
   and by the AM's score of the POLICY's own response to each pool prompt, that response being
   rehearsed (`ppo_am_srdata_pol`, rehearsal_rank=advantage_policy: the paper's criterion;
   `ppo_am_srdata_pol_once`: selected once, before PPO, from the SFT actor's responses);
   control: the SFT actor itself (no PPO) and PPO on the exact-match rule
   (`ppo_rule`, the true reward).
`--forgetting` runs only what the forgetting comparison needs (sft, am, ppo_am, ppo_am_sr,
ppo_am_srdata, ppo_am_srdata_am, ppo_am_srdata_pol; no RM scores).
Every actor is then decoded greedily on every prompt of each kind; the table gives per kind the
rule accuracy and the mean score of the greedy answers under the RM and under the AM. Reward
hacking shows as a model score that goes up while the rule accuracy goes down; forgetting as
the held-out multiplication accuracy going down.

Runs one `realloc run` at a time under `nice`, one worker process each (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

KINDS = ("add", "sub", "mul")
FORGETTING = ("sft", "am", "ppo_am", "ppo_am_sr", "ppo_am_srdata", "ppo_am_srdata_am", "ppo_am_srdata_pol",
              "ppo_am_srdata_pol_once")
"""The stages of the forgetting comparison (--forgetting)."""
OPS = {"add": "+", "sub": "-", "mul": "*"}


def kind_prompts(kind: str) -> list[tuple[str, int]]:
    """Every prompt of a kind with a one-digit answer: (prompt, answer)."""
    out = []
    for a in range(10):
        for b in range(10):
            value = {"add": a + b, "sub": a - b, "mul": a * b}[kind]
            if 0 <= value <= 9:
                out.append((f"{a}{OPS[kind]}{b}=", value))
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def make_data(root: Path, seed: int) -> dict[str, str]:
    """sft (all kinds), pref (add strict, sub lenient), ppo prompts (add, sub)."""
    rng = random.Random(seed)
    allp = {k: kind_prompts(k) for k in KINDS}
    sft = [{"prompt": p, "answer": str(v)} for k in KINDS for p, v in allp[k]]
    sft = [rng.choice(sft) for _ in range(1024)]
    pref = []
    for _ in range(1024):
        kind = rng.choice(("add", "sub"))
        p, v = rng.choice(allp[kind])
        if kind == "add":  # strict: the right answer beats a near miss
            near = [w for w in (v - 2, v - 1, v + 1, v + 2) if 0 <= w <= 9]
            chosen, rejected = v, rng.choice(near)
        else:  # lenient: right or off by one beats a far answer
            ok = [w for w in (v - 1, v, v + 1) if 0 <= w <= 9]
            far = [w for w in range(10) if abs(w - v) >= 3]
            chosen, rejected = rng.choice(ok), rng.choice(far)
        pref.append({"prompt": p, "chosen": str(chosen), "rejected": str(rejected)})
    ppo = [{"prompt": p, "answer": str(v)} for k in ("add", "sub") for p, v in allp[k]]
    ppo = [rng.choice(ppo) for _ in range(512)]
    pool = [{"prompt": p, "answer": str(v)} for k in KINDS for p, v in allp[k]]
    return {"sft": write_jsonl(root / "data" / "sft.jsonl", sft),
            "pool": write_jsonl(root / "data" / "sft_pool.jsonl", pool),
            "pref": write_jsonl(root / "data" / "pref.jsonl", pref),
            "ppo": write_jsonl(root / "data" / "ppo.jsonl", ppo)}


def realloc_run(experiment: str, run_dir: Path, overrides: list[str], log: Path) -> None:
    """One `realloc run` (skipped when its models are already saved)."""
    if (run_dir / "models").is_dir():
        return
    exe = Path(sys.executable).parent / "realloc"
    cmd = ["nice", "-n", "5", str(exe), "run", experiment, f"train.run_dir={run_dir}",
           "cluster.devices_per_node=1", *overrides]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=True)


def stage_overrides(data: dict[str, str], seed: int, ppo_iterations: int, root: Path, *,
                    ppo_lr: float = 1e-4) -> dict[str, tuple[str, list[str]]]:
    """name -> (experiment, overrides) of every run of one seed."""
    sft, rm, am = root / "sft", root / "rm", root / "am"
    ppo_common = [
        f"seed={seed}", "data.format=prompts_with_answers", f"data.path={data['ppo']}", "data.generator=null",
        f"models.actor.checkpoint={sft}/models/actor", f"models.ref.checkpoint={sft}/models/actor",
        f"graph.train.lr={ppo_lr}", "graph.train.kl_coef=0.05", f"train.iterations={ppo_iterations}",
    ]
    neural = ["models.reward.rule=null", "models.reward.value_head=true", "graph.reward=null"]
    sr = ["graph.train.rehearsal_coef=0.5", "graph.train.rehearsal_every=10",
          "graph.train.rehearsal_clusters=4", "graph.train.rehearsal_per_cluster=8"]
    sr_once = [o if "rehearsal_every" not in o else f"graph.train.rehearsal_every={ppo_iterations}" for o in sr]
    pref = [f"seed={seed}", f"data.path={data['pref']}", "data.generator=null"]
    return {
        "sft": ("sft_tiny", [f"seed={seed}", f"data.path={data['sft']}", "data.generator=null",
                             "train.iterations=400"]),
        "rm": ("rm_tiny", [*pref, "train.iterations=600"]),
        "am": ("am_tiny", [*pref, "train.iterations=600"]),
        "ppo_rule": ("ppo_tiny", [*ppo_common, f"models.critic.checkpoint={rm}/models/reward"]),
        "ppo_rm": ("ppo_tiny", [*ppo_common, *neural, f"models.reward.checkpoint={rm}/models/reward",
                                f"models.critic.checkpoint={rm}/models/reward"]),
        "ppo_am": ("ppo_tiny", [*ppo_common, *neural, f"models.reward.checkpoint={am}/models/reward",
                                f"models.critic.checkpoint={am}/models/reward", "graph.reward_form=advantage"]),
        "ppo_am_sr": ("ppo_tiny", [*ppo_common, *neural, f"models.reward.checkpoint={am}/models/reward",
                                   f"models.critic.checkpoint={am}/models/reward", "graph.reward_form=advantage", *sr]),
        "ppo_am_srdata": ("ppo_tiny", [*ppo_common, *neural, f"models.reward.checkpoint={am}/models/reward",
                                       f"models.critic.checkpoint={am}/models/reward", "graph.reward_form=advantage",
                                       *sr, "graph.train.rehearsal_source=data",
                                       f"graph.train.rehearsal_path={data['pool']}"]),
        "ppo_am_srdata_am": ("ppo_tiny", [*ppo_common, *neural, f"models.reward.checkpoint={am}/models/reward",
                                          f"models.critic.checkpoint={am}/models/reward", "graph.reward_form=advantage",
                                          *sr, "graph.train.rehearsal_source=data",
                                          f"graph.train.rehearsal_path={data['pool']}",
                                          "graph.train.rehearsal_rank=advantage"]),
        "ppo_am_srdata_pol": ("ppo_tiny", [*ppo_common, *neural, f"models.reward.checkpoint={am}/models/reward",
                                           f"models.critic.checkpoint={am}/models/reward", "graph.reward_form=advantage",
                                           *sr, "graph.train.rehearsal_source=data",
                                           f"graph.train.rehearsal_path={data['pool']}",
                                           "graph.train.rehearsal_rank=advantage_policy"]),
        # the same, selected once before PPO (on the SFT actor's responses), kept for the whole run
        "ppo_am_srdata_pol_once": ("ppo_tiny", [*ppo_common, *neural, f"models.reward.checkpoint={am}/models/reward",
                                                f"models.critic.checkpoint={am}/models/reward",
                                                "graph.reward_form=advantage", *sr_once,
                                                "graph.train.rehearsal_source=data",
                                                f"graph.train.rehearsal_path={data['pool']}",
                                                "graph.train.rehearsal_rank=advantage_policy"]),
    }


def score_model(path: Path, advantage: bool) -> Any:
    """(prompt, response) -> score of a saved value-head model (transformers, CPU): the score
    at the EOS after the response, minus the score at the last prompt token for an AM."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from runtime.data.tokenizer import load_tokenizer

    tok = load_tokenizer("char")
    model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True).eval()

    def score(prompt: str, response: str) -> float:
        p = [tok.bos_id, *tok.encode(prompt)]
        ids = torch.tensor([p + tok.encode(response) + [tok.eos_id]])
        with torch.no_grad():
            s = model.score(model.model(ids).last_hidden_state)[0, :, 0]
        return float(s[-1] - (s[len(p) - 1] if advantage else 0.0))

    return score


def evaluate(actor: Path, scorers: dict[str, Any]) -> dict[str, float]:
    """Per kind: rule accuracy of the greedy answers and their mean score under each scorer."""
    from realloc.pipeline import greedy_responses

    out: dict[str, float] = {}
    for kind in KINDS:
        prompts = kind_prompts(kind)
        answers = greedy_responses(actor, [p for p, _ in prompts], max_new_tokens=2)
        out[f"{kind}/accuracy"] = sum(a.strip() == str(v) for a, (_, v) in zip(answers, prompts)) / len(prompts)
        for name, fn in scorers.items():
            out[f"{kind}/{name}_score"] = sum(fn(p, a) for a, (p, _) in zip(answers, prompts)) / len(prompts)
    return out


def curves(run_dir: Path) -> dict[str, list[float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    keys = ("reward", "actor_train/rehearsal_loss", "actor_train/ref_kl", "actor_train/rehearsal_kept_reward",
            "actor_train/rehearsal_size")
    return {k: [float(r[k]) for r in rows if k in r] for k in keys}


def kept_kinds(run_dir: Path) -> dict[str, int]:
    """How many pairs of each kind the actor rehearsed at its last selection: its kept set in
    the newest checkpoint's engine state, decoded ({} without rehearsal or a checkpoint); and,
    as `KIND_correct`, how many of them have the right answer (the policy's own responses of
    rehearsal_rank=advantage_policy may be wrong)."""
    from runtime.data.tokenizer import load_tokenizer

    metas = sorted((run_dir / "checkpoints").glob("iter_*/meta.json"))
    if not metas:
        return {}
    states = json.loads(metas[-1].read_text()).get("extra", {}).get("engine_state", {})
    seqs = next((st["rehearsal/seqs"] for key, st in states.items() if key.startswith("actor@")
                 and "rehearsal/seqs" in st), None)
    if seqs is None:
        return {}
    tok = load_tokenizer("char")
    out = dict.fromkeys(KINDS, 0) | dict.fromkeys((f"{k}_correct" for k in KINDS), 0)
    for seq in seqs:
        text = tok.decode(seq)
        for kind in KINDS:
            if OPS[kind] in text:
                out[kind] += 1
                out[f"{kind}_correct"] += _correct(text, kind)
    return out


def _correct(text: str, kind: str) -> bool:
    """Whether a decoded `a OP b=answer` pair has the right one-digit answer."""
    head, _, answer = text.partition("=")
    a, _, b = head.partition(OPS[kind])
    try:
        value = {"add": int(a) + int(b), "sub": int(a) - int(b), "mul": int(a) * int(b)}[kind]
    except ValueError:
        return False
    return answer.strip() == str(value)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/am_sr_effect")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ppo-iterations", type=int, default=200)
    ap.add_argument("--ppo-lr", type=float, default=1e-4, help="the actor's PPO learning rate")
    ap.add_argument("--only", nargs="*", default=None, help="run only these stages (sft rm am ppo_rule ...)")
    ap.add_argument("--forgetting", action="store_true",
                    help=f"run only the forgetting comparison's stages ({' '.join(FORGETTING)})")
    args = ap.parse_args(argv)
    if args.forgetting:
        args.only = [n for n in FORGETTING if args.only is None or n in args.only]
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    torch.set_num_threads(1)  # the evaluation's tiny forwards: threads only contend on a shared machine
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    saved = out / "results.json"
    results: dict[str, Any] = json.loads(saved.read_text()) if saved.is_file() else {}
    for seed in args.seeds:
        root = out / f"seed{seed}"
        data = make_data(root, seed)
        stages = stage_overrides(data, seed, args.ppo_iterations, root, ppo_lr=args.ppo_lr)
        for name, (exp, ovs) in stages.items():
            if args.only is None or name in args.only:
                print(f"seed {seed}: {name}", flush=True)
                realloc_run(exp, root / name, ovs, root / "logs" / f"{name}.log")
        scorers = {key: score_model(root / key / "models" / "reward", advantage=key == "am")
                   for key in ("rm", "am") if (root / key / "models" / "reward").is_dir()}
        for name in ("sft", "ppo_rule", "ppo_rm", "ppo_am", "ppo_am_sr", "ppo_am_srdata", "ppo_am_srdata_am",
                     "ppo_am_srdata_pol", "ppo_am_srdata_pol_once"):
            actor = root / name / "models" / "actor"
            if actor.is_dir():
                res = evaluate(actor, scorers)
                if name != "sft":
                    res["curves"] = curves(root / name)
                    if kept := kept_kinds(root / name):
                        res["kept_kinds"] = kept
                results[f"seed{seed}/{name}"] = res
        (out / "results.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    plot(results, out / "curves.png")
    plot_forgetting(results, out / "forgetting.png")
    return 0


FORGETTING_RUNS = ("ppo_am", "ppo_am_srdata", "ppo_am_srdata_am", "ppo_am_srdata_pol", "ppo_am_srdata_pol_once")
"""The PPO runs the forgetting figure compares: no rehearsal, data rehearsal ranked by
likelihood, by the AM's score of the reference pair, by the AM's score of the policy's response
(reselected every 10 iterations, or selected once before PPO)."""


def plot_forgetting(results: dict[str, Any], path: Path) -> None:
    """Held-out multiplication accuracy per seed of the SFT actor and of each FORGETTING_RUNS
    run, and their KL to the SFT reference and rehearsal loss over the PPO iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seeds = sorted({name.split("/")[0] for name in results}, key=lambda s: int(s[4:]) if s[4:].isdigit() else 0)
    runs = [r for r in ("sft", *FORGETTING_RUNS) if any(f"{s}/{r}" in results for s in seeds)]
    if len(runs) < 2:
        return
    colours = {"sft": "black", "ppo_am": "tab:blue", "ppo_am_srdata": "tab:purple", "ppo_am_srdata_am": "tab:orange",
               "ppo_am_srdata_pol": "tab:brown", "ppo_am_srdata_pol_once": "tab:olive"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.8 / len(runs)
    for j, run in enumerate(runs):
        xs = [i + j * width for i, s in enumerate(seeds) if f"{s}/{run}" in results]
        ys = [results[f"{s}/{run}"]["mul/accuracy"] for s in seeds if f"{s}/{run}" in results]
        axes[0].bar(xs, ys, width, color=colours[run], label=run)
        for k, seed in enumerate(seeds):
            c = results.get(f"{seed}/{run}", {}).get("curves")
            if not c:
                continue
            style = "-" if k == 0 else "--"
            axes[1].plot(c["actor_train/ref_kl"], style, color=colours[run], lw=0.8, label=f"{seed}/{run}")
            if c.get("actor_train/rehearsal_loss"):
                axes[2].plot(c["actor_train/rehearsal_loss"], style, color=colours[run], lw=0.8, label=f"{seed}/{run}")
    axes[0].set_xticks([i + 0.4 - width / 2 for i in range(len(seeds))], seeds)
    axes[0].set_title("held-out multiplication accuracy (greedy)")
    axes[0].set_ylim(0, 1.05)
    axes[1].set_title("KL(actor || SFT reference)")
    axes[2].set_title("rehearsal loss (unweighted)")
    axes[2].set_yscale("log")
    for ax in axes[1:]:
        ax.set_xlabel("PPO iteration")
    for ax in axes:
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def plot(results: dict[str, Any], path: Path) -> None:
    """Training curves of every PPO run: its reward model's score of the rollouts and the KL
    to the reference (one line per run and seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    colours = {"ppo_rule": "grey", "ppo_rm": "tab:red", "ppo_am": "tab:blue", "ppo_am_sr": "tab:green",
               "ppo_am_srdata": "tab:purple", "ppo_am_srdata_am": "tab:orange", "ppo_am_srdata_pol": "tab:brown",
               "ppo_am_srdata_pol_once": "tab:olive"}
    for name, res in results.items():
        run = name.split("/")[-1]
        if "curves" not in res:
            continue
        style = "-" if name.startswith("seed1") else "--"
        c = res["curves"]
        axes[0 if run != "ppo_rule" else 2].plot(c["reward"], style, color=colours[run], label=name, lw=1)
        axes[1].plot(c["actor_train/ref_kl"], style, color=colours[run], label=name, lw=1)
    axes[0].set_title("score of the rollouts (RM: raw, AM: advantage)")
    axes[1].set_title("KL(actor || SFT reference)")
    axes[2].set_title("control: exact-match reward")
    for ax in axes:
        ax.set_xlabel("PPO iteration")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def table(results: dict[str, Any]) -> str:
    """Markdown: one row per run, per kind accuracy and scores."""
    head = "| run | " + " | ".join(f"{k} acc | {k} RM | {k} AM" for k in KINDS) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(KINDS))]
    for name, res in results.items():
        cells = [" | ".join([f"{res[f'{k}/accuracy']:.2f}", *(f"{res[key]:+.2f}" if key in res else "-" for key in
                                                               (f"{k}/rm_score", f"{k}/am_score"))]) for k in KINDS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
