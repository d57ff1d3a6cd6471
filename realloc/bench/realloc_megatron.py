"""Our reallocation against Megatron-core's `megatron.core.resharding` and a raw p2p, on real engines.

Both layouts of each pair are built with `runtime.engine.model_engine.build_engine` on 4 gloo workers
(source weights from seed 1, destination from seed 2). Per pair and in the same run:

- ours: `runtime.execution.reallocation.execute_transfer` of the cost model's TransferPlan;
- megatron: `swap_model_weights(src, dst, <gloo copy service>)` (0.16.1), its plan built
  once (timed apart) and cached, as Megatron does;
- raw: the plan's bytes between the same rank pairs, one contiguous buffer per pair.

Both results are checked bit-exact against the destination shards cut directly from
the source's global weights (an independent reference). Bytes: the plan's (the lower
bound: what destinations lack) and what Megatron's plan sends between ranks.

Workarounds Megatron 0.16.1 needs here: every world rank calls it (world gathers, a
broadcast, a barrier); ranks outside a layout pass a parameter-less stand-in with
`.config` and `.pg_collection.dp`; its GlooCopyService is built without the CUDA stream
it creates (CPU torch has none); engines keep perform_initialization=True (the
partition_dim attributes it plans from). The llama here is untied, so the PP>1
tied-embedding failure of 0.16.1 does not arise.

    PYTHONPATH=$PWD python experiments/bench/realloc_megatron.py [--layers 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import types
from collections import defaultdict

import torch
import torch.distributed as dist

from graph.placement.transfer import plan_transfer
from graph.spec import ModelArch, ModelSpec
from realloc.bench.realloc_throughput import PAIRS, _layout, _raw, _raw_buffers
from runtime.engine import convert
from runtime.engine.model_engine import build_engine, transformer_config
from runtime.engine.platform import without_cuda_rewrites
from runtime.execution.launch import LaunchSpec, launch
from runtime.execution.reallocation import StagingPool, execute_transfer

SRC_SEED, DST_SEED = 1, 2


def _copy_service():
    """Megatron's GlooCopyService without its CUDA stream (the only CUDA call it makes)."""
    from megatron.core.resharding.copy_services.gloo_copy_service import GlooCopyService

    class CpuGlooCopyService(GlooCopyService):
        def __init__(self) -> None:
            self.rank = dist.get_rank()
            self.world_size = dist.get_world_size()
            self.gloo_pg = dist.new_group(backend="gloo")
            self.send_ops, self.recv_ops = [], []
            self._copy_stream = None

    return CpuGlooCopyService()


def _stand_in(arch, layout):
    """What a rank outside a layout hands Megatron: no parameters, a config and a dp group."""
    module = torch.nn.Module()
    module.config = transformer_config(arch, layout, bf16=False)
    module.pg_collection = types.SimpleNamespace(dp=dist.group.WORLD)
    return module


def _shards(engine):
    return None if engine is None else {n: s.tensor for n, s in engine.named_local_shards().items()}


def _reference(engine, mg):
    """Destination shards cut straight from the source's global weights (as load_global_state does)."""
    out = {}
    tp, tp_rank = engine.layout.tp, engine.coords.tp_rank
    for name, local in engine.named_local_shards().items():
        source = name if name in mg else "embedding.word_embeddings.weight"
        out[name] = convert.shard(convert.pad_vocab(name, mg[source], engine.arch, tp), local.spec, tp, tp_rank)
    return out


def _mismatches(got, ref):
    return [] if got is None else [n for n, t in got.items() if not torch.equal(t, ref[n])]


def _megatron_bytes(dst_module, rank):
    """Bytes this rank receives from other ranks under Megatron's cached plan."""
    plan = getattr(dst_module, "_cached_reshard_plan", None)
    if plan is None:
        return 0
    params = dict(dst_module.named_parameters())
    return sum(params[op.param_name].data[op.my_slice].numel() * params[op.param_name].element_size()
               for op in plan.recv_ops if op.peer_rank != rank and op.param_name in params)


def _timed(fn, *args):
    dist.barrier()
    t0 = time.perf_counter()
    fn(*args)
    dist.barrier()
    return time.perf_counter() - t0


def _fill_nan(shards):
    for t in (shards or {}).values():
        t.fill_(float("nan"))


def _pair(ctx, arch, mg, service, a, b, repeats, chunk_bytes, profiler=None):
    from megatron.core.resharding import swap_model_weights

    rank = ctx.rank
    src_eng = build_engine(ModelSpec(role="src", arch=arch), a, rank, seed=SRC_SEED, bf16=False)
    dst_eng = build_engine(ModelSpec(role="dst", arch=arch), b, rank, seed=DST_SEED, bf16=False)
    src, dst = _shards(src_eng), _shards(dst_eng)
    ref = _reference(dst_eng, mg) if dst_eng is not None else None
    plan = plan_transfer(arch, a, b, dtype_bytes=4)
    flows = defaultdict(int)
    for op in plan.ops:
        flows[(op.src, op.dst)] += op.nbytes
    buffers = _raw_buffers(flows, rank)
    pool = StagingPool()
    src_mod = src_eng.module if src_eng is not None else _stand_in(arch, a)
    dst_mod = dst_eng.module if dst_eng is not None else _stand_in(arch, b)

    def ours():
        execute_transfer(plan, arch, rank, src_shards=src, dst_shards=dst, staging=pool, chunk_bytes=chunk_bytes)

    def megatron():
        if profiler:
            profiler.enable()
        with torch.no_grad(), without_cuda_rewrites():
            swap_model_weights(src_mod, dst_mod, service)
        if profiler:
            profiler.disable()

    out = {"errors": []}
    with torch.no_grad():
        _fill_nan(dst)
    ours()
    out["errors"] += [f"ours: {n}" for n in _mismatches(dst, ref)]
    with torch.no_grad():
        _fill_nan(dst)
    try:
        out["megatron_first_s"] = _timed(megatron)  # builds and caches its plan, then executes
        out["errors"] += [f"megatron: {n}" for n in _mismatches(dst, ref)]
        out["megatron_bytes"] = _megatron_bytes(dst_mod, rank)
    except Exception as exc:  # noqa: BLE001 - reported in the table, not fatal for the other pairs
        out["megatron_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:140]}"
    times = defaultdict(list)
    for _ in range(repeats):
        times["ours"].append(_timed(ours))
        if "megatron_error" not in out:
            times["megatron"].append(_timed(megatron))
        times["raw"].append(_timed(_raw, buffers, rank))
    out["errors"] += [f"after timing: {n}" for n in _mismatches(dst, ref)]
    out.update({k: statistics.median(v) for k, v in times.items()})
    out["plan_bytes"] = plan.bytes_total
    return out


def _bench(ctx, arch, repeats, chunk_bytes, threads, only=None, profile=False):
    import cProfile
    import io
    import pstats

    from runtime.engine import platform

    platform.apply_platform_patches()
    if threads:
        torch.set_num_threads(threads)  # Megatron's copies too, as ours run (copy_threads=1)
    with without_cuda_rewrites():
        mg = convert.hf_to_megatron(convert.random_hf_state(arch, seed=SRC_SEED, value_head=False), arch,
                                    value_head=False)
    service = _copy_service()
    profiler = cProfile.Profile() if profile and ctx.rank == 0 else None
    rows = []
    for name, a_spec, b_spec in [PAIRS[i] for i in (only or range(len(PAIRS)))]:
        res = _pair(ctx, arch, mg, service, _layout(*a_spec), _layout(*b_spec), repeats, chunk_bytes, profiler)
        rows.append((name, res))
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(14)
        rows.append(("profile", out.getvalue()))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk-mib", type=int, default=64, help="our chunk size")
    parser.add_argument("--pairs", type=int, nargs="*", help="indices of the pairs to run (default: all)")
    parser.add_argument("--profile", action="store_true", help="print rank 0's profile of Megatron's calls")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per worker (0: leave torch's default; ours caps its copies at 1 anyway)")
    args = parser.parse_args()
    arch = ModelArch(family="llama", num_layers=args.layers, hidden_size=args.hidden,
                     ffn_hidden_size=args.hidden * 3, num_heads=16, num_kv_heads=4, vocab_size=32000)
    print(f"model: {arch.num_params() / 1e6:.0f}M parameters (fp32), engines on 4 gloo workers, "
          f"median of {args.repeats}, torch threads {args.threads or 'default'}, load {os.getloadavg()[0]:.1f}")
    results = launch(_bench, (arch, args.repeats, args.chunk_mib * 2**20, args.threads, args.pairs,
                                     args.profile), LaunchSpec(nproc_per_node=4))
    print(f"{'pair':<34} {'plan MiB':>8} {'mcore MiB':>9} {'ours s':>7} {'mcore s':>7} {'raw s':>7} "
          f"{'raw/ours':>8} {'raw/mcore':>9} {'mcore plan+1st s':>16}  bit-exact")
    profile = results[0].pop()[1] if args.profile else ""
    for i, (name, r0) in enumerate(results[0]):
        per_rank = [results[r][i][1] for r in sorted(results)]
        errors = [e for r in per_rank for e in r["errors"]]
        exact = "yes" if not errors else f"NO: {errors[:3]}"
        if "megatron_error" in r0:
            print(f"{name:<34} {r0['plan_bytes'] / 2**20:>8.0f} {'-':>9} {r0['ours']:>7.3f} {'-':>7} "
                  f"{r0['raw']:>7.3f} {r0['raw'] / r0['ours']:>8.2f} {'-':>9} {'-':>16}  {exact}")
            print(f"    megatron cannot run this pair: {r0['megatron_error']}")
            continue
        mbytes = sum(r["megatron_bytes"] for r in per_rank)
        print(f"{name:<34} {r0['plan_bytes'] / 2**20:>8.0f} {mbytes / 2**20:>9.0f} {r0['ours']:>7.3f} "
              f"{r0['megatron']:>7.3f} {r0['raw']:>7.3f} {r0['raw'] / r0['ours']:>8.2f} "
              f"{r0['raw'] / r0['megatron']:>9.2f} {r0['megatron_first_s']:>16.3f}  {exact}")
    print(f"load after: {os.getloadavg()[0]:.1f}")
    if profile:
        print(profile)


if __name__ == "__main__":
    main()
