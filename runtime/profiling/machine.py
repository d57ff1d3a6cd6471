"""`realloc profile`: measure this machine with the real Megatron layers and write a profile.

`profile_machine(devices=N, quick=..., out=FILE)` launches N workers the way `realloc run`
does (gloo on CPU, NCCL on GPUs, the same thread settings), and every worker takes part
in the measurements (`profile_worker`). Rank 0 collects the samples
(`cost_model.calibration`), the launcher fits the calibration and writes the profile JSON
that `cluster.profile` loads. What is measured, on a synthetic Llama-style model:

- contention: the same forward on one worker alone and on all N at once;
- compute: forward and forward+backward of 1 and 2 layers at a grid of (batch, seq) and TP
  degrees, through Megatron's pipeline schedule (`runtime.engine.schedule.run_micro_batches`);
- memory (CPU): reading weights several times the last-level cache, the rate decoding a model
  that does not fit in it reaches;
- co-run (CPU): a model outgrowing the cache, and such a read, on one worker alone and on one
  worker per core at once (`runtime.profiling.corun`);
- compute speed: one larger layer (hidden 256 and 576 in the full grid) at tp 1, and a
  decode-shaped forward (one token per sequence) at those sizes, for how much more FLOP/s
  large matrices reach than the compute fit's small ones;
- decode: whole KV-cached generations (`generate_local`) at a grid of batch and steps;
- collectives: all_reduce, all_gather, reduce_scatter and p2p within groups of 2..N ranks
  (the link fit takes all-reduces and sends; the others' slowdown against it is fitted apart);
- optimizer: one Adam step (distributed optimizer) at the grid's model sizes and a larger one;
- calls: the real interfaces (logprobs, sft, generate) minus their core work, at dp 1 and N;
- moves: parameter reallocations between three layouts, and one batch sent between calls;
- threads (CPU): one layer's forward+backward on one worker alone with one torch thread and
  with all the cores, at a few hidden sizes, for the thread efficiency plans price.

Each timing is the median of `repeats` runs after warm-ups; the ranks outside the measured
group wait at a barrier meanwhile. Work on one CPU worker alone is timed in thread CPU time
(robust to other processes loading the machine), work across ranks in wall time.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from cost_model import shapes
from cost_model.samples import (
    CallSample,
    CollectiveSample,
    ComputeSample,
    ContentionSample,
    DecodeSample,
    MemorySample,
    MoveSample,
    OptimizerSample,
    ThreadSample,
)
from graph.placement.layout import DeviceMesh, Layout
from graph.placement.params import stage_params
from graph.spec import ModelArch, ModelSpec
from runtime.execution.launch import WorkerContext
from runtime.interfaces.registry import CallContext
from runtime.profiling.grid import FULL as FULL
from runtime.profiling.grid import QUICK as QUICK
from runtime.profiling.grid import ProfileGrid, synthetic_arch

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine


# --------------------------------------------------------------------------- timing helpers


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _once(fn: Callable[[], Any], group: Any, wall: bool = False) -> float:
    """Seconds of one run of `fn`: wall time in a group; alone (group None) on CPU, this
    thread's CPU time, which other processes' load on the machine does not inflate (a worker
    computes on its own thread: torch runs one intra-op thread per worker here)."""
    if group is not None:
        dist.barrier(group=group)
    cpu_clock = not wall and group is None and not torch.cuda.is_available() and torch.get_num_threads() == 1
    clock = time.thread_time if cpu_clock else time.perf_counter
    _sync()
    start = clock()
    fn()
    _sync()
    return clock() - start


def _timed(fn: Callable[[], Any], repeats: int, group: Any, wall: bool = False) -> float:
    """Median seconds of `fn` after two warm-ups; the group aligns before every run."""
    fn()
    fn()
    return statistics.median(_once(fn, group, wall) for _ in range(repeats))


def _timed_extra(core: Callable[[], Any], whole: Callable[[], Any], repeats: int, group: Any) -> float:
    """Median of (whole - core) over alternating runs: what `whole` costs beyond `core`."""
    for fn in (core, whole, core, whole):
        fn()
    return statistics.median(_once(whole, group) - _once(core, group) for _ in range(repeats))


class _Progress:
    """Rank 0 writes 'done total what' lines to a file the launcher follows."""

    def __init__(self, path: str | None, total: int) -> None:
        self.path, self.total, self.done = path, total, 0

    def step(self, what: str) -> None:
        self.done += 1
        if self.path:
            Path(self.path).write_text(f"{self.done} {self.total} {what}\n")


def _thread_counts() -> int:
    """Threads the thread samples compare with one: the cores (0, nothing to compare, on GPUs
    or with a single core)."""
    cores = _cores()
    return cores if cores >= 2 else 0


def _cores() -> int:
    """CPU cores this process may run on (the node's workers share them; on GPUs: unused)."""
    if torch.cuda.is_available():
        return 0
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 0)


def _cache_bytes() -> int:
    """The largest CPU cache this machine reports (its last level; 0 when unknown or on GPUs)."""
    if torch.cuda.is_available():
        return 0
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * scale)
    return max(sizes, default=0)


def _batch(b: int, s: int, vocab: int, prompt: int | None = None) -> Any:
    from runtime.data.batch import SeqBatch

    gen = torch.Generator().manual_seed(b * 1000 + s)
    seqs = torch.randint(1, vocab, (b, s), generator=gen).tolist()
    return SeqBatch.from_lists(seqs, [prompt if prompt is not None else s // 2] * b)


NEVER_SAMPLED = 1 << 20
"""An EOS id beyond any profiled vocabulary: checked like a real one, never sampled, so every
generation runs all its steps."""


def _run_context() -> CallContext:
    """A call context like the runtime's: an EOS id every sampled token is checked against, a
    seed and step for the per-sequence sampling stream (so the per-token work matches a run)."""
    return CallContext(eos_ids=(NEVER_SAMPLED,), seed=1, step=1, total_steps=10_000)


def _with_response(prompts: Any, response: Any) -> Any:
    """The prompts with `response` tokens appended to each (a generated batch's shape)."""
    from runtime.data.batch import SeqBatch

    seqs = [prompts.input_ids[i, : int(prompts.prompt_lens[i])].tolist() + response[i].tolist()
            for i in range(prompts.size)]
    out = SeqBatch.from_lists(seqs, [int(x) for x in prompts.prompt_lens])
    return out.with_fields(seq_fields=dict(prompts.seq_fields)) if prompts.seq_fields else out


def _pass(engine: ModelEngine, mb: Any, forward_only: bool) -> None:
    """One forward (no grad) or forward+backward of `mb` through the pipeline schedule."""
    from runtime.engine.schedule import run_micro_batches

    def loss_fn(_mb: Any, out: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        return out.float().mean(), {}

    if forward_only:
        engine.module.eval()
        with torch.no_grad():
            run_micro_batches(engine, [mb], loss_fn, forward_only=True)
    else:
        engine.module.train()
        run_micro_batches(engine, [mb], loss_fn, forward_only=False)
        engine.module.zero_grad(set_to_none=True)


def _layout(devices: tuple[int, ...], *, dp: int = 1, tp: int = 1) -> Layout:
    return Layout(mesh=DeviceMesh(devices=devices), dp=dp, tp=tp, pp=1)


# --------------------------------------------------------------------------- the worker


class _Profiler:
    """One rank's part of the measurements."""

    def __init__(self, ctx: WorkerContext, grid: ProfileGrid, progress: str | None) -> None:
        from runtime.engine import platform

        platform.apply_platform_patches()
        self.ctx, self.grid, self.rank, self.n = ctx, grid, ctx.rank, ctx.world_size
        self.dtype = "bf16" if platform.has_cuda() else "fp32"
        self.dtype_bytes = 2 if platform.has_cuda() else 4
        self.tps = [t for t in grid.tp_degrees if t <= self.n and 4 % t == 0]
        self.thread_counts = _thread_counts()
        total = (1 + len(self.tps) * len(grid.hidden_sizes) * len(grid.layers) + (self.n - 1)
                 + len(grid.hidden_sizes) + len(grid.optimizer_hidden) + (self.n > 1) + 1
                 + (len(grid.thread_hidden) if self.thread_counts else 0) + len(grid.speed_hidden) + 1
                 + ((len(grid.speed_hidden) + 1) if min(self.n, _cores()) >= 2 else 0))
        self.progress = _Progress(progress if self.rank == 0 else None, total)
        self.samples: dict[str, list[Any]] = {k: [] for k in ("contention", "compute", "decode", "collectives",
                                                               "optimizer", "calls", "moves", "threads",
                                                               "memory", "corun")}

    def _engine(self, arch: ModelArch, layout: Layout) -> Any:
        from runtime.engine.model_engine import build_engine

        return build_engine(ModelSpec(role="profile", arch=arch, trainable=True), layout, self.rank, seed=1)

    def _group(self, size: int) -> Any:
        from runtime.engine.groups import _group

        return _group(tuple(range(size)))  # world-collective on first use

    # ---------------------------------------------------------------- compute and decode

    def _passes(self, engine: ModelEngine, b: int, s: int, forward_only: bool, wall: bool = False) -> float:
        mb = _batch(b, s, self.grid.vocab_size)
        return _timed(lambda: _pass(engine, mb, forward_only), self.grid.repeats,
                      engine.pgc.tp if engine.layout.tp > 1 else None, wall)

    def _flops(self, arch: ModelArch, tp: int, tokens: float, ctx: float) -> float:
        layer = shapes.layer_forward_flops(arch, tokens, ctx) * arch.num_layers
        return (layer + 2 * tokens * arch.vocab_size * arch.hidden_size) / tp

    def _generate(self, engine: ModelEngine, b: int, steps: int) -> float:
        from graph.catalog import GenerateArgs
        from runtime.interfaces.generate import generate_local

        prompts = _batch(b, self.grid.prompt_len, self.grid.vocab_size, prompt=self.grid.prompt_len)
        args = GenerateArgs(max_new_tokens=steps)
        return _timed(lambda: generate_local(engine, prompts, args, _run_context()), self.grid.repeats,
                      engine.pgc.tp if engine.layout.tp > 1 else None)

    def compute_and_decode(self) -> None:
        g = self.grid
        for tp in self.tps:
            for hidden in g.hidden_sizes:
                for layers in g.layers:
                    arch = synthetic_arch(hidden, layers, g.vocab_size, tp)
                    engine = self._engine(arch, _layout(tuple(range(tp)), tp=tp))
                    if engine is not None:
                        self._measure_engine(engine, arch, tp)
                    dist.barrier()
                    self.progress.step(f"layers: tp={tp} hidden={hidden} layers={layers}")

    def _measure_engine(self, engine: ModelEngine, arch: ModelArch, tp: int) -> None:
        g, keep = self.grid, engine.coords.tp_rank == 0 and self.rank == 0
        for b, s in g.shapes:
            ctx = shapes.causal_ctx(s)
            flops = self._flops(arch, tp, b * s, ctx)
            fwd = self._passes(engine, b, s, forward_only=True)
            both = self._passes(engine, b, s, forward_only=False)
            if keep:
                common = {"dtype": self.dtype, "layers": arch.num_layers, "busy": tp, "tp": tp,
                          "hidden": arch.hidden_size}
                self.samples["compute"].append(ComputeSample(flops=flops, time_s=fwd, passes=1, **common))
                self.samples["compute"].append(ComputeSample(flops=3 * flops, time_s=both, passes=3, **common))
        kv = shapes.kv_cache_bytes_per_token(arch, self.dtype_bytes) / tp
        weights = stage_params(arch, value_head=False, tp=tp, pp=1)[0] * self.dtype_bytes
        for b in g.decode_batches:
            for steps in g.decode_steps:
                t = self._generate(engine, b, steps)
                if keep:
                    ctx_len = g.prompt_len + steps / 2
                    prefill = self._flops(arch, tp, b * g.prompt_len, shapes.causal_ctx(g.prompt_len))
                    self.samples["decode"].append(DecodeSample(
                        steps=steps - 1, batch=b, layers=arch.num_layers, bytes=weights + b * ctx_len * kv,
                        prefill_flops=prefill, time_s=t, dtype=self.dtype, busy=tp, tp=tp))

    def dram(self) -> None:
        """CPU only: a matrix-vector product over weights 4x and 8x the last-level cache (64 and
        128 MiB without one known) on rank 0 alone, one thread, the others at a barrier: the rate
        a decode step reads a model that does not fit in the cache."""
        cache = _cache_bytes() or 16 << 20  # unknown: taken as 16 MiB
        if self.rank == 0 and not torch.cuda.is_available():
            for factor in (4, 8):
                weights = torch.randn(factor * cache // 4 // 1024, 1024)
                x = torch.randn(1024)
                t = _timed(lambda w=weights, x=x: torch.mv(w, x), self.grid.repeats, None)
                self.samples["memory"].append(MemorySample(bytes=float(weights.numel() * 4), time_s=t,
                                                           cache_bytes=float(cache)))
                del weights
        dist.barrier()
        self.progress.step("memory beyond the cache")

    def compute_speed(self) -> None:
        """One layer of each larger hidden size at tp 1, forward and forward+backward, and a
        decode-shaped forward (`speed_decode_batch` one-token sequences through
        `speed_decode_layers` layers), on rank 0 alone (the others wait at a barrier), for the
        compute and decode speeds by layer size."""
        g = self.grid
        for hidden in g.speed_hidden:
            arch = synthetic_arch(hidden, 1, g.vocab_size)
            engine = self._engine(arch, _layout((0,)))
            if engine is not None:
                for b, s in g.speed_shapes:
                    flops = self._flops(arch, 1, b * s, shapes.causal_ctx(s))
                    common = {"dtype": self.dtype, "layers": 1, "busy": 1, "tp": 1, "hidden": hidden, "speed": True}
                    for passes, forward_only in ((1, True), (3, False)):
                        t = self._passes(engine, b, s, forward_only=forward_only)
                        self.samples["compute"].append(ComputeSample(flops=passes * flops, time_s=t, passes=passes,
                                                                     **common))
            dist.barrier()
            deep = synthetic_arch(hidden, g.speed_decode_layers, g.vocab_size)
            engine = self._engine(deep, _layout((0,)))
            if engine is not None:
                b = g.speed_decode_batch
                t = self._passes(engine, b, 1, forward_only=True)
                self.samples["compute"].append(ComputeSample(
                    flops=self._flops(deep, 1, b, 1.0), time_s=t, passes=1, dtype=self.dtype, layers=deep.num_layers,
                    busy=1, tp=1, hidden=hidden, speed=True, decode=True))
            dist.barrier()
            self.progress.step(f"compute speed: hidden={hidden}")

    # ---------------------------------------------------------------- contention

    def contention(self) -> None:
        arch = synthetic_arch(self.grid.hidden_sizes[-1], 2, self.grid.vocab_size)
        mine = None
        for r in range(self.n):  # one single-rank engine per rank, built world-collectively
            engine = self._engine(arch, _layout((r,)))
            mine = engine if engine is not None else mine
        b, s = self.grid.shapes[-1]
        for _ in range(3):  # alternating, so a burst of outside load does not decide it (median of 3)
            alone = self._passes(mine, b, s, forward_only=False, wall=True) if self.rank == 0 else 0.0
            dist.barrier()
            together = self._passes(mine, b, s, forward_only=False, wall=True)
            dist.barrier()
            if self.rank == 0 and self.n >= 2:
                self.samples["contention"].append(ContentionSample(devices=self.n, alone_s=alone,
                                                                   together_s=together, cores=_cores()))
        self.progress.step("contention")

    # ---------------------------------------------------------------- threads

    def threads(self) -> None:
        """One layer's forward+backward on rank 0 alone (the others wait at a barrier) with one
        torch thread and with all the cores, alternating (median of `repeats` pairs), wall time."""
        if not self.thread_counts:
            return
        b, s = self.grid.thread_shape
        mb = _batch(b, s, self.grid.vocab_size)
        before = torch.get_num_threads()
        for hidden in self.grid.thread_hidden:
            engine = self._engine(synthetic_arch(hidden, 1, self.grid.vocab_size), _layout((0,)))
            if engine is not None:
                times: dict[int, list[float]] = {t: [] for t in (1, self.thread_counts)}
                try:
                    for t in (1, self.thread_counts) * 2:  # warm-up at both counts
                        torch.set_num_threads(t)
                        _pass(engine, mb, forward_only=False)
                    for _ in range(self.grid.repeats):
                        for t in times:
                            torch.set_num_threads(t)
                            times[t].append(_once(lambda e=engine: _pass(e, mb, forward_only=False), None, wall=True))
                finally:
                    torch.set_num_threads(before)
                self.samples["threads"].append(ThreadSample(
                    hidden=hidden, threads=self.thread_counts, one_s=statistics.median(times[1]),
                    time_s=statistics.median(times[self.thread_counts])))
            dist.barrier()
            self.progress.step(f"threads: hidden={hidden}")

    # ---------------------------------------------------------------- collectives

    def collectives(self) -> None:
        from runtime.engine import platform

        device = platform.device()
        for size in range(2, self.n + 1):
            group = self._group(size)
            if self.rank < size:
                for nbytes in self.grid.collective_bytes:
                    numel = nbytes // 4
                    buf = torch.ones(numel, device=device)
                    out = torch.empty(numel * size, device=device)
                    ops = {"all_reduce": lambda buf=buf, group=group: dist.all_reduce(buf, group=group),
                           "all_gather": lambda buf=buf, out=out, group=group: dist.all_gather_into_tensor(
                               out, buf, group=group)}
                    ops["reduce_scatter"] = lambda buf=buf, out=out, group=group: dist.reduce_scatter_tensor(
                        buf, out, group=group)
                    if size == 2:
                        ops["p2p"] = lambda buf=buf: (dist.send(buf, dst=1) if self.rank == 0
                                                      else dist.recv(buf, src=0))
                    for op, fn in ops.items():
                        t = _timed(fn, self.grid.repeats, group)
                        full = nbytes * size if op in ("all_gather", "reduce_scatter") else nbytes
                        if self.rank == 0:
                            self.samples["collectives"].append(CollectiveSample(
                                op=op, link="intra", group_size=size, bytes=full, time_s=t, busy=size))
            dist.barrier()
            self.progress.step(f"collectives: {size} ranks")

    # ---------------------------------------------------------------- optimizer and calls

    def optimizer_and_calls(self) -> None:
        g = self.grid
        for dp in sorted({1, self.n}):
            for hidden in ((*g.hidden_sizes, *g.optimizer_hidden) if dp == 1 else g.hidden_sizes[:1]):
                arch = synthetic_arch(hidden, max(g.layers), g.vocab_size)
                engine = self._engine(arch, _layout(tuple(range(dp)), dp=dp))
                if engine is not None:
                    self._measure_calls(engine, arch, dp, optimizer_only=hidden != g.hidden_sizes[0])
                dist.barrier()
                self.progress.step(f"optimizer and calls: dp={dp} hidden={hidden}")

    def _measure_calls(self, engine: ModelEngine, arch: ModelArch, dp: int, *, optimizer_only: bool) -> None:
        from graph.catalog import SFTArgs
        from runtime.engine.schedule import Trainer

        g, group = self.grid, engine.pgc.dp if dp > 1 else None
        args, call_ctx = SFTArgs(lr=1e-5), _run_context()
        trainer = engine.trainer = Trainer(engine, args, total_steps=call_ctx.total_steps)
        opt = _timed(lambda: trainer.optimizer.step(), g.repeats, group)
        params = sum(p.numel() for p in engine.module.parameters()) / dp
        if self.rank == 0:
            self.samples["optimizer"].append(OptimizerSample(params=params, time_s=opt, busy=dp))
        if optimizer_only:
            return
        if dp == 1 and self.rank == 0:
            self._rule_calls()
        for seqs in g.call_seqs:
            for kind, overhead in self._call_overheads(engine, trainer, args, call_ctx, seqs * dp, group).items():
                if self.rank == 0:
                    self.samples["calls"].append(CallSample(kind=kind, dp=dp, overhead_s=overhead, seqs=seqs,
                                                            busy=dp))

    def _rule_calls(self) -> None:
        """A rule-based reward call (detokenise, score) on generated arithmetic batches."""
        from graph.catalog import RuleRewardArgs
        from runtime.data.binding import dataset_payloads
        from runtime.data.records import load_records
        from runtime.data.tokenizer import load_tokenizer
        from runtime.interfaces.registry import run_interface

        tok = load_tokenizer("char", self.grid.vocab_size)
        records = load_records(fmt="prompts_with_answers", path=None, generator="arithmetic_1digit",
                               num_records=max(self.grid.call_seqs) * 2, seed=1)
        ctx = CallContext(eos_ids=(tok.eos_id,), decode=tok.decode, rule="arithmetic_exact")
        for seqs in self.grid.call_seqs:
            payloads = dataset_payloads("prompts_with_answers", records[:seqs], list(range(seqs)), tok)
            prompts = next(p for p in payloads.values() if hasattr(p, "input_ids"))
            gen = torch.Generator().manual_seed(seqs)
            response = torch.randint(1, self.grid.vocab_size, (seqs, 2), generator=gen)
            batch = _with_response(prompts, response)
            t = _timed(lambda batch=batch: run_interface("rule_reward", None, batch, RuleRewardArgs(), ctx),
                       self.grid.repeats, None)
            self.samples["calls"].append(CallSample(kind="rule", dp=1, overhead_s=t, seqs=seqs, busy=1))

    def _call_overheads(self, engine: ModelEngine, trainer: Any, args: Any, call_ctx: Any, b: int,
                        group: Any) -> dict[str, float]:
        """What each interface costs beyond its core work, on a batch of `b` sequences."""
        from graph.catalog import GenerateArgs, LogprobsArgs
        from runtime.engine.schedule import run_micro_batches
        from runtime.interfaces.dp import local_part
        from runtime.interfaces.generate import generate_local
        from runtime.interfaces.registry import run_interface

        g = self.grid
        batch = _batch(b, 14, g.vocab_size)
        part = local_part(engine, batch)

        def loss_fn(_mb: Any, out: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
            return out.float().mean() * 0.0, {}

        def fwd_bwd() -> None:
            engine.module.train()
            run_micro_batches(engine, [part], loss_fn, forward_only=False)
            trainer.optimizer.step()

        def forward() -> None:
            engine.module.eval()
            with torch.no_grad():
                run_micro_batches(engine, [part], loss_fn, forward_only=True)

        prompts = _batch(b, g.prompt_len, g.vocab_size, prompt=g.prompt_len)
        gen_args = GenerateArgs(max_new_tokens=4)
        local_prompts = local_part(engine, prompts)
        pairs = {
            "train_step": (fwd_bwd, lambda: trainer.train_step([part], loss_fn, args)),
            "train": (lambda: trainer.train_step([part], loss_fn, args),
                      lambda: run_interface("sft", engine, batch, args, call_ctx)),
            "inference": (forward, lambda: run_interface("logprobs", engine, batch, LogprobsArgs(), call_ctx)),
            "generate": (lambda: generate_local(engine, local_prompts, gen_args, call_ctx),
                         lambda: run_interface("generate", engine, prompts, gen_args, call_ctx)),
        }
        return {kind: _timed_extra(core, whole, g.repeats, group) for kind, (core, whole) in pairs.items()}

    # ---------------------------------------------------------------- reallocations and data

    def moves(self) -> None:
        """Reallocations between layouts of a 2-layer model, and one data transfer."""
        from graph.placement.transfer import plan_transfer
        from runtime.execution.reallocation import StagingPool, execute_transfer

        arch = synthetic_arch(self.grid.hidden_sizes[0], 2, self.grid.vocab_size)
        n = self.n
        layouts = [_layout((0,))]
        if n > 1:
            layouts.append(_layout(tuple(range(1, n)), dp=n - 1))
        if n % 2 == 0:
            layouts.append(_layout(tuple(range(n)), dp=n // 2, tp=2))
            layouts.append(_layout(tuple(range(n)), dp=n))  # from it to tp2 every copy is local
        engines = [self._engine(arch, lay) for lay in layouts]
        staging = StagingPool()

        def shards(engine: ModelEngine) -> dict[str, torch.Tensor] | None:
            return None if engine is None else {k: v.tensor for k, v in engine.named_local_shards().items()}

        for a, b in zip(range(len(layouts)), [*range(1, len(layouts)), 0]):
            if a == b:
                continue
            plan = plan_transfer(arch, layouts[a], layouts[b], model="profile", dtype_bytes=self.dtype_bytes)
            t = _timed(lambda a=a, b=b, plan=plan: execute_transfer(
                plan, arch, self.rank, src_shards=shards(engines[a]), dst_shards=shards(engines[b]),
                staging=staging), self.grid.repeats, dist.group.WORLD)
            if self.rank == 0:
                sent: dict[int, float] = {}
                peers: dict[int, set[int]] = {}
                for src, dst, nbytes in plan.flows():
                    if src != dst:
                        sent[src] = sent.get(src, 0.0) + nbytes
                        sent[dst] = sent.get(dst, 0.0) + nbytes
                        peers.setdefault(src, set()).add(dst)
                        peers.setdefault(dst, set()).add(src)
                self.samples["moves"].append(MoveSample(
                    kind="realloc", busiest_bytes=max(sent.values(), default=0.0),
                    peers=max((len(p) for p in peers.values()), default=0), time_s=t, busy=n))
        if n > 1:
            self._data_move()
        dist.barrier()
        self.progress.step("reallocations and data")

    def _data_move(self) -> None:
        """One SeqBatch (16 sequences with a token field) from rank 0 to rank 1, as the executor sends it."""
        import pickle

        from runtime.execution.p2p import ObjectSender, SlabReceiver

        batch = _batch(16, 16, self.grid.vocab_size)
        batch = batch.with_fields(token_fields={"logprobs": torch.zeros(batch.input_ids.shape)})
        group = self._group(2)

        def send() -> None:  # posted, then waited for until delivered (the sender's whole cost)
            if self.rank == 0:
                sender = ObjectSender(slab=True)
                sender.send(batch, (1,))
                sender.wait()
            elif self.rank == 1:
                SlabReceiver().recv(0)

        if self.rank < 2:
            t = _timed(send, self.grid.repeats, group)
            if self.rank == 0:
                self.samples["moves"].append(MoveSample(kind="data", busiest_bytes=len(pickle.dumps(batch)),
                                                        peers=1, time_s=t, busy=2))

    def run(self) -> dict[str, Any] | None:
        self.contention()
        self.compute_and_decode()
        self.compute_speed()
        self.dram()
        from runtime.profiling.corun import measure_corun

        measure_corun(self, _cores(), _cache_bytes())
        self.collectives()
        self.optimizer_and_calls()
        self.moves()
        self.threads()
        if self.rank != 0:
            return None
        return {k: [s.__dict__ for s in v] for k, v in self.samples.items()}


def profile_worker(ctx: WorkerContext, grid: ProfileGrid, progress: str | None) -> dict[str, Any] | None:
    """Entry point of every rank (see runtime.execution.launch); rank 0 returns the samples."""
    return _Profiler(ctx, grid, progress).run()
