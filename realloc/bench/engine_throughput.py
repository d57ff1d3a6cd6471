"""Train-step and generation throughput of the Megatron engine vs plain transformers.

Single process, same model, same run, the same torch threads for both (`--threads`, default
all cores); the rows alternate engine and transformers `--rounds` times and report the median
tokens/s of each and their ratio (and the min-max of the per-round ratios), for a train step, generation (greedy, a fixed number of new
tokens) and log-probs (a forward pass); MFU on CUDA with --peak-tflops. `--profile N` prints
the engine's N most expensive functions per row (cProfile, cumulative time). Examples:

    python experiments/bench/engine_throughput.py                 # tiny random llama
    python experiments/bench/engine_throughput.py --model smollm2-body  # SmolLM2-135M's shape, char vocab
    python experiments/bench/engine_throughput.py --model smollm2  # needs the smollm2 extra
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

CLOCK = {"clock": time.perf_counter}
"""Wall time, or this process's CPU time (`--cpu-time`: robust to other load with 1 thread)."""


def _timeit(fn: Callable[[], object], repeats: int, *, warm: bool = True) -> float:
    if warm:
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    clock = CLOCK["clock"]
    start = clock()
    for _ in range(repeats):
        fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return (clock() - start) / repeats


def _arch_and_ckpt(args: argparse.Namespace) -> tuple[object, str | None]:
    from graph.spec import ModelArch

    if args.model == "smollm2":
        from runtime.engine.real_models import smollm2_checkpoint

        ckpt = smollm2_checkpoint()
        return ModelArch.from_config_file(ckpt), str(ckpt)
    if args.model == "smollm2-body":  # the peer bench's 135M body: SmolLM2's transformer, a 64-token vocabulary
        return ModelArch(family="llama", num_layers=30, hidden_size=576, ffn_hidden_size=1536, num_heads=9,
                         num_kv_heads=3, vocab_size=64, max_position_embeddings=2048), None
    return ModelArch(family="llama", num_layers=args.layers, hidden_size=args.hidden,
                     ffn_hidden_size=int(args.hidden * 8 / 3) // 8 * 8, num_heads=args.hidden // 32,
                     num_kv_heads=max(1, args.hidden // 64), vocab_size=args.vocab,
                     max_position_embeddings=1024), None


def _hf_model(arch: object, engine: object) -> torch.nn.Module:
    import transformers

    from runtime.engine.convert import megatron_to_hf

    config = transformers.AutoConfig.for_model(**arch.to_hf_config())
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.load_state_dict(megatron_to_hf(engine.global_state(), arch, value_head=False), strict=False)
    model.tie_weights()
    return model.to(engine.module.embedding.word_embeddings.weight.device, engine.dtype)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["tiny", "smollm2-body", "smollm2"], default="tiny")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--prompt", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3, help="alternations of engine and transformers per row")
    p.add_argument("--threads", type=int, default=0, help="torch threads for both (default: all cores)")
    p.add_argument("--cpu-time", action="store_true",
                   help="time with this process's CPU time instead of wall time (use with --threads 1 on a busy machine)")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON (the bench's engine section reads it)")
    p.add_argument("--profile", type=int, default=0, metavar="N", help="print the engine's top N functions per row")
    p.add_argument("--peak-tflops", type=float, default=0.0, help="device peak, for MFU")
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    threads = args.threads or os.cpu_count() or 1
    if args.cpu_time:
        CLOCK["clock"] = time.process_time
    torch.set_num_threads(threads)

    import torch.distributed as dist

    from graph.catalog import GenerateArgs, LogprobsArgs, SFTArgs
    from graph.placement.layout import DeviceMesh, Layout
    from graph.spec import ModelSpec
    from runtime.data.batch import SeqBatch
    from runtime.engine import platform
    from runtime.engine.model_engine import build_engine
    from runtime.interfaces import run_interface

    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29631")
    platform.apply_platform_patches()
    dist.init_process_group(platform.backend(), rank=0, world_size=1)
    arch, ckpt = _arch_and_ckpt(args)
    layout = Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1, micro_batches=1)
    engine = build_engine(ModelSpec(role="actor", arch=arch, checkpoint=ckpt, trainable=True), layout, 0)
    hf = _hf_model(arch, engine)
    dev = platform.device()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, arch.vocab_size, (args.batch, args.seq), generator=g)
    batch = SeqBatch.from_lists(ids.tolist(), [args.prompt] * args.batch)
    sft = SFTArgs(lr=1e-5)

    opt = torch.optim.AdamW(hf.parameters(), lr=1e-5)

    def hf_train() -> None:
        hf.train()
        logits = hf(ids.to(dev)).logits[:, args.prompt - 1:-1].float()
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 ids[:, args.prompt:].reshape(-1).to(dev))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        opt.step()
        opt.zero_grad()

    prompts = SeqBatch.from_lists(ids[:, : args.prompt].tolist(), [args.prompt] * args.batch)
    gen_args = GenerateArgs(max_new_tokens=args.new_tokens, greedy=True)

    def hf_generate() -> None:
        hf.eval()
        with torch.no_grad():
            hf.generate(ids[:, : args.prompt].to(dev), max_new_tokens=args.new_tokens,
                        min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=0)

    def hf_logprobs() -> None:
        hf.eval()
        with torch.no_grad():
            logits = hf(ids.to(dev)).logits[:, :-1].float()
            torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None].to(dev))

    rows: list[tuple[str, float, float]] = []
    spread: list[tuple[list[float], list[float], list[float]]] = []
    train_tokens = args.batch * args.seq
    gen_tokens = args.batch * args.new_tokens
    for what, tokens, eng_fn, hf_fn in (
        ("train step", train_tokens, lambda: run_interface("sft", engine, batch, sft), hf_train),
        ("generate", gen_tokens, lambda: run_interface("generate", engine, prompts, gen_args), hf_generate),
        ("log-probs", train_tokens, lambda: run_interface("logprobs", engine, batch, LogprobsArgs()), hf_logprobs),
    ):
        t_eng, t_hf = [], []
        eng_fn()
        with platform.without_cuda_rewrites():  # plain torch for the baseline
            hf_fn()
        for _ in range(args.rounds):
            t_eng.append(_timeit(eng_fn, args.repeats, warm=False))
            with platform.without_cuda_rewrites():
                t_hf.append(_timeit(hf_fn, args.repeats, warm=False))
        rows.append((what, tokens / statistics.median(t_eng), tokens / statistics.median(t_hf)))
        spread.append(([tokens / t for t in t_eng], [tokens / t for t in t_hf],
                       [h / e for e, h in zip(t_eng, t_hf)]))  # per round: the pair timed back to back
        if args.profile:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(_timeit, eng_fn, args.repeats, warm=False)
            print(f"--- engine {what}: top {args.profile} by cumulative time")
            pstats.Stats(prof).sort_stats("cumulative").print_stats(args.profile)
    n = arch.num_params()
    print(f"model {args.model}: {n / 1e6:.1f} M params, device {dev}, dtype {engine.dtype}, "
          f"batch {args.batch} x seq {args.seq} (prompt {args.prompt}, new {args.new_tokens}), {threads} threads "
          f"each, median of {args.rounds} alternations of {args.repeats} repeats, "
          f"{'CPU' if args.cpu_time else 'wall'} time; 1-minute load {os.getloadavg()[0]:.1f}")
    print(f"{'':12s} {'engine tok/s':>14s} {'HF tok/s':>12s} {'engine/HF':>10s}   per-round engine/HF min-max")
    for (what, eng, ref), (_, _, ratios) in zip(rows, spread):
        line = f"{what:12s} {eng:14.1f} {ref:12.1f} {eng / ref:10.2f}   {min(ratios):.2f}-{max(ratios):.2f}"
        if args.peak_tflops:
            flops = (6 if what == "train step" else 2) * n * eng
            line += f"   MFU {flops / (args.peak_tflops * 1e12):.1%}"
        print(line)
    if args.json:
        import json
        from pathlib import Path

        Path(args.json).write_text(json.dumps({
            "model": args.model, "params_m": round(n / 1e6, 1), "threads": threads,
            "clock": "cpu" if args.cpu_time else "wall", "rounds": args.rounds, "repeats": args.repeats,
            "batch": args.batch, "seq": args.seq, "prompt": args.prompt, "new_tokens": args.new_tokens,
            "load_after": round(os.getloadavg()[0], 2),
            "rows": [{"what": w, "engine_tok_s": round(e, 1), "hf_tok_s": round(r, 1), "ratio": round(e / r, 3),
                      "engine_tok_s_rounds": [round(x, 1) for x in se], "hf_tok_s_rounds": [round(x, 1) for x in sh],
                      "ratio_rounds": [round(x, 3) for x in sr]}
                     for (w, e, r), (se, sh, sr) in zip(rows, spread)]}, indent=2))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
