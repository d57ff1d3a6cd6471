"""Step dispatch: what a rank does for each kind of step of its program.

`StepDispatcher.run(step, payloads, it, log)` executes one step:

- `REALLOC`: refresh the model's replica in the call's layout from its home layout,
  executing the TransferPlan `graph.placement.transfer.plan_transfer` derives;
- `SEND`: the step's `src` rank sends a data key's payload to its `dst` rank, without
  waiting for it to be taken (`runtime.execution.p2p`);
- `RUN`: run the call's interface on this rank's engine;
- `FREE`: drop a trained model's replica storage after its last use in the iteration;
- `STREAM`: a generate call streaming finished samples into inference calls on other ranks
  (`runtime.execution.streaming`);
- `FUSE`: two train calls on one placement, their steps in one pipeline (`runtime.engine.fused`).

A step of any other kind is a bug and raises at once (the step types are an enum; the
table below must cover every member, which a test checks).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from graph.dataflow import DataflowGraph
from graph.placement.layout import Layout
from graph.placement.transfer import TransferPlan, plan_transfer
from graph.spec import Call, CallKind, ModelSpec
from runtime.data.batch import SeqBatch
from runtime.data.binding import (
    Field,
    Payload,
    assemble_inputs,
    dataset_payloads,
    extract_outputs,
    side_fields,
    side_inputs,
)
from runtime.data.records import Record, load_records
from runtime.data.tokenizer import Tokenizer
from runtime.engine import fused, platform
from runtime.execution import streaming
from runtime.execution.engines import EngineSet, local_shards
from runtime.execution.evaluation import evaluate, reward_call
from runtime.execution.job import Job
from runtime.execution.metrics import IterationLog
from runtime.execution.p2p import ObjectSender, SlabReceiver, early_receives
from runtime.execution.program import Step, StepKind, placement
from runtime.execution.reallocation import StagingPool, execute_transfer
from runtime.execution.trace import step_label
from runtime.interfaces import CallContext, run_interface
from runtime.rewards.functions import load_functions

Handler = Callable[[Step, dict[str, Payload], int, IterationLog], None]


class StepDispatcher:
    """Executes one rank's steps against its engines and the iteration's payloads."""

    def __init__(self, job: Job, engines: EngineSet, tokenizer: Tokenizer, *, rank: int) -> None:
        self.job, self.engines, self.tok, self.rank = job, engines, tokenizer, rank
        self.graph: DataflowGraph = job.graph
        self.plans: dict[tuple[str, Layout], TransferPlan] = {}
        """Reallocation plans, derived once per (model, replica placement)."""
        # every rank derives the same plan (its byte counts set the chunking), so the dtype
        # comes from the platform, not from whether this rank holds an engine
        self.dtype_bytes = 2 if platform.has_cuda() else 4
        self.staging = StagingPool()
        self.sends = ObjectSender(slab=True)
        """This iteration's pending sends of payloads to other ranks."""
        self.receives = SlabReceiver()
        """Payload receives, posted when an iteration starts (`prepost`)."""
        # the user's reward functions, loaded once per worker (the front door checked them)
        self.reward_functions = {role: tuple(load_functions(m.functions))
                                 for role, m in self.graph.models.items() if m.functions}
        self.rows: Mapping[int, Record] = {}
        """This iteration's dataset records by prompt id (the worker sets them)."""
        self.eval_records: list[Record] | None = None
        """Validation records to score after this iteration's generate call; None: not this iteration."""
        self.rehearsal_pools: dict[str, SeqBatch] = {}
        """Selective Rehearsal pools (graph.train.rehearsal_source=data) by path, tokenised once."""

    HANDLERS: dict[StepKind, str] = {
        StepKind.REALLOC: "_reallocate",
        StepKind.SEND: "_send",
        StepKind.RUN: "_run",
        StepKind.FREE: "_free",
        StepKind.STREAM: "_stream",
        StepKind.FUSE: "_fuse",
    }
    """Step kind -> the method that executes it."""

    def run(self, step: Step, payloads: dict[str, Payload], it: int, log: IterationLog) -> None:
        """Execute `step` of iteration `it`; the payloads hold the data keys this rank has."""
        name = self.HANDLERS.get(step.kind)
        if name is None:
            raise AssertionError(f"bug: no handler for step kind {step.kind!r} ({step})")
        handler: Handler = getattr(self, name)
        start = time.time()  # wall clock: the trace lines up the ranks' steps (runtime.execution.trace)
        handler(step, payloads, it, log)
        log.spans.append((step.kind.name, step_label(step, self.graph), start, time.time()))

    # ---------------------------------------------------------------- handlers

    def _reallocate(self, step: Step, payloads: dict[str, Payload], it: int, log: IterationLog) -> None:
        call = self.graph.call(step.call)
        model: ModelSpec = self.graph.models[call.model]
        role, layout = model.role, placement(self.job.layouts[step.call])
        home = self.engines.homes[role]
        plan = self.plans.get((role, layout))
        if plan is None:
            assert model.arch is not None
            # a LoRA model's replicas keep their frozen base: only adapters (+ value head) move
            plan = plan_transfer(model.arch, home, layout, model=role, value_head=model.value_head,
                                 dtype_bytes=self.dtype_bytes, lora=model.lora,
                                 trainable_only=model.lora is not None)
            self.plans[(role, layout)] = plan
        self.engines.materialize(role, layout)
        replica = self.engines.get(role, layout)
        stats = execute_transfer(plan, model.arch, self.rank, src_shards=local_shards(self.engines.home(role)),
                                 dst_shards=local_shards(replica), value_head=model.value_head,
                                 staging=self.staging, lora=model.lora)
        if replica is not None:
            replica.weights_changed()
        log.realloc_time_s += stats.time_s
        log.realloc_bytes += stats.bytes_received

    def _send(self, step: Step, payloads: dict[str, Payload], it: int, log: IterationLog) -> None:
        """The sender posts the payload and goes on (`finish_sends` ends its sends); the receiver waits for it."""
        if self.rank == step.src:
            self.sends.send(payloads[step.key], (step.dst,))
        else:
            payloads[step.key] = self.receives.recv(step.src)

    def prepost(self, steps: tuple[Step, ...]) -> None:
        """Post the receives of the payloads `steps` send this rank, before running them in order.

        gloo only (`runtime.execution.p2p`): the payloads' bytes then arrive while this rank
        runs its calls, instead of when it reaches the receive and waits for the sender's
        transport thread. Every rank runs its steps in the program's order and the messages
        of one source and tag stay in order, so the k-th receive posted for a source takes
        that source's k-th payload to this rank.
        """
        if not early_receives():
            return
        for step in steps:
            if step.kind is StepKind.SEND and step.dst == self.rank and step.src != self.rank:
                self.receives.post(step.src)

    def finish_sends(self) -> None:
        """Wait until every payload this rank sent has been delivered (the end of an iteration)."""
        self.sends.wait()
        if self.receives.outstanding():
            raise AssertionError(f"bug: rank {self.rank} ended an iteration with "
                                 f"{self.receives.outstanding()} posted payload receive(s) not taken")

    def _context(self, call: Call, payloads: dict[str, Payload], it: int, **extra: Any) -> CallContext:
        layout = self.job.layouts[call.name]
        return CallContext(eos_ids=(self.tok.eos_id,), decode=self.tok.decode,
                           rule=self.graph.models[call.model].rule, seed=self.job.seed, step=it,
                           total_steps=self.job.iterations, micro_batches=layout.micro_batches,
                           side_inputs={**side_inputs(call, payloads), **self._rehearsal_pool(call, payloads)},
                           reward_functions=self.reward_functions.get(call.model, ()),
                           reward_time_limit_s=self.graph.models[call.model].time_limit_s,
                           rows=self._sample_rows(call, payloads), **extra)

    def _rehearsal_pool(self, call: Call, payloads: Mapping[str, Payload]) -> dict[str, SeqBatch]:
        """{"rehearsal_pool": the whole pool} for a call rehearsing from data, else {}; with the
        reward model's scores of the pool (input role pool_scores, rehearsal_rank=advantage) as
        its sequence field `pool_scores`. With the policy's responses to the pool's prompts
        (input role pool_responses, rehearsal_rank=advantage_policy) those responses are the
        pool: the pairs scored, ranked and rehearsed."""
        args = call.args
        if getattr(args, "rehearsal_source", "rollouts") != "data" or float(args.rehearsal_coef) <= 0:
            return {}
        pool = self.rehearsal_pool(str(args.rehearsal_path))
        responses = side_inputs(call, payloads).get("pool_responses")
        if responses is not None:
            if sorted(responses.ids) != sorted(pool.ids):
                raise ValueError(f"call {call.name!r}: the pool's responses cover other samples than the pool")
            pool = responses
        scores = side_fields(call, payloads).get("pool_scores")
        if scores is not None:
            pool = pool.with_fields(seq_fields={"pool_scores": scores.aligned(pool.ids)})
        return {"rehearsal_pool": pool}

    def rehearsal_pool(self, path: str) -> SeqBatch:
        """The pool at `path` (prompt + answer sequences, ids 0..n-1), read and tokenised once."""
        if path not in self.rehearsal_pools:
            records = load_records(fmt="prompt_answer", path=path, generator=None, num_records=0, seed=0)
            self.rehearsal_pools[path] = dataset_payloads("prompt_answer", records, range(len(records)),
                                                          self.tok)["prompt_answer"]
        return self.rehearsal_pools[path]

    def _run(self, step: Step, payloads: dict[str, Payload], it: int, log: IterationLog,
             **extra: Any) -> None:
        call: Call = self.graph.call(step.call)
        layout = self.job.layouts[step.call]
        engine = self.engines.get(call.model, layout)
        ctx = self._context(call, payloads, it, **extra)
        batch = assemble_inputs(call, payloads)
        start = time.perf_counter()
        result = run_interface(call.interface, engine, batch, call.args, ctx)
        elapsed = time.perf_counter() - start
        payloads.update(extract_outputs(call, result))
        if self.rank == layout.mesh.devices[0]:
            log.record_call(call, result, elapsed, payloads)
        if self.eval_records is not None and call.kind is CallKind.GENERATE and call.inputs[0] == "prompts":
            scorer = reward_call(self.graph)
            functions = self.reward_functions.get(scorer.model, ()) if scorer is not None else ()
            stats = evaluate(graph=self.graph, call=call, engine=engine, records=self.eval_records,
                             fmt=self.job.data.format, tok=self.tok, ctx=ctx, reward_functions=functions,
                             score=self.rank == layout.mesh.devices[0])
            self.eval_records = None  # once per iteration
            if stats:
                log.stats["eval"] = stats

    def _sample_rows(self, call: Call, payloads: dict[str, Payload]) -> dict[int, Record]:
        """Each sample's dataset record, for reward functions: sample p * n + k of prompt p, n the
        samples per prompt of the generate call that produced the call's sequences (1 when they
        are the dataset's); a stream chunk gets its own samples' rows."""
        base = payloads.get(call.inputs[0]) if call.inputs else None
        if not self.reward_functions.get(call.model) or base is None or isinstance(base, Field):
            return {}
        ids = base.ids
        producer = next((c for c in self.graph.calls if call.inputs and call.inputs[0] in c.outputs), None)
        n = producer.args.num_samples if producer is not None and producer.interface == "generate" else 1
        return {sid: self.rows[sid // n] for sid in ids if sid // n in self.rows}

    def _stream(self, step: Step, payloads: dict[str, Payload], it: int, log: IterationLog) -> None:
        gen = self.graph.call(step.call)
        gen_layout = self.job.layouts[gen.name]
        consumers = [self.graph.call(n) for n in step.consumers]
        layouts = [self.job.layouts[c.name] for c in consumers]
        senders = streaming.stream_senders(gen_layout)
        samples = int(getattr(gen.args, "num_samples", 1) or 1)
        if self.rank in gen_layout.mesh.devices:
            dsts = tuple(sorted(set().union(*(lay.mesh.devices for lay in layouts))))
            sender = streaming.ChunkSender(dsts) if self.rank in senders else None
            chunk = streaming.chunk_size(gen.batch_size * samples, gen_layout, layouts)
            self._run(step, payloads, it, log, on_finished=sender, stream_chunk=chunk)
            if sender is not None:
                sender.close()
            return
        mine = [c for c, lay in zip(consumers, layouts) if self.rank in lay.mesh.devices]
        base = {k: streaming.expand_field(payloads[k], samples)
                for c in mine for k in c.inputs if k in self.graph.dataset_keys}
        acc = streaming.ChunkResults()

        def handle(chunk: Any) -> None:
            current = {**base, **extract_outputs(gen, chunk)}
            acc.add({k: v for k, v in current.items() if k not in base})
            for c in mine:
                engine = self.engines.get(c.model, self.job.layouts[c.name])
                ctx = self._context(c, current, it)
                start = time.perf_counter()
                result = run_interface(c.interface, engine, assemble_inputs(c, current), c.args, ctx)
                acc.seconds[c.name] = acc.seconds.get(c.name, 0.0) + time.perf_counter() - start
                outputs = extract_outputs(c, result)
                current.update(outputs)
                acc.add(outputs)
                acc.results.setdefault(c.name, []).append(result)

        chunks = streaming.receive_chunks(senders, handle)
        if self.rank == min(d for lay in layouts for d in lay.mesh.devices):
            log.stream_chunks[gen.name] = chunks
        prompts = payloads[gen.inputs[0]]
        order = tuple(p * samples + k for p in prompts.ids for k in range(samples)) if samples > 1 else prompts.ids
        payloads.update(acc.joined(order))
        for c, lay in zip(consumers, layouts):
            if c in mine and self.rank == lay.mesh.devices[0]:
                result = streaming.join_result(acc.results.get(c.name, []), order)
                log.record_call(c, result, acc.seconds.get(c.name, 0.0), payloads)

    def _fuse(self, step: Step, payloads: dict[str, Payload], it: int, log: IterationLog) -> None:
        calls = [self.graph.call(n) for n in (step.call, *step.consumers)]
        jobs = []
        for call in calls:
            engine = self.engines.get(call.model, self.job.layouts[call.name])
            ctx, batch = self._context(call, payloads, it), assemble_inputs(call, payloads)
            jobs.append(lambda call=call, engine=engine, ctx=ctx, batch=batch:
                        run_interface(call.interface, engine, batch, call.args, ctx))
        start = time.perf_counter()
        first, second, steps = fused.run_pair(jobs[0], jobs[1])
        elapsed = time.perf_counter() - start
        for call, result in zip(calls, (first, second)):
            payloads.update(extract_outputs(call, result))
            if self.rank == self.job.layouts[call.name].mesh.devices[0]:
                # one wall time for both calls: each is charged half of it
                log.record_call(call, result, elapsed / 2, payloads)
        if self.rank == self.job.layouts[step.call].mesh.devices[0]:
            log.stats.setdefault("fusion", {})[f"{step.call}+{step.consumers[0]}"] = float(steps)

    def _free(self, step: Step, payloads: dict[str, Payload], it: int, log: IterationLog) -> None:
        call = self.graph.call(step.call)
        log.freed_bytes += self.engines.free(call.model, self.job.layouts[step.call])
