"""The plan executor: every rank walks the same global step order (SPMD).

Per iteration, for each call in the graph's topological order:

1. **reallocate** the call's model into the call's layout when that replica is stale
   (the model's home is its train call's layout, or its first call's): the home and
   replica ranks execute the cost model's TransferPlan. A trained model's replica is
   freed after its last use in an iteration and given storage again just before this
   refresh, so it holds memory only while it is in use;
2. **move data**: ranks of the call's mesh that lack an input key receive it from a
   rank of the producer's mesh (every rank of a layout holds a call's whole result);
3. **run** the call on its mesh.

Every step names its participants, and every rank visits the steps in the same order,
so the point-to-point messages pair up and no step waits on a later one: the order is
deadlock-free by construction. A rank skips the steps it is not in, which is how calls
on disjoint meshes run at the same time. At the end of an iteration rank 0 gathers
the metrics and appends them to metrics.jsonl.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from graph.dataflow import DataflowGraph
from graph.placement.layout import Layout
from graph.placement.transfer import TransferPlan, plan_transfer
from graph.spec import Call, CallKind, ModelSpec
from runtime.data.binding import (
    Field,
    Payload,
    assemble_inputs,
    dataset_payloads,
    extract_outputs,
    ptx_payloads,
    side_inputs,
)
from runtime.data.records import batch_at, batches, load_records
from runtime.data.tokenizer import load_tokenizer
from runtime.execution.launch import WorkerContext
from runtime.execution.program import Step, compile_iteration, home_layouts, placement, rank_program
from runtime.execution.reallocation import StagingPool, execute_transfer
from runtime.rundir.metrics import MetricsWriter, TensorBoardWriter, plot_curves


@dataclass(frozen=True, kw_only=True)
class PtxSettings:
    """Where the ptx records come from (plain copy of data.ptx)."""

    format: str
    path: str | None
    generator: str | None
    num_records: int
    seed: int


@dataclass(frozen=True, kw_only=True)
class DataSettings:
    """Where the records come from (plain copy of the experiment's data section)."""

    format: str
    path: str | None
    generator: str | None
    num_records: int
    seed: int
    tokenizer: str
    ptx: PtxSettings | None = None
    """The ptx dataset (data.ptx), when the PPO actor mixes in a pretraining/SFT loss."""


@dataclass(frozen=True, kw_only=True)
class Job:
    """Everything a worker needs: plain data, pickled to every rank."""

    name: str
    graph: DataflowGraph
    layouts: Mapping[str, Layout]
    data: DataSettings
    iterations: int
    seed: int
    run_dir: str
    log_every: int = 1
    plot_every: int = 5
    free_replicas: bool = True
    save_every: int = 0
    """Checkpoint every N iterations (0: only after the last); see runtime.rundir.rank_state."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept under RUN_DIR/checkpoints."""
    resume_from: str | None = None
    """A verified checkpoint directory to restore before the first iteration."""
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    """The experiment's fingerprint, recorded in every checkpoint's meta.json."""
    ema_decay: float = 0.0
    """EMA decay of the models in `ema_models` (0: no EMA)."""
    ema_models: tuple[str, ...] = ()
    """Roles whose home engine keeps an EMA of its weights."""


@dataclass
class _IterationLog:
    call_time_s: dict[str, float] = field(default_factory=dict)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    rewards: dict[str, float] = field(default_factory=dict)
    response_len: dict[str, float] = field(default_factory=dict)
    realloc_time_s: float = 0.0
    realloc_bytes: int = 0
    freed_bytes: int = 0
    elapsed_s: float = 0.0


# --------------------------------------------------------------------------- engines


def model_seed(graph: DataflowGraph, role: str, seed: int) -> int:
    """Initial-weight seed of a model; `init_from` shares the source's seed (and weights)."""
    roles = list(graph.models)
    source = graph.models[role].init_from or role
    return seed * 1009 + roles.index(source)


class Engines:
    """Every (model, layout) engine this rank holds, built world-collectively in one order."""

    def __init__(self, graph: DataflowGraph, layouts: Mapping[str, Layout], rank: int, seed: int) -> None:
        from runtime.engine.model_engine import build_engine

        self.homes = home_layouts(graph, layouts)
        self.by_key: dict[tuple[str, Layout], Any] = {}
        for role, model in graph.models.items():
            if model.is_rule or role not in self.homes:
                continue
            wanted = [self.homes[role]] + [placement(layouts[c.name]) for c in graph.calls_of(role)]
            for layout in dict.fromkeys(wanted):  # unique, home first
                self.by_key[(role, layout)] = build_engine(model, layout, rank,
                                                           seed=model_seed(graph, role, seed))
        self.freed: dict[tuple[str, Layout], list[torch.Size]] = {}

    def get(self, role: str, layout: Layout) -> Any:
        return self.by_key.get((role, placement(layout)))

    def free(self, role: str, layout: Layout) -> int:
        """Drop a replica's parameter storage until its next refresh; returns the bytes freed."""
        engine, key = self.get(role, layout), (role, placement(layout))
        if engine is None or key in self.freed:
            return 0
        params = engine.refreshed_parameters()  # a LoRA replica keeps its frozen base
        self.freed[key] = [p.shape for p in params]
        freed = 0
        for param in params:
            freed += param.numel() * param.element_size()
            param.data = torch.empty(0, dtype=param.dtype, device=param.device)
        return freed

    def materialize(self, role: str, layout: Layout) -> None:
        """Give a freed replica storage again (its contents are about to be overwritten)."""
        shapes = self.freed.pop((role, placement(layout)), None)
        engine = self.get(role, layout)
        if shapes is None or engine is None:
            return
        for param, shape in zip(engine.refreshed_parameters(), shapes):
            param.data = torch.empty(shape, dtype=param.dtype, device=param.device)



def _shards(engine: Any) -> dict[str, torch.Tensor] | None:
    return None if engine is None else {n: s.tensor for n, s in engine.named_local_shards().items()}


# --------------------------------------------------------------------------- the worker


class Worker:
    """One rank's executor."""

    def __init__(self, ctx: WorkerContext, job: Job) -> None:
        from runtime.engine import platform

        start = time.perf_counter()
        platform.apply_platform_patches()
        self.ctx, self.job, self.rank = ctx, job, ctx.rank
        self.graph = job.graph
        self.layouts = job.layouts
        torch.manual_seed(job.seed)
        self.engines = Engines(self.graph, self.layouts, self.rank, job.seed)
        held = sum(e is not None for e in self.engines.by_key.values())
        print(f"rank {self.rank}: built {len(self.engines.by_key)} engines ({held} on this rank) in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        vocab = min((m.arch.vocab_size for m in self.graph.models.values() if m.arch is not None), default=None)
        self.tok = load_tokenizer(job.data.tokenizer, vocab)
        d = job.data
        self.records = load_records(fmt=d.format, path=d.path, generator=d.generator,
                                    num_records=d.num_records, seed=d.seed)
        p = d.ptx
        self.ptx_records = None if p is None else load_records(
            fmt=p.format, path=p.path, generator=p.generator, num_records=p.num_records, seed=p.seed)
        self.plans: dict[tuple[str, Layout], TransferPlan] = {}
        self.dtype_bytes = 2 if platform.has_cuda() else 4
        self.staging = StagingPool()
        self.metrics = MetricsWriter(Path(job.run_dir) / "metrics.jsonl") if self.rank == 0 else None
        self.programs = {
            first: rank_program(compile_iteration(self.graph, self.layouts, world_size=ctx.world_size,
                                                  first=first, free_replicas=job.free_replicas), self.rank)
            for first in (True, False)
        }
        self.history: list[dict[str, Any]] = []
        self.start = 0
        self._attach_ema()
        if job.resume_from is not None:
            self._restore(Path(job.resume_from))
        # a resumed run hides the events a killed attempt logged after its checkpoint
        self.tensorboard = TensorBoardWriter(Path(job.run_dir) / "tensorboard",
                                             purge_step=self.start + 1 if self.start else None) \
            if self.rank == 0 else None

    # ---------------------------------------------------------------- checkpoints

    def _attach_ema(self) -> None:
        from runtime.engine.ema import EMA

        for role in self.job.ema_models if self.job.ema_decay > 0 else ():
            engine = self.engines.get(role, self.engines.homes[role])
            if engine is not None:
                engine.ema = EMA(engine, self.job.ema_decay)

    def _make_trainer(self, role: str, engine: Any) -> Any:
        from runtime.engine.schedule import Trainer

        call = next(c for c in self.graph.calls_of(role) if c.kind is CallKind.TRAIN)
        return Trainer(engine, call.args, total_steps=self.job.iterations)

    def _restore(self, path: Path) -> None:
        from runtime.rundir import checkpoints as run_checkpoint
        from runtime.rundir import rank_state as train_state
        from runtime.rundir.metrics import read_metrics

        meta = run_checkpoint.CheckpointMeta.from_json((path / run_checkpoint.META).read_text())
        state = train_state.read_rank_file(path / run_checkpoint.rank_file(self.rank))
        train_state.restore(state, self.engines, _trained_models(self.graph), self._make_trainer)
        self.start = meta.data_position
        if self.rank == 0:
            self.history = [r for r in read_metrics(Path(self.job.run_dir) / "metrics.jsonl")
                            if int(r.get("iteration", 0)) <= meta.iteration]
            print(f"rank 0: resumed from {path} (iteration {meta.iteration})", flush=True)

    def save_checkpoint(self, iteration: int) -> None:
        """Write RUN_DIR/checkpoints/iter_NNNNNN (world-collective)."""
        from runtime.rundir import checkpoints as run_checkpoint
        from runtime.rundir import rank_state as train_state

        start = time.perf_counter()
        state = train_state.collect(self.engines, _trained_models(self.graph))
        path = train_state.save_checkpoint(
            Path(self.job.run_dir) / "checkpoints", iteration, state, rank=self.rank,
            world_size=self.ctx.world_size, fingerprint=self.job.fingerprint,
            layouts=run_checkpoint.plan_layouts(self.layouts), keep=self.job.keep_checkpoints)
        if path is not None:
            size = sum(f.stat().st_size for f in path.iterdir())
            print(f"rank 0: checkpoint {path} ({size / 2**20:.1f} MiB) in {time.perf_counter() - start:.2f} s",
                  flush=True)

    def _save_due(self, iteration: int) -> bool:
        every = self.job.save_every
        return iteration == self.job.iterations or (every > 0 and iteration % every == 0)

    # ---------------------------------------------------------------- steps

    def _reallocate(self, model: ModelSpec, layout: Layout, log: _IterationLog) -> None:
        role, layout = model.role, placement(layout)
        home = self.engines.homes[role]
        plan = self.plans.get((role, layout))
        if plan is None:
            assert model.arch is not None
            # every rank derives the same plan (its byte counts set the chunking), so the
            # dtype comes from the platform, not from whether this rank holds an engine
            # a LoRA model's replicas keep their frozen base: only adapters (+ value head) move
            plan = plan_transfer(model.arch, home, layout, model=role, value_head=model.value_head,
                                 dtype_bytes=self.dtype_bytes, lora=model.lora,
                                 trainable_only=model.lora is not None)
            self.plans[(role, layout)] = plan
        self.engines.materialize(role, layout)
        replica = self.engines.get(role, layout)
        stats = execute_transfer(plan, model.arch, self.rank, src_shards=_shards(self.engines.get(role, home)),
                                 dst_shards=_shards(replica), value_head=model.value_head, staging=self.staging,
                                 lora=model.lora)
        if replica is not None:
            replica.weights_changed()
        log.realloc_time_s += stats.time_s
        log.realloc_bytes += stats.bytes_received

    def _send(self, step: Step, payloads: dict[str, Payload]) -> None:
        if self.rank == step.src:
            dist.send_object_list([payloads[step.key]], dst=step.dst)
        else:
            box: list[Any] = [None]
            dist.recv_object_list(box, src=step.src)
            payloads[step.key] = box[0]

    def _run(self, call: Call, layout: Layout, payloads: dict[str, Payload], it: int,
             log: _IterationLog) -> None:
        from runtime.interfaces.registry import CallContext, run_interface

        model = self.graph.models[call.model]
        engine = self.engines.get(call.model, layout)
        ctx = CallContext(eos_ids=(self.tok.eos_id,), decode=self.tok.decode, rule=model.rule,
                          seed=self.job.seed, step=it, total_steps=self.job.iterations,
                          micro_batches=layout.micro_batches, side_inputs=side_inputs(call, payloads))
        batch = assemble_inputs(call, payloads)
        start = time.perf_counter()
        result = run_interface(call.interface, engine, batch, call.args, ctx)
        elapsed = time.perf_counter() - start
        payloads.update(extract_outputs(call, result))
        if self.rank != layout.mesh.devices[0]:
            return
        log.call_time_s[call.name] = elapsed
        if isinstance(result, dict):
            log.stats[call.name] = {k: float(v) for k, v in result.items()}
        elif "accuracy" in getattr(result, "seq_fields", {}):  # a rule's exact-match rate
            log.stats[call.name] = {"accuracy": float(result.seq_fields["accuracy"].float().mean())}
        for key, role in zip(call.outputs, _output_roles(call)):
            payload = payloads[key]
            if role == "rewards" and isinstance(payload, Field):
                log.rewards[call.name] = float(payload.values.float().mean())
            if role == "sequences" and not isinstance(payload, Field):
                log.response_len[call.name] = float((payload.seq_lens - payload.prompt_lens).float().mean())

    # ---------------------------------------------------------------- iterations

    def iteration(self, it: int, indices: list[int]) -> None:
        log = _IterationLog()
        start = time.perf_counter()
        ids = [it * len(indices) + j for j in range(len(indices))]
        records = [self.records[i] for i in indices]
        # every rank builds the dataset keys itself
        payloads: dict[str, Payload] = dict(dataset_payloads(self.job.data.format, records, ids, self.tok))
        payloads.update(self._ptx_payloads(it))
        for step in self.programs[it == 0]:
            call = self.graph.call(step.call)
            layout = self.layouts[step.call]
            if step.kind == "realloc":
                self._reallocate(self.graph.models[call.model], layout, log)
            elif step.kind == "send":
                self._send(step, payloads)
            elif step.kind == "run":
                self._run(call, layout, payloads, it, log)
            else:
                log.freed_bytes += self.engines.free(call.model, layout)
        self._report(it, log, time.perf_counter() - start)

    def _ptx_payloads(self, it: int) -> dict[str, Payload]:
        """The ptx key of iteration `it`: as many ptx records as the call reading them trains on."""
        ptx = self.job.data.ptx
        if ptx is None or self.ptx_records is None:
            return {}
        from graph.dataset_keys import PTX_KEY

        size = max(c.batch_size for c in self.graph.calls if PTX_KEY in c.inputs)
        indices = batch_at(len(self.ptx_records), size, ptx.seed, it)
        records = [self.ptx_records[i] for i in indices]
        return ptx_payloads(ptx.format, records, [it * size + j for j in range(size)], self.tok)

    def _report(self, it: int, log: _IterationLog, elapsed: float) -> None:
        log.elapsed_s = elapsed
        gathered: list[Any] = [None] * self.ctx.world_size if self.rank == 0 else []
        dist.gather_object(log, gathered if self.rank == 0 else None, dst=0)
        if self.rank != 0:
            return
        # an iteration lasts as long as its slowest rank (rank 0 may run no call at all)
        record: dict[str, Any] = {"iteration": it + 1, "iter_time_s": max(p.elapsed_s for p in gathered),
                                  "call_time_s": {}, "realloc_time_s": 0.0, "realloc_bytes": 0}
        for part in gathered:
            record["call_time_s"].update(part.call_time_s)
            record["realloc_time_s"] = max(record["realloc_time_s"], part.realloc_time_s)
            record["realloc_bytes"] += part.realloc_bytes
            record["freed_bytes"] = record.get("freed_bytes", 0) + part.freed_bytes
            for call, stats in part.stats.items():
                for k, v in stats.items():
                    record[f"{call}/{k}"] = v
            for call, value in part.rewards.items():
                record[f"{call}/reward"] = value
            for call, value in part.response_len.items():
                record[f"{call}/response_len"] = value
        record.update(_headline(self.graph, record))
        assert self.metrics is not None
        self.metrics.write(record)
        if self.tensorboard is not None:
            self.tensorboard.write(record)
        self.history.append(record)
        every = max(self.job.plot_every, self.job.iterations // 20)  # ~20 redraws a run: a plot costs ~0.5 s
        if (it + 1) % every == 0 or it + 1 == self.job.iterations:
            plot_curves(self.history, Path(self.job.run_dir) / "curves.png", title=self.job.name)

    def run(self) -> list[dict[str, Any]]:
        batch_size = _dataset_batch_size(self.graph)
        order = batches(len(self.records), batch_size, self.job.data.seed, start=self.start)
        for it, indices in zip(range(self.start, self.job.iterations), order):
            start = time.perf_counter()
            self.iteration(it, indices)
            print(f"rank {self.rank}: iteration {it + 1} in {time.perf_counter() - start:.2f} s", flush=True)
            if self._save_due(it + 1):
                self.save_checkpoint(it + 1)
        if self.tensorboard is not None:
            self.tensorboard.close()
        self.save_models(Path(self.job.run_dir) / "models")
        return self.history

    def save_models(self, root: Path) -> None:
        """Write every trained model, from its home layout, as a HF checkpoint `root/ROLE`."""
        from runtime.engine.ema import save_ema_hf

        trained = _trained_models(self.graph)
        saved = list(trained)
        for role in trained:
            engine = self.engines.get(role, self.engines.homes[role])
            if engine is not None:
                engine.save_hf(str(root / role))
            if role in self.job.ema_models and self.job.ema_decay > 0:
                saved.append(f"{role}_ema")
                if engine is not None:
                    save_ema_hf(engine, engine.ema, root / f"{role}_ema")
        dist.barrier()
        if self.rank == 0 and trained:
            print(f"rank 0: saved {', '.join(saved)} under {root}", flush=True)


def _trained_models(graph: DataflowGraph) -> list[str]:
    """Roles of the models some call trains, in graph order."""
    return [role for role in graph.models
            if any(c.kind is CallKind.TRAIN for c in graph.calls_of(role))]


def _output_roles(call: Call) -> tuple[str, ...]:
    from graph.catalog import get_interface

    return get_interface(call.interface).outputs


def _dataset_batch_size(graph: DataflowGraph) -> int:
    """Records per iteration: the batch of the calls that read the dataset."""
    for call in graph.calls:
        if call.inputs and call.inputs[0] in graph.dataset_keys:
            per_record = 2 if call.inputs[0] == "pairs" else 1
            return call.batch_size // per_record
    raise ValueError("no call reads the dataset; the graph needs a call whose first input is a dataset key")


def _headline(graph: DataflowGraph, record: Mapping[str, Any]) -> dict[str, float]:
    """The console's summary numbers: reward, KL and the losses of the train calls."""
    out: dict[str, float] = {}
    for call in graph.calls:
        if f"{call.name}/reward" in record and "reward" not in out:
            out["reward"] = record[f"{call.name}/reward"]
        if f"{call.name}/accuracy" in record and "accuracy" not in out:
            out["accuracy"] = record[f"{call.name}/accuracy"]
        if call.kind is CallKind.TRAIN:
            loss = record.get(f"{call.name}/loss")
            if loss is not None:
                key = "critic_loss" if graph.models[call.model].value_head else "actor_loss"
                out[key if len(graph.calls) > 1 else "loss"] = loss
            kl = record.get(f"{call.name}/kl", record.get(f"{call.name}/ref_kl"))  # PPO: KL in the reward
            if kl is not None and "kl" not in out:
                out["kl"] = kl
    return out


def worker_main(ctx: WorkerContext, job: Job) -> list[dict[str, Any]]:
    """Entry point of every rank (see runtime.execution.launch)."""
    return Worker(ctx, job).run()
