"""The plan executor: every rank walks the same global step order (SPMD).

Per iteration, for each call in the graph's topological order:

1. **reallocate** the call's model into the call's layout when that replica is stale
   (the model's home is its train call's layout, or its first call's): the home and
   replica ranks execute the TransferPlan. A trained model's replica is freed after its
   last use in an iteration and given storage again just before this refresh, so it holds
   memory only while it is in use;
2. **move data**: ranks of the call's mesh that lack an input key receive it from a
   rank of the producer's mesh (every rank of a layout holds a call's whole result);
3. **run** the call on its mesh.

Every step names its participants, and every rank visits the steps in the same order,
so the point-to-point messages pair up and no step waits on a later one: the order is
deadlock-free by construction (`runtime.execution.program`). A rank skips the steps it is
not in, which is how calls on disjoint meshes run at the same time. At the end of an
iteration rank 0 gathers the metrics and appends them to metrics.jsonl.

The worker is a composition of parts with one job each: `EngineSet` (the engines),
`StepDispatcher` (what each step does), `MetricsReporter` (metrics), `Checkpointer`
(EMA, checkpoints, the final models).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from graph.catalog import SCORED_RANKS
from graph.dataset_keys import PTX_KEY, REHEARSAL_POOL_KEY
from graph.overlap import ahead_calls
from graph.sampling import dynamic_sampling
from runtime.data.binding import Payload, dataset_payloads, ptx_payloads
from runtime.data.prompts import fit_prompts
from runtime.data.records import DataError, Record, batch_at, batches, load_records
from runtime.data.tokenizer import load_tokenizer
from runtime.engine import platform
from runtime.execution.checkpointing import Checkpointer
from runtime.execution.dispatch import StepDispatcher
from runtime.execution.engines import EngineSet
from runtime.execution.job import Job
from runtime.execution.launch import WorkerContext, equal_share
from runtime.execution.metrics import IterationLog, MetricsReporter
from runtime.execution.program import Step, busy_ranks, compile_iteration, hoist_sends, rank_program
from runtime.execution.sampling import Resampler, split_program

REFILL_IDS = 1 << 40
"""First prompt id of dynamic sampling's refill rounds: above any iteration's own ids."""


class Worker:
    """One rank's executor."""

    def __init__(self, ctx: WorkerContext, job: Job) -> None:
        start = time.perf_counter()
        platform.apply_platform_patches()
        # the plan's threads, else the launcher's equal share (again: jobs may share a process)
        torch.set_num_threads(job.threads_per_worker or equal_share(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        self.ctx, self.job, self.rank = ctx, job, ctx.rank
        self.graph = job.graph
        torch.manual_seed(job.seed)
        self.engines = EngineSet(self.graph, job.layouts, self.rank, job.seed)
        print(f"rank {self.rank}: built {len(self.engines.by_key)} engines ({self.engines.held()} on this "
              f"rank) in {time.perf_counter() - start:.1f} s", flush=True)
        vocab = min((m.arch.vocab_size for m in self.graph.models.values() if m.arch is not None), default=None)
        self.tok = load_tokenizer(job.data.tokenizer, vocab)
        d = job.data
        self.records = self._fit(load_records(fmt=d.format, path=d.path, generator=d.generator,
                                              num_records=d.num_records, seed=d.seed, prompt_key=d.prompt_key),
                                 "data.path" if d.path else "data.generator")
        self.eval_records: list[Record] | None = None
        if d.eval_path is not None and job.eval_every > 0:
            self.eval_records = self._fit(load_records(fmt=d.format, path=d.eval_path, generator=None, num_records=0,
                                                       seed=d.seed, prompt_key=d.prompt_key), "data.eval_path")
        p = d.ptx
        self.ptx_records: list[Record] | None = None if p is None else load_records(
            fmt=p.format, path=p.path, generator=p.generator, num_records=p.num_records, seed=p.seed)
        self.ahead = ahead_calls(self.graph, job.off_policy_steps)
        spec = dynamic_sampling(self.graph)
        # sends go as soon as their data exists (program.hoist_sends): gloo only, plain programs only
        hoist = not self.ahead and spec is None and not platform.has_cuda()

        def program(first: bool, prologue: bool, last: bool) -> tuple[Step, ...]:
            steps = compile_iteration(self.graph, job.layouts, world_size=ctx.world_size, first=first,
                                      free_replicas=job.free_replicas, ahead=self.ahead, prologue=prologue,
                                      last=last, streamed=job.streamed, fused=job.fused)
            return hoist_sends(self.graph, steps) if hoist else steps

        whole = {(first, prologue, last): program(first, prologue, last)
                 for first in (True, False) for prologue in ((True, False) if self.ahead else (first,))
                 for last in ((False, True) if self.ahead else (False,))}
        self.programs: dict[tuple[bool, bool, bool], Any] = {k: rank_program(v, self.rank) for k, v in whole.items()}
        self.idle = self.rank not in busy_ranks(whole.values(), ctx.world_size) and spec is None
        """The plan gives this rank nothing to do: it builds no batches and posts an empty log
        each iteration, so it takes next to no core from the busy ranks (not with dynamic
        sampling, whose rounds' rewards every rank receives)."""
        self.batch_rows: dict[int, dict[int, Record]] = {}
        """Dataset records by prompt id of the batches built and not yet run (reward functions read them)."""
        # one-step off-policy: the next batch's payloads and log, filled while this iteration runs
        self.upcoming: tuple[dict[str, Payload], IterationLog] | None = None
        self.dispatcher = StepDispatcher(job, self.engines, self.tok, rank=self.rank)
        self.resampler: Resampler | None = None
        if spec is not None:  # DAPO: the sampling calls run in rounds (runtime.execution.sampling)
            self.programs = {key: split_program(steps, spec.calls) for key, steps in self.programs.items()}
            keys = set(self.graph.dataset_keys) - {PTX_KEY, REHEARSAL_POOL_KEY}
            keys.update(k for name in spec.calls for k in self.graph.call(name).outputs)
            self.resampler = Resampler(spec, rewards_rank=job.layouts[spec.rewards_call].mesh.devices[0],
                                       num_prompts=dataset_batch_size(job), keys=frozenset(keys))
        self.checkpointer = Checkpointer(job, self.engines, rank=self.rank, world_size=ctx.world_size)
        self.checkpointer.attach_ema()
        self.start = 0
        history: list[dict[str, Any]] = []
        if job.resume_from is not None:
            self.start, history = self.checkpointer.restore(Path(job.resume_from))
        self.reporter = MetricsReporter(graph=self.graph, rank=self.rank, world_size=ctx.world_size,
                                        run_dir=Path(job.run_dir), name=job.name, iterations=job.iterations,
                                        plot_every=job.plot_every, start=self.start, history=history)

    def _fit(self, records: list[Record], key: str) -> list[Record]:
        """Prompts through the chat template and data.max_prompt_len (runtime.data.prompts); the
        count of dropped prompts goes to the log."""
        d = self.job.data
        if d.format not in ("prompts", "prompts_with_answers"):
            return records
        kept, dropped = fit_prompts(records, self.tok, chat_template=d.chat_template, max_len=d.max_prompt_len,
                                    overlong=d.overlong_prompts)
        if dropped and self.rank == 0:
            print(f"{key}: dropped {dropped} of {len(records)} prompts longer than data.max_prompt_len="
                  f"{d.max_prompt_len} tokens (data.overlong_prompts=truncate keeps them, cut)", flush=True)
        if not kept:
            raise DataError(f"{key}: every prompt is longer than data.max_prompt_len={d.max_prompt_len} tokens; "
                            "raise it or set data.overlong_prompts=truncate")
        return kept

    @property
    def history(self) -> list[dict[str, Any]]:
        """The metrics records so far (rank 0; empty elsewhere)."""
        return self.reporter.history

    def _batch(self, it: int, indices: list[int]) -> dict[str, Payload]:
        """The dataset keys of batch `it` (every rank builds them itself)."""
        ids = [it * len(indices) + j for j in range(len(indices))]
        records = [self.records[i] for i in indices]
        payloads: dict[str, Payload] = dict(dataset_payloads(self.job.data.format, records, ids, self.tok))
        payloads.update(self._ptx_payloads(it))
        payloads.update(self._rehearsal_pool_payload())
        self.batch_rows[it] = dict(zip(ids, records))
        return payloads

    def _rehearsal_pool_payload(self) -> dict[str, Payload]:
        """The rehearsal_pool key (the whole pool, the same every iteration) when a call reads it:
        the pool of the ppo_actor ranking it by advantage (graph.templates.with_rehearsal_pool)."""
        if REHEARSAL_POOL_KEY not in self.graph.dataset_keys:
            return {}
        path = next(c.args.rehearsal_path for c in self.graph.calls
                    if c.interface == "ppo_actor" and getattr(c.args, "rehearsal_rank", "") in SCORED_RANKS)
        return {REHEARSAL_POOL_KEY: self.dispatcher.rehearsal_pool(str(path))}

    def iteration(self, it: int, indices: list[int], next_indices: list[int] | None = None) -> None:
        """Run iteration `it` (0-based) on the dataset records `indices`.

        One step off-policy, the ahead generate calls also produce batch it+1 (on
        `next_indices`); its payloads and log wait in `self.upcoming` for the next iteration.
        A resumed run (or the first iteration) generates its own batch first.
        """
        start = time.perf_counter()
        if self.idle:  # a plan's idle worker builds no batch (that took 5% of a core) ...
            log = IterationLog()
            log.elapsed_s, log.ended_at = time.perf_counter() - start, time.time()
            # ... but posts its empty log: waiting for rank 0 to take the previous one keeps it
            # within an iteration of the busy ranks (a run of several jobs, a checkpoint's collectives)
            self.reporter.report(it, log)
            return
        prologue = self.upcoming is None
        if prologue:
            payloads, log = self._batch(it, indices), IterationLog()
        else:
            assert self.upcoming is not None
            payloads, log = self.upcoming
        due = self.eval_records is not None and it % self.job.eval_every == 0
        self.dispatcher.eval_records = self.eval_records if due else None
        if not self.ahead:
            self.dispatcher.rows = self.batch_rows.pop(it, {})
            steps = self.programs[(it == 0, it == 0, False)]
            if self.resampler is not None:  # dynamic sampling (refused with off-policy at load)
                sampling, steps = steps
                payloads = self.resampler.run(sampling, payloads, log,
                                              lambda step, p: self.dispatcher.run(step, p, it, log),
                                              lambda r: self._refill_payloads(it, r, len(indices)))
            self.dispatcher.prepost(steps)  # after the sampling rounds, whose receives are not counted
            for step in steps:
                self.dispatcher.run(step, payloads, it, log)
        else:
            last = next_indices is None
            upcoming = (self._batch(it + 1, next_indices), IterationLog()) if next_indices is not None else None
            self.dispatcher.rows = {**self.batch_rows.pop(it, {}), **self.batch_rows.get(it + 1, {})}
            steps = self.programs[(it == 0, prologue, last)]
            self.dispatcher.prepost(steps)
            for step in steps:
                if step.ahead:
                    assert upcoming is not None
                    self.dispatcher.run(step, upcoming[0], it + 1, upcoming[1])
                else:
                    self.dispatcher.run(step, payloads, it, log)
            self.upcoming = upcoming
            for name in self.ahead:
                log.staleness[name] = 0 if prologue else self.job.off_policy_steps
        self.dispatcher.finish_sends()
        log.elapsed_s = time.perf_counter() - start
        log.ended_at = time.time()
        self.reporter.report(it, log)

    def _refill_payloads(self, it: int, r: int, size: int) -> dict[str, Payload]:
        """Dataset payloads of refill round r >= 1 of iteration `it` (dynamic sampling): records
        from a stream of their own, with prompt ids from REFILL_IDS up."""
        assert self.resampler is not None
        rounds = self.resampler.spec.max_rounds
        indices = batch_at(len(self.records), size, self.job.data.seed + 7919 * r, it)
        base = REFILL_IDS + (it * (rounds - 1) + (r - 1)) * size  # fixed: a resumed run draws alike
        records = [self.records[i] for i in indices]
        ids = [base + j for j in range(size)]
        # reward functions read the refill samples' columns too
        self.dispatcher.rows = {**self.dispatcher.rows, **dict(zip(ids, records))}
        return dict(dataset_payloads(self.job.data.format, records, ids, self.tok))

    def _ptx_payloads(self, it: int) -> dict[str, Payload]:
        """The ptx key of iteration `it`: as many ptx records as the call reading them trains on."""
        ptx = self.job.data.ptx
        if ptx is None or self.ptx_records is None:
            return {}
        size = max(c.batch_size for c in self.graph.calls if PTX_KEY in c.inputs)
        indices = batch_at(len(self.ptx_records), size, ptx.seed, it)
        records = [self.ptx_records[i] for i in indices]
        return ptx_payloads(ptx.format, records, [it * size + j for j in range(size)], self.tok)

    def run(self) -> list[dict[str, Any]]:
        """Every remaining iteration, checkpoints when due, then the trained models."""
        order = batches(len(self.records), dataset_batch_size(self.job), self.job.data.seed, start=self.start)
        upcoming = next(order)
        for it in range(self.start, self.job.iterations):
            indices, upcoming = upcoming, next(order)
            start = time.perf_counter()
            self.iteration(it, indices, upcoming if it + 1 < self.job.iterations else None)
            if not self.idle:
                print(f"rank {self.rank}: iteration {it + 1} in {time.perf_counter() - start:.2f} s", flush=True)
            if self.checkpointer.save_due(it + 1):
                self.reporter.flush()  # the checkpoint's metrics are on disk before it
                self.checkpointer.save(it + 1, dict(self.job.layouts))
        self.reporter.close()
        self.checkpointer.save_models(Path(self.job.run_dir) / "models")
        return self.history


def dataset_batch_size(job: Job) -> int:
    """Records per iteration: the batch of the calls that read the dataset."""
    graph = job.graph
    for call in graph.calls:
        if call.inputs and call.inputs[0] in graph.dataset_keys and call.inputs[0] != REHEARSAL_POOL_KEY:
            per_record = 2 if call.inputs[0] == "pairs" else 1
            return call.batch_size // per_record
    raise AssertionError("bug: no call reads the dataset (the graph's validation should have refused it)")


def worker_main(ctx: WorkerContext, job: Job) -> list[dict[str, Any]]:
    """Entry point of every rank (see runtime.execution.launch)."""
    return Worker(ctx, job).run()
