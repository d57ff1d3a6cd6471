"""The GPU presets against published component measurements (not end-to-end RLHF numbers).

    PYTHONPATH=$PWD python experiments/bench/gpu_components.py [--json out.json] [--fit]

Each row is one published, component-level measurement next to what the analytic cost
model (`cost_model.estimator` with a `cost_model.hardware` preset) estimates for the same
work:

- training MFU of Megatron-LM's GPT runs on A100 (Korthikanti et al. 2022, arXiv
  2205.05198, the MFU column of their end-to-end table: selective recomputation and
  sequence parallelism), and of a 7B model trained data-parallel on 8 A100s (MosaicML
  llm-foundry's benchmark table);
- decode memory-bandwidth utilisation (MBU) of a 7B model at batch 1 on one A100
  (Databricks/MosaicML, "LLM Inference Performance Engineering: Best Practices", 2023).

The published values are given as ranges where memory of the exact figure is uncertain;
`docs/gpu-presets.md` says which. With `--fit` the script picks the presets'
`matmul_efficiency` (A100) so that the estimated MFU of the Megatron runs matches the
middle of the published ones (least squares on relative error): fitting on component
measurements only. End-to-end RLHF throughput of published systems is the validation
(docs/published-rlhf.md), never an input.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from cost_model.estimator import AnalyticCostModel, mfu
from cost_model.hardware import HardwareSpec, preset
from graph.catalog import SFTArgs
from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.spec import Call, CallKind, ModelArch, ModelSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainRun:
    """One published Megatron-LM training configuration and its measured MFU."""

    name: str
    source: str
    layers: int
    hidden: int
    heads: int
    seq: int
    gpus: int
    tp: int
    pp: int
    global_batch: int
    micro_batch: int
    mfu_low: float
    mfu_high: float
    recompute: bool = False
    """Full recomputation (Narayanan et al.; their FLOP rate then counts 4 passes)."""


# GPT models (ffn = 4 x hidden, vocabulary 51200). Korthikanti et al. 2022, end-to-end
# table: MFU with selective recomputation + sequence parallelism, A100 80GB (Selene).
# The values are recalled to about +-1 point (the paper lists 41.5, 51.4, 56.0, 56.3%);
# configurations follow their Table 3 (TP 8; PP 1, 8, 35, 64; global batch = GPUs x ... ).
RUNS = (
    TrainRun(name="GPT 22B, 8 GPUs", source="Korthikanti et al. 2022", layers=48, hidden=6144, heads=64,
             seq=2048, gpus=8, tp=8, pp=1, global_batch=4, micro_batch=4, mfu_low=0.405, mfu_high=0.425),
    TrainRun(name="GPT 175B, 64 GPUs", source="Korthikanti et al. 2022", layers=96, hidden=12288, heads=96,
             seq=2048, gpus=64, tp=8, pp=8, global_batch=64, micro_batch=1, mfu_low=0.504, mfu_high=0.524),
    TrainRun(name="GPT 530B, 280 GPUs", source="Korthikanti et al. 2022", layers=105, hidden=20480, heads=128,
             seq=2048, gpus=280, tp=8, pp=35, global_batch=280, micro_batch=1, mfu_low=0.55, mfu_high=0.57),
    TrainRun(name="GPT 1T, 512 GPUs", source="Korthikanti et al. 2022", layers=128, hidden=25600, heads=160,
             seq=2048, gpus=512, tp=8, pp=64, global_batch=512, micro_batch=1, mfu_low=0.553, mfu_high=0.573),
    # MosaicML llm-foundry, scripts/train/benchmarking/README.md: a 7B model at seq 2048 on 8 x
    # A100-80GB, no activation checkpointing: about 64% MFU (the table's row, recalled to +-2 points).
    TrainRun(name="7B, 8 GPUs, data parallel", source="MosaicML llm-foundry benchmarks", layers=32,
             hidden=4096, heads=32, seq=2048, gpus=8, tp=1, pp=1, global_batch=256, micro_batch=2,
             mfu_low=0.62, mfu_high=0.66),
)

# Databricks/MosaicML 2023: MBU of MPT-7B at batch 1 on one A100-40GB, about 60% (range kept wide).
DECODE_MBU = {"name": "7B decode, batch 1, 1 x A100-40GB", "source": "Databricks/MosaicML 2023",
              "mbu_low": 0.5, "mbu_high": 0.7}


def gpt(layers: int, hidden: int, heads: int) -> ModelArch:
    """A GPT-shaped model as the estimator's llama family (no gating: ffn_hidden = 4h / 1.5 keeps
    the MLP's FLOPs of a 4h GELU MLP under a SwiGLU's three matrices)."""
    return ModelArch(family="llama", num_layers=layers, hidden_size=hidden,
                     ffn_hidden_size=int(4 * hidden * 2 / 3) // 64 * 64, num_heads=heads, num_kv_heads=heads,
                     vocab_size=51200, max_position_embeddings=2048)


def train_mfu(run: TrainRun, hardware: HardwareSpec) -> float:
    """The estimator's MFU of one optimizer step of `run` (PaLM convention, model FLOPs)."""
    arch = gpt(run.layers, run.hidden, run.heads)
    dp = run.gpus // (run.tp * run.pp)
    cluster = Cluster(num_nodes=max(1, run.gpus // 8), devices_per_node=min(8, run.gpus))
    cost = AnalyticCostModel(hardware, cluster, recompute=run.recompute)
    call = Call(name="train", model="m", kind=CallKind.TRAIN, interface="sft", args=SFTArgs(lr=1e-5),
                batch_size=run.global_batch, prompt_len=run.seq // 2, response_len=run.seq - run.seq // 2,
                micro_batches=1, inputs=("seq",), outputs=())
    layout = Layout(mesh=DeviceMesh.span(0, run.gpus), dp=dp, tp=run.tp, pp=run.pp,
                    micro_batches=run.global_batch // dp // run.micro_batch)
    model = ModelSpec(role="m", arch=arch, trainable=True)
    est = cost.call_estimate(call, model, layout)
    return mfu(call, model, est, layout, hardware)


def decode_mbu(hardware: HardwareSpec) -> float:
    """Estimated MBU of decoding a 7B model (LLaMA-2-7B shapes) at batch 1 on one GPU:
    weight bytes per step / (step time x peak bandwidth)."""
    arch = ModelArch(family="llama", num_layers=32, hidden_size=4096, ffn_hidden_size=11008, num_heads=32,
                     num_kv_heads=32, vocab_size=32000, max_position_embeddings=4096)
    from graph.catalog import GenerateArgs

    cost = AnalyticCostModel(hardware, Cluster(num_nodes=1, devices_per_node=8))
    steps = 256
    call = Call(name="gen", model="m", kind=CallKind.GENERATE, interface="generate",
                args=GenerateArgs(max_new_tokens=steps), batch_size=1, prompt_len=128, response_len=steps,
                max_new_tokens=steps, inputs=("prompts",), outputs=("seq",))
    layout = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1)
    model = ModelSpec(role="m", arch=arch)
    est = cost.call_estimate(call, model, layout)
    weights = 2.0 * model.num_params
    per_step = est.breakdown["decode_s"] / (steps - 1)
    return weights / (per_step * hardware.memory_bandwidth)


def rows(hardware: HardwareSpec) -> list[dict[str, Any]]:
    out = []
    for run in RUNS:
        est = train_mfu(run, hardware)
        mid = (run.mfu_low + run.mfu_high) / 2
        out.append({"what": f"training MFU, {run.name}", "source": run.source,
                    "published": [run.mfu_low, run.mfu_high], "estimated": round(est, 3),
                    "ratio_to_mid": round(est / mid, 3)})
    est = decode_mbu(preset("a100-40g") if hardware.name.startswith("a100") else hardware)
    mid = (DECODE_MBU["mbu_low"] + DECODE_MBU["mbu_high"]) / 2
    out.append({"what": f"decode MBU, {DECODE_MBU['name']}", "source": DECODE_MBU["source"],
                "published": [DECODE_MBU["mbu_low"], DECODE_MBU["mbu_high"]], "estimated": round(est, 3),
                "ratio_to_mid": round(est / mid, 3)})
    return out


def fit_matmul_efficiency(hardware: HardwareSpec) -> float:
    """The matmul efficiency whose estimated MFUs best match the published ones (golden section)."""
    def loss(eff: float) -> float:
        hw = hardware.replace(matmul_efficiency=eff)
        return sum(math.log(train_mfu(r, hw) / ((r.mfu_low + r.mfu_high) / 2)) ** 2 for r in RUNS)

    lo, hi = 0.3, 1.0
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(40):
        if loss(a) < loss(b):
            hi, b = b, a
            a = hi - g * (hi - lo)
        else:
            lo, a = a, b
            b = lo + g * (hi - lo)
    return (lo + hi) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="a100-80g")
    parser.add_argument("--fit", action="store_true", help="fit matmul_efficiency to the training MFUs")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    hardware = preset(args.preset)
    result: dict[str, Any] = {"preset": args.preset, "rows": rows(hardware)}
    if args.fit:
        result["fitted_matmul_efficiency"] = round(fit_matmul_efficiency(hardware), 3)
    for r in result["rows"]:
        lo, hi = r["published"]
        print(f"{r['what']:<52} published {lo:.3f}-{hi:.3f}  estimated {r['estimated']:.3f}  "
              f"({r['ratio_to_mid']:.2f}x the middle)  [{r['source']}]")
    if args.fit:
        print(f"fitted matmul_efficiency for {args.preset}: {result['fitted_matmul_efficiency']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
