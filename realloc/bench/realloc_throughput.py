"""Reallocation throughput against a raw point-to-point transfer of the same bytes.

Runs 4 gloo workers (CPU) or one worker per GPU. For each layout pair it times
`runtime.execution.reallocation.execute_transfer` on a model's shards, then a raw transfer that sends
the same bytes between the same rank pairs as one contiguous buffer per pair, and
prints the ratio raw_time / realloc_time (1.0 = as fast as raw; the goal is >= 0.7).
Variants timed in the same run, interleaved: `v0` (the first transport, see realloc_v0.py;
`v0-1thread` the same on one torch thread),
`new` (runtime.execution.reallocation: overlapped chunks, copies on one thread), `no-overlap` and
`all-threads` (new without one of the two), `raw`, and `raw+local` (raw plus a memcpy of
the bytes the plan copies locally, which no transport can skip).

    python experiments/bench/realloc_throughput.py [--hidden 1024] [--layers 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections import defaultdict

import torch
import torch.distributed as dist

from graph.placement.layout import DeviceMesh, Layout
from graph.placement.params import param_manifest
from graph.placement.transfer import plan_transfer
from graph.spec import ModelArch
from realloc.bench.realloc_v0 import execute_transfer_v0
from runtime.execution.launch import LaunchSpec, launch
from runtime.execution.reallocation import StagingPool, execute_transfer, local_shard

PAIRS = [
    ("TP2xDP2 -> TP1xDP4 (same mesh)", (4, 0, 2, 2, 1), (4, 0, 4, 1, 1)),
    ("TP2xPP2 -> TP4 (same mesh)", (4, 0, 1, 2, 2), (4, 0, 1, 4, 1)),
    ("TP2 on {0,1} -> TP1xDP2 on {2,3}", (2, 0, 1, 2, 1), (2, 2, 2, 1, 1)),
    ("TP4 on {0..3} -> TP2 on {2,3}", (4, 0, 1, 4, 1), (2, 2, 1, 2, 1)),
    ("PP2 on {0,1} -> PP2 on {2,3}", (2, 0, 1, 1, 2), (2, 2, 1, 1, 2)),
]


def _layout(size, start, dp, tp, pp):
    return Layout(mesh=DeviceMesh.span(start, size), dp=dp, tp=tp, pp=pp)


def _shards(arch, layout, rank):
    if rank not in layout.mesh.devices:
        return None
    _, tp_rank, pp_rank = layout.coords(rank)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for p in param_manifest(arch, pp=layout.pp):
        if pp_rank in p.stages(layout.pp, arch.num_layers):
            out[p.name] = local_shard(torch.randn(p.shape, generator=gen), p, layout.tp, tp_rank)
    return out


def _raw_buffers(flows, rank):
    """One contiguous fp32 buffer per rank pair, allocated and touched before timing."""
    out = []
    for (src, dst), nbytes in flows.items():
        if rank in (src, dst):
            out.append((src, dst, torch.ones(nbytes // 4)))
    return out


def _raw(buffers, rank):
    """Send the same bytes between the same pairs as the plan, one buffer per pair."""
    ops = [dist.P2POp(dist.isend, buf, dst) if rank == src else dist.P2POp(dist.irecv, buf, src)
           for src, dst, buf in buffers]
    if ops:
        for w in dist.batch_isend_irecv(ops):
            w.wait()


def _local_bytes(plan, rank):
    return sum(op.nbytes for op in plan.local_copies if op.dst == rank)


def _raw_local(buffers, rank, local):
    """Raw transfer plus a contiguous memcpy of the bytes the plan copies locally on this rank."""
    _raw(buffers, rank)
    if local is not None:
        local[1].copy_(local[0])


VARIANTS = ("v0", "v0-1thread", "new", "no-overlap", "all-threads")


def _run_variant(variant, plan, arch, rank, src, dst, pool, chunk_bytes):
    if variant.startswith("v0"):
        threads = torch.get_num_threads()
        if variant == "v0-1thread":
            torch.set_num_threads(1)
        execute_transfer_v0(plan, arch, rank, src_shards=src, dst_shards=dst, staging=pool, chunk_bytes=chunk_bytes)
        torch.set_num_threads(threads)
    else:
        execute_transfer(plan, arch, rank, src_shards=src, dst_shards=dst, staging=pool,
                         chunk_bytes=chunk_bytes, overlap=variant != "no-overlap",
                         copy_threads=None if variant == "all-threads" else 1)


def _timed(fn, *args):
    dist.barrier()
    t0 = time.perf_counter()
    fn(*args)
    dist.barrier()
    return time.perf_counter() - t0


def _bench(ctx, arch, repeats, chunk_bytes, profile=False, threads=0, only=None, variants=VARIANTS):
    import cProfile
    import io
    import pstats

    if threads:
        torch.set_num_threads(threads)
    profiler = cProfile.Profile() if profile and ctx.rank == 0 else None
    rows = []
    pools = {v: StagingPool() for v in variants}
    for name, a_spec, b_spec in [PAIRS[i] for i in (only or range(len(PAIRS)))]:
        a, b = _layout(*a_spec), _layout(*b_spec)
        plan = plan_transfer(arch, a, b, dtype_bytes=4)
        flows = defaultdict(int)
        for op in plan.ops:
            flows[(op.src, op.dst)] += op.nbytes
        src, dst = _shards(arch, a, ctx.rank), _shards(arch, b, ctx.rank)
        buffers = _raw_buffers(flows, ctx.rank)
        nlocal = _local_bytes(plan, ctx.rank) // 4
        local = (torch.ones(nlocal), torch.zeros(nlocal)) if nlocal else None
        times = defaultdict(list)
        for _ in range(repeats):
            for v in variants:
                if profiler and v == "new":
                    profiler.enable()
                times[v].append(_timed(_run_variant, v, plan, arch, ctx.rank, src, dst, pools[v], chunk_bytes))
                if profiler:
                    profiler.disable()
            times["raw"].append(_timed(_raw, buffers, ctx.rank))
            times["raw+local"].append(_timed(_raw_local, buffers, ctx.rank, local))
        rows.append((name, plan.bytes_total, {k: statistics.median(t) for k, t in times.items()}))
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(12)
        rows.append(out.getvalue())
    return rows


def bench_arch(hidden: int, layers: int) -> ModelArch:
    """The Llama-style model whose shards are moved (GQA 16/4 heads, vocabulary 32000)."""
    return ModelArch(family="llama", num_layers=layers, hidden_size=hidden, ffn_hidden_size=hidden * 3,
                     num_heads=16, num_kv_heads=4, vocab_size=32000)


def measure_throughput(*, hidden: int = 1024, layers: int = 8, repeats: int = 3, chunk_mib: int = 64,
                       pairs: list[int] | None = None, variants: tuple[str, ...] = ("new",)) -> dict:
    """Median seconds of each variant, `raw` and `raw+local` per layout pair, on 4 gloo workers.

    Returns {"params_m", "repeats", "pairs": [{"pair", "mib", "seconds": {variant: s},
    "raw_over": {variant: raw s / variant s}}]}.
    """
    arch = bench_arch(hidden, layers)
    rows = launch(_bench, (arch, repeats, chunk_mib * 2**20, False, 0, pairs, tuple(variants)),
                  LaunchSpec(nproc_per_node=4))[0]
    return {"params_m": round(arch.num_params() / 1e6, 1), "repeats": repeats, "workers": 4,
            "pairs": [{"pair": name, "mib": round(nbytes / 2**20, 1),
                       "seconds": {k: round(v, 4) for k, v in t.items()},
                       "raw_over": {v: round(t["raw"] / t[v], 3) for v in variants}}
                      for name, nbytes, t in rows]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true", help="print rank 0's profile of the reallocations")
    parser.add_argument("--chunk-mib", type=int, default=64, help="reallocation chunk size")
    parser.add_argument("--pairs", type=int, nargs="*", help="indices of the pairs to run (default: all)")
    parser.add_argument("--variants", nargs="*", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads in each worker (0: leave)")
    args = parser.parse_args()
    arch = bench_arch(args.hidden, args.layers)
    print(f"model: {arch.num_params() / 1e6:.0f}M parameters (fp32), 4 gloo workers, "
          f"chunks of {args.chunk_mib} MiB, median of {args.repeats}, load {os.getloadavg()[0]:.1f}")
    rows = launch(_bench, (arch, args.repeats, args.chunk_mib * 2**20, args.profile, args.threads, args.pairs,
                                  tuple(args.variants)),
                  LaunchSpec(nproc_per_node=4))[0]
    profile = rows.pop() if args.profile else ""
    variants = tuple(args.variants)
    cols = (*variants, "raw", "raw+local")
    print(f"{'pair':<34} {'MiB':>6} " + " ".join(f"{c + ' s':>9}" for c in cols)
          + " " + " ".join(f"{'raw/' + v:>10}" for v in variants))
    for name, nbytes, t in rows:
        print(f"{name:<34} {nbytes / 2**20:>6.0f} " + " ".join(f"{t[c]:>9.3f}" for c in cols)
              + " " + " ".join(f"{t['raw'] / t[v]:>10.2f}" for v in variants))
    print(f"load after: {os.getloadavg()[0]:.1f}")
    if profile:
        print(profile)


if __name__ == "__main__":
    main()
