"""Our estimates at published RLHF settings, with the presets before and after issue #14.

    PYTHONPATH=$PWD python experiments/bench/published_rlhf.py [--budget 2] [--json out.json]

For each setting (models, GPUs, batch and lengths of a published system's PPO
experiments, as docs/published-rlhf.md describes them and their sources), the planner
searches a plan with the analytic cost model and prints the estimated seconds per
iteration and tokens per second (prompt + response tokens of every sequence, per
iteration), twice: with the GPU presets as they were before this work (GEMM efficiency
0.65 A100 / 0.55 H100, decode at 80% of HBM bandwidth, no per-call, per-micro-batch or
per-decode-step costs) and with today's (docs/gpu-presets.md). The published measured
throughput is validation only and lives in the doc, never here.
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


SETTINGS = (
    Setting(name="DeepSpeed-Chat, OPT-13B + 350M, 8 A100-80G", system="DeepSpeed-Chat", actor="opt-13b",
            critic="opt-350m", gpus=8, hardware="a100-80g", batch=256, prompt_len=256, response_len=256),
    Setting(name="OpenRLHF, LLaMA-2 7B + 7B, 16 A100-80G", system="OpenRLHF", actor="llama2-7b",
            critic="llama2-7b", gpus=16, hardware="a100-80g", batch=1024, prompt_len=1024, response_len=1024),
    Setting(name="HybridFlow, LLaMA-2 13B + 13B, 32 A100-80G", system="HybridFlow (verl)", actor="llama2-13b",
            critic="llama2-13b", gpus=32, hardware="a100-80g", batch=1024, prompt_len=1024, response_len=1024),
    Setting(name="ReaLHF, LLaMA-2 7B + 7B, 8 H100", system="ReaLHF", actor="llama2-7b", critic="llama2-7b",
            gpus=8, hardware="h100-80g", batch=512, prompt_len=128, response_len=896),
    Setting(name="ReaLHF, LLaMA-2 70B + 7B, 128 H100", system="ReaLHF", actor="llama2-70b", critic="llama2-7b",
            gpus=128, hardware="h100-80g", batch=512, prompt_len=128, response_len=896),
)


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
        rows.append({"setting": s.name, **dataclasses.asdict(s), "before": before, "after": after})
        if after.get("no_plan") or before.get("no_plan"):
            print(f"{s.name}: no feasible plan: {after.get('no_plan') or before.get('no_plan')}", flush=True)
            continue
        print(f"{s.name}: before {before['iteration_s']} s/iter ({before['tokens_per_s']} tok/s), "
              f"now {after['iteration_s']} s/iter ({after['tokens_per_s']} tok/s, "
              f"{after['tokens_per_s_per_gpu']} per GPU; generation {after['generate_s']} s) "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
