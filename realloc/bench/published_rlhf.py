"""Our estimates at published RLHF settings, with the presets before and after issue #14.

    PYTHONPATH=$PWD python experiments/bench/published_rlhf.py [--budget 2] [--json out.json]

For each setting (models, GPUs, batch and lengths of a published system's PPO
experiments, as docs/published-rlhf.md describes them and their sources), the planner
searches a plan with the analytic cost model and prints the estimated seconds per
iteration and tokens per second (prompt + response tokens of every sequence, per
iteration), twice: with the GPU presets as they were before this work (GEMM efficiency
0.65 A100 / 0.55 H100, decode at 80% of HBM bandwidth, no per-call, per-micro-batch or
per-decode-step costs) and with today's (docs/gpu-presets.md); settings whose published GPU
is unsure are also estimated on the presets in `also_on`. The published measured
throughput is validation only and lives in the doc, never here; `real_flops_per_iteration`
is ReaL's FLOP count, which the doc uses to turn ReaL's PetaFLOP/s figure into seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from cost_model.estimator import AnalyticCostModel
from cost_model.hardware import HardwareSpec, preset
from graph.dataflow import DataflowGraph
from graph.placement.layout import Cluster
from graph.spec import ModelArch, ModelSpec
from planner.make import make_plan
from planner.options import PlanOptions


def _llama(layers: int, hidden: int, ffn: int, heads: int, kv: int) -> ModelArch:
    return ModelArch(family="llama", num_layers=layers, hidden_size=hidden, ffn_hidden_size=ffn,
                     num_heads=heads, num_kv_heads=kv, vocab_size=32000, max_position_embeddings=4096)


def _opt(layers: int, hidden: int, heads: int) -> ModelArch:
    """OPT sizes as a GPT-2-family model (learned positions, GELU MLP of 4 x hidden)."""
    return ModelArch(family="gpt2", num_layers=layers, hidden_size=hidden, ffn_hidden_size=4 * hidden,
                     num_heads=heads, num_kv_heads=heads, vocab_size=50272, max_position_embeddings=2048)


ARCH = {
    "llama2-7b": _llama(32, 4096, 11008, 32, 32), "llama2-13b": _llama(40, 5120, 13824, 40, 40),
    "llama2-70b": _llama(80, 8192, 28672, 64, 8), "opt-13b": _opt(40, 5120, 40), "opt-350m": _opt(24, 1024, 16),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setting:
    """One published PPO setting (see docs/published-rlhf.md for the source of each field)."""

    name: str
    system: str
    actor: str
    critic: str
    gpus: int
    hardware: str
    batch: int
    prompt_len: int
    response_len: int
    also_on: tuple[str, ...] = ()
    """Other presets to estimate the setting on (today's presets only), where the published hardware is unsure."""


SETTINGS = (
    # DeepSpeed-Chat blog/paper Table 1: step 3, 256-token prompts and 256-token answers; the global batch is
    # "the largest that fits, at most 1024 pairs" and not stated per row, so 256 here (see the doc).
    Setting(name="DeepSpeed-Chat, OPT-13B + 350M, 8 A100-80G", system="DeepSpeed-Chat", actor="opt-13b",
            critic="opt-350m", gpus=8, hardware="a100-80g", batch=256, prompt_len=256, response_len=256),
    # The same table, 64 x A100-80G: 1.25 h; at 64 GPUs the 1024-pair cap is 16 per GPU.
    Setting(name="DeepSpeed-Chat, OPT-13B + 350M, 64 A100-80G", system="DeepSpeed-Chat", actor="opt-13b",
            critic="opt-350m", gpus=64, hardware="a100-80g", batch=1024, prompt_len=256, response_len=256),
    # OpenRLHF README "Performance" table: 1024 prompts, 1 PPO epoch, 16 A800-80GB (a100-80g is the nearest
    # preset); lengths from the repository's 7B Ray PPO script of the time (max 1024 + 1024).
    Setting(name="OpenRLHF, LLaMA-2 7B + 7B, 16 A100-80G", system="OpenRLHF", actor="llama2-7b",
            critic="llama2-7b", gpus=16, hardware="a100-80g", batch=1024, prompt_len=1024, response_len=1024),
    Setting(name="HybridFlow, LLaMA-2 13B + 13B, 32 A100-80G", system="HybridFlow (verl)", actor="llama2-13b",
            critic="llama2-13b", gpus=32, hardware="a100-80g", batch=1024, prompt_len=1024, response_len=1024),
    # ReaL(HF) weak-scaling figure: 2**17 tokens per iteration, 128-token prompts, batch 2**17 // (128 + gen).
    # The GPU type is not confirmed from a stored source (see the doc): also estimated on the A100 preset.
    Setting(name="ReaLHF, LLaMA-2 7B + 7B, 8 H100, gen 896", system="ReaLHF", actor="llama2-7b",
            critic="llama2-7b", gpus=8, hardware="h100-80g", batch=128, prompt_len=128, response_len=896,
            also_on=("a100-80g",)),
    Setting(name="ReaLHF, LLaMA-2 7B + 7B, 8 H100, gen 128", system="ReaLHF", actor="llama2-7b",
            critic="llama2-7b", gpus=8, hardware="h100-80g", batch=512, prompt_len=128, response_len=128,
            also_on=("a100-80g",)),
    # "Scale Actor": actor and reference 70B, critic and reward 7B, at 64 GPUs.
    Setting(name="ReaLHF, LLaMA-2 70B + 7B, 64 H100, gen 896", system="ReaLHF", actor="llama2-70b",
            critic="llama2-7b", gpus=64, hardware="h100-80g", batch=128, prompt_len=128, response_len=896,
            also_on=("a100-80g",)),
    Setting(name="ReaLHF, LLaMA-2 70B + 7B, 64 H100, gen 128", system="ReaLHF", actor="llama2-70b",
            critic="llama2-7b", gpus=64, hardware="h100-80g", batch=512, prompt_len=128, response_len=128,
            also_on=("a100-80g",)),
    # "Scale Both": all four models 70B, at 128 GPUs (the docs' full-training-time table uses gen 128).
    Setting(name="ReaLHF, LLaMA-2 70B x4, 128 H100, gen 128", system="ReaLHF", actor="llama2-70b",
            critic="llama2-70b", gpus=128, hardware="h100-80g", batch=512, prompt_len=128, response_len=128,
            also_on=("a100-80g",)),
)


def real_flops_per_iteration(actor: str, critic: str, batch: int, prompt_len: int, gen_len: int) -> float:
    """FLOPs of one PPO iteration as ReaL(HF) counts them, to turn its PetaFLOP/s figure into seconds.

    ReaL's throughput figure plots FLOPs / iteration time, with FLOPs counted as in its
    repository's plotting script (docs/published-rlhf.md has the source): dense projections
    (4 h^2 per token and layer, no grouped-query saving), 2 s h attention per token, 3 h f
    MLP, 2 h V head, all x2 for multiply-add; generation = a prompt forward plus one token
    per step attending to the prefix; forwards of critic, reference (actor-sized) and reward
    (critic-sized) over prompt + generation; training of actor and critic at 4 forwards
    (backward x2 plus recomputation). Every sequence has exactly prompt_len + gen_len tokens.
    """

    def dims(name: str) -> tuple[int, int, int, int]:
        a = ARCH[name]
        return a.num_layers, a.hidden_size, a.ffn_hidden_size, a.vocab_size

    def forward(name: str, seqlen: int) -> float:
        layers, h, f, v = dims(name)
        tokens = batch * seqlen
        attn = batch * seqlen**2 * h
        return 2 * layers * (4 * tokens * h * h + 2 * attn + 3 * tokens * h * f) + 4 * tokens * v * h

    layers, h, f, v = dims(actor)
    # step i attends to prompt_len + i cached tokens plus itself, for each of `batch` sequences
    attended = batch * (gen_len * (prompt_len + 1) + gen_len * (gen_len - 1) // 2)
    decode = (2 * layers * (gen_len * batch * (4 * h * h + 3 * h * f) + 2 * attended * h)
              + 4 * gen_len * batch * v * h)
    seq = prompt_len + gen_len
    return (forward(actor, prompt_len) + decode + forward(critic, seq) + forward(actor, seq)
            + forward(critic, seq) + 4 * (forward(actor, seq) + forward(critic, seq)))


def old_preset(name: str) -> HardwareSpec:
    """The preset as it was before issue #14 (peak-based efficiencies, no fixed costs)."""
    hw = preset(name)
    return hw.replace(matmul_efficiency=0.65 if name.startswith("a100") else 0.55, memory_efficiency=0.8,
                      layer_overhead_s=40e-6, micro_batch_overhead_s=0.0, decode_step_overhead_s=0.0,
                      decode_sample_overhead_s=0.0, train_step_overhead_s=0.0, call_overhead_s={},
                      call_seq_overhead_s={}, call_dp_overhead_s={}, realloc_overhead_s=0.0,
                      data_overhead_s=0.0)


def graph(s: Setting) -> DataflowGraph:
    from graph.dataset_keys import dataset_keys
    from graph.templates import TemplateParams, build_template

    actor, critic = ARCH[s.actor], ARCH[s.critic]
    models = {"actor": ModelSpec(role="actor", arch=actor, trainable=True),
              "critic": ModelSpec(role="critic", arch=critic, trainable=True, value_head=True),
              "ref": ModelSpec(role="ref", arch=actor),
              "reward": ModelSpec(role="reward", arch=critic, value_head=True)}
    params = TemplateParams(batch_size=s.batch, prompt_len=s.prompt_len, response_len=s.response_len,
                            generate={"max_new_tokens": s.response_len}, train={"mini_batches": 4},
                            critic_train={"mini_batches": 4})
    return DataflowGraph(models=models.values(), calls=build_template("ppo", params, models),
                         dataset_keys=dataset_keys("prompts"))


def estimate(s: Setting, hardware: HardwareSpec, budget: float) -> dict[str, Any]:
    cluster = Cluster(num_nodes=max(1, s.gpus // 8), devices_per_node=min(8, s.gpus))
    cost = AnalyticCostModel(hardware, cluster)
    try:
        result = make_plan(graph(s), cost, PlanOptions(time_budget_s=budget, compare_heuristics=False))
    except ValueError as exc:
        return {"iteration_s": None, "tokens_per_s": None, "tokens_per_s_per_gpu": None, "generate_s": None,
                "no_plan": str(exc).split(";")[0]}
    it = result.plan.iteration_time_s or float("nan")
    tokens = s.batch * (s.prompt_len + s.response_len)
    gen = next(c for c in result.plan.calls if c.name == "actor_gen")
    return {"iteration_s": round(it, 2), "tokens_per_s": round(tokens / it), "tokens_per_s_per_gpu": round(tokens / it / s.gpus),
            "generate_s": round(gen.time_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=2.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    print(f"1-minute load average: {os.getloadavg()[0]:.2f} (estimates are deterministic; load only slows the search)")
    for s in SETTINGS:
        t0 = time.perf_counter()
        before = estimate(s, old_preset(s.hardware), args.budget)
        after = estimate(s, preset(s.hardware), args.budget)
        also = {hw: estimate(s, preset(hw), args.budget) for hw in s.also_on}
        rows.append({"setting": s.name, **dataclasses.asdict(s), "before": before, "after": after,
                     **({"after_on": also} if also else {})})
        if after.get("no_plan") or before.get("no_plan"):
            print(f"{s.name}: no feasible plan: {after.get('no_plan') or before.get('no_plan')}", flush=True)
            continue
        print(f"{s.name}: before {before['iteration_s']} s/iter ({before['tokens_per_s']} tok/s), "
              f"now {after['iteration_s']} s/iter ({after['tokens_per_s']} tok/s, "
              f"{after['tokens_per_s_per_gpu']} per GPU; generation {after['generate_s']} s)"
              + "".join(f"; on {hw}: {e['iteration_s']} s/iter ({e['tokens_per_s']} tok/s)"
                        for hw, e in also.items())
              + f" [{time.perf_counter() - t0:.0f} s]", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
