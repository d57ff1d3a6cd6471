"""Benchmark checkpoints: save and load throughput and peak extra memory against the size of
the state, against a raw sequential write and read of the same bytes on the same disk.

Per size: a llama-like model trained dp=2 on 2 gloo workers (weights, fp32 Adam moments;
the distributed optimizer splits the moments over the 2 ranks). Measured on every rank,
reported as the slowest rank:

- save: `rank_state.save_checkpoint` (DCP write, fsync, SHA-256 of each rank's file, meta,
  rename), against each rank writing the same number of bytes sequentially in 16 MiB
  blocks to a file of its own, fsynced, at the same time;
- load: `rank_state.restore` of that checkpoint into the same engines (the optimizer
  exists already: this is I/O and copying, not building), against each rank reading its
  own DCP file sequentially;
- peak extra memory: the highest resident set size sampled every 2 ms during the
  operation, minus the size before it; compared with this rank's largest tensor chunk
  (one shard) and its whole part of the state.

The files sit in the page cache (no root to drop it): both sides read and write the same
way, so the ratios compare the checkpoint code with the disk path it uses, not with the
platter. Run: PYTHONPATH=$PWD python experiments/bench/checkpoint.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

BLOCK = 16 << 20
SIZES = {"quick": [(256, 4, 8000)], "full": [(256, 4, 8000), (512, 8, 16000), (768, 8, 32000)]}
"""(hidden size, layers, vocabulary) of the models measured."""


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak_rss() -> bool:
    """Reset the kernel's resident-set high-water mark of this process (Linux: "5" to clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    """The kernel's resident-set high-water mark of this process (VmHWM), in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


class PeakRSS:
    """The resident set's peak while the block runs; `extra` is peak - start.

    The kernel's high-water mark, reset at the start, where the kernel allows it; else samples
    from a thread every 2 ms (which can miss a short-lived allocation's peak)."""

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = _rss()
        self._hwm = _reset_peak_rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.002)

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())
        if self._hwm:
            self.peak = max(self.peak, _peak_rss())
        self.extra = self.peak - self.start


def _raw_write(path: Path, nbytes: int) -> float:
    block = os.urandom(min(BLOCK, max(nbytes, 1)))
    start = time.perf_counter()
    with open(path, "wb") as fh:
        left = nbytes
        while left > 0:
            n = min(left, len(block))
            fh.write(block[:n] if n < len(block) else block)
            left -= n
        fh.flush()
        os.fsync(fh.fileno())
    return time.perf_counter() - start


def _raw_read(path: Path) -> float:
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as fh:
        while fh.read(BLOCK):
            pass
    return time.perf_counter() - start


class _OneEngine:
    """The engines of a rank as checkpoints see them: one trained model, its home layout."""

    def __init__(self, engine: Any, layout: Any) -> None:
        self.homes = {"actor": layout}
        self.by_key = {("actor", layout): engine}
        self.engine = engine

    def get(self, role: str, layout: Any) -> Any:
        return self.engine


def _worker(ctx: Any, sizes: list[tuple[int, int, int]], root: str, repeats: int) -> list[dict[str, Any]]:
    import torch.distributed as dist

    from graph.catalog import OptimArgs
    from graph.placement.layout import DeviceMesh, Layout
    from graph.spec import ModelArch, ModelSpec
    from runtime.engine.model_engine import build_engine
    from runtime.engine.schedule import Trainer
    from runtime.rundir import checkpoints, rank_state

    layout = Layout(mesh=DeviceMesh.span(0, ctx.world_size), dp=ctx.world_size, tp=1, pp=1)
    out = []
    for hidden, layers, vocab in sizes:
        arch = ModelArch(family="llama", num_layers=layers, hidden_size=hidden, ffn_hidden_size=4 * hidden,
                         num_heads=max(1, hidden // 64), num_kv_heads=max(1, hidden // 64), vocab_size=vocab,
                         max_position_embeddings=256)
        engine = build_engine(ModelSpec(role="actor", arch=arch, trainable=True), layout, ctx.rank, seed=1)
        assert engine is not None
        engine.trainer = Trainer(engine, OptimArgs(), total_steps=10)
        engine.trainer.optimizer.step()  # zero gradients: Adam creates its moments
        engines = _OneEngine(engine, layout)
        info = rank_state.describe(engines, ["actor"])
        tensors = rank_state.state_dict(engines, ["actor"], info, rank=ctx.rank, rng=False)
        largest = max(s.tensor.numel() * s.tensor.element_size()
                      for st in tensors.values() for s in st.local_shards())
        params = sum(p.numel() for p in engine.module.parameters())
        base = Path(root) / f"h{hidden}"
        rows: dict[str, list[float]] = {k: [] for k in ("save", "load", "raw_write", "raw_read", "save_extra",
                                                         "load_extra")}
        mine = 0
        for rep in range(repeats):
            dist.barrier()
            with PeakRSS() as mem:
                start = time.perf_counter()
                path = rank_state.save_checkpoint(base, rep + 1, engines, ["actor"], rank=ctx.rank,
                                                  world_size=ctx.world_size, fingerprint={}, layouts={}, keep=1)
                rows["save"].append(time.perf_counter() - start)
            rows["save_extra"].append(mem.extra)
            dist.barrier()
            path = base / checkpoints.checkpoint_name(rep + 1)
            own = path / f"__{ctx.rank}_0.distcp"
            mine = own.stat().st_size
            meta = checkpoints.verify(path) if ctx.rank == 0 else None
            box = [meta]
            dist.broadcast_object_list(box, src=0)
            meta = box[0]
            dist.barrier()
            with PeakRSS() as mem:
                start = time.perf_counter()
                rank_state.restore(path, meta, engines, ["actor"], lambda r, e: e.trainer, rank=ctx.rank,
                                   world_size=ctx.world_size)
                rows["load"].append(time.perf_counter() - start)
            rows["load_extra"].append(mem.extra)
            dist.barrier()
            raw = base / f"raw{ctx.rank}.bin"
            rows["raw_write"].append(_raw_write(raw, mine))
            dist.barrier()
            rows["raw_read"].append(_raw_read(own))
            raw.unlink()
            dist.barrier()
        out.append({"hidden": hidden, "layers": layers, "vocab": vocab, "params": params, "rank_bytes": mine,
                    "largest_chunk": largest, **{k: sorted(v)[len(v) // 2] for k, v in rows.items()}})
        del engine, engines, tensors
    return out


def measure(*, quick: bool, root: str | None = None, workers: int = 2, repeats: int | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the JSON-able results (one row per model size)."""
    import tempfile

    from runtime.execution.launch import LaunchSpec, launch

    sizes = SIZES["quick" if quick else "full"]
    repeats = repeats or (1 if quick else 3)
    where = Path(root or tempfile.mkdtemp(prefix="realloc-ckpt-bench-"))
    results = launch(_worker, (sizes, str(where), repeats), LaunchSpec(nproc_per_node=workers))
    rows = []
    for i, size in enumerate(results[0]):
        per = [results[r][i] for r in range(workers)]
        total = sum(p["rank_bytes"] for p in per)

        def slowest(key: str, per: list[dict[str, Any]] = per) -> float:
            return max(p[key] for p in per)

        rows.append({
            "model": f"llama h{size['hidden']} L{size['layers']} V{size['vocab']}",
            "params_m": round(size["params"] / 1e6, 1), "state_mib": round(total / 2**20, 1),
            "save_gbps": total / slowest("save") / 1e9, "raw_write_gbps": total / slowest("raw_write") / 1e9,
            "load_gbps": total / slowest("load") / 1e9, "raw_read_gbps": total / slowest("raw_read") / 1e9,
            "save_extra_mib": slowest("save_extra") / 2**20, "load_extra_mib": slowest("load_extra") / 2**20,
            "largest_chunk_mib": max(p["largest_chunk"] for p in per) / 2**20,
            "rank_state_mib": max(p["rank_bytes"] for p in per) / 2**20,
        })
        r = rows[-1]
        r["save_over_raw"] = r["save_gbps"] / r["raw_write_gbps"]
        r["load_over_raw"] = r["load_gbps"] / r["raw_read_gbps"]
    return {"workers": workers, "repeats": repeats, "load_avg": os.getloadavg()[0], "rows": rows,
            "goals": "save and load >= 0.5x raw; extra memory <= one shard (the largest chunk)"}


def render(data: dict[str, Any]) -> list[str]:
    """Markdown lines of `measure()`'s result."""
    from realloc.bench.suite import md_table

    lines = [f"{data['workers']} gloo workers (dp={data['workers']}), median of {data['repeats']}, load average "
             f"{data['load_avg']:.1f}; files in the page cache. Goals: {data['goals']}.", ""]
    lines += md_table(
        ["model", "params M", "state MiB", "save GB/s", "raw write GB/s", "save/raw", "load GB/s", "raw read GB/s",
         "load/raw", "save extra MiB", "load extra MiB", "largest chunk MiB", "rank's state MiB"],
        [[r["model"], r["params_m"], r["state_mib"], f"{r['save_gbps']:.2f}", f"{r['raw_write_gbps']:.2f}",
          f"{r['save_over_raw']:.2f}x", f"{r['load_gbps']:.2f}", f"{r['raw_read_gbps']:.2f}",
          f"{r['load_over_raw']:.2f}x", f"{r['save_extra_mib']:.1f}", f"{r['load_extra_mib']:.1f}",
          f"{r['largest_chunk_mib']:.1f}", f"{r['rank_state_mib']:.1f}"] for r in data["rows"]])
    return lines + [""]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one small model, one repeat")
    parser.add_argument("--dir", help="where to write the checkpoints (default: a temporary directory)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    data = measure(quick=args.quick, root=args.dir)
    print("\n".join(render(data)))
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
