"""Per-iteration metrics of a worker: what each rank saw, gathered on rank 0 and written out.

Each rank fills an `IterationLog` while it walks its steps (call times, train statistics,
rewards, reallocation time and bytes). At the end of the iteration `MetricsReporter.report`
hands it to rank 0 without waiting (see the class), where a thread (`SerialThread`) merges
the ranks' logs into one record and appends it to metrics.jsonl and TensorBoard; another
(`CurvePlotter`) redraws curves.png about 20 times a run, at most every MIN_REDRAW_S
seconds, and after the last iteration.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from graph.catalog import get_interface
from graph.dataflow import DataflowGraph
from graph.spec import Call, CallKind
from runtime.data.binding import Field, Payload
from runtime.execution.p2p import METRICS_TAG, ObjectSender, recv_object
from runtime.execution.trace import TRACE_FILE, StepTrace
from runtime.rundir.metrics import CurvePlotter, MetricsWriter, SerialThread, TensorBoardWriter


@dataclass
class IterationLog:
    """What one rank measured in one iteration (only a call's first rank records the call)."""

    call_time_s: dict[str, float] = field(default_factory=dict)
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    rewards: dict[str, float] = field(default_factory=dict)
    response_len: dict[str, float] = field(default_factory=dict)
    realloc_time_s: float = 0.0
    realloc_bytes: int = 0
    freed_bytes: int = 0
    elapsed_s: float = 0.0
    ended_at: float = 0.0
    """Wall clock (time.time()) when this rank ended the iteration: rank 0 takes the period
    between two iterations' last ends as the iteration's time (see MetricsReporter)."""
    response_hist: dict[str, list[list[int]]] = field(default_factory=dict)
    """Generate call -> [[response length, count], ...] (plan.response_lengths reads it back)."""
    staleness: dict[str, int] = field(default_factory=dict)
    """Generate call -> weight versions its batch's behaviour policy lags (one-step off-policy only)."""
    stream_chunks: dict[str, int] = field(default_factory=dict)
    """Generate call -> chunks of samples it streamed (plan.fusion; counted by one consumer rank)."""
    runs: dict[str, int] = field(default_factory=dict)
    """Times each call ran this iteration (more than once: dynamic sampling's rounds)."""
    spans: list[tuple[str, str, float, float]] = field(default_factory=list)
    """(step kind, label, start, end) of every step this rank ran, wall-clock seconds since the
    epoch (`runtime.execution.trace`); kept out of the metrics record."""

    def record_call(self, call: Call, result: Any, elapsed: float, payloads: Mapping[str, Payload]) -> None:
        """Note a call's time, its statistics and the rewards / response lengths it produced.

        A call that runs several times an iteration (dynamic sampling's rounds, on batches of
        one size) reports its total time and the mean of its statistics over the runs."""
        k = self.runs[call.name] = self.runs.get(call.name, 0) + 1
        self.call_time_s[call.name] = self.call_time_s.get(call.name, 0.0) + elapsed

        def mean(old: float | None, new: float) -> float:
            return new if old is None else old + (new - old) / k

        stats: dict[str, float] = {}
        if isinstance(result, dict):
            stats = {key: float(v) for key, v in result.items()}
        else:
            fields = getattr(result, "seq_fields", {})
            if "accuracy" in fields:  # a rule's exact-match rate
                stats["accuracy"] = float(fields["accuracy"].float().mean())
            for name, values in fields.items():  # each reward function's mean over the samples it scored
                if name.startswith("reward_"):
                    scored = values.float()[~values.float().isnan()]
                    stats[name] = float(scored.mean()) if scored.numel() else float("nan")
        if stats:
            old = self.stats.get(call.name, {})
            self.stats[call.name] = {key: mean(old.get(key), v) for key, v in stats.items()}
        for key, role in zip(call.outputs, get_interface(call.interface).outputs):
            payload = payloads[key]
            if role == "rewards" and isinstance(payload, Field):
                self.rewards[call.name] = mean(self.rewards.get(call.name), float(payload.values.float().mean()))
            if role == "sequences" and not isinstance(payload, Field):
                lengths = (payload.seq_lens - payload.prompt_lens).tolist()
                lens = float((payload.seq_lens - payload.prompt_lens).float().mean())
                self.response_len[call.name] = mean(self.response_len.get(call.name), lens)
                self.response_hist[call.name] = [[n, lengths.count(n)] for n in sorted(set(lengths))]


def merge_logs(it: int, logs: list[IterationLog]) -> dict[str, Any]:
    """One metrics record from every rank's log of iteration `it` (0-based)."""
    # an iteration lasts as long as its slowest rank (rank 0 may run no call at all)
    record: dict[str, Any] = {"iteration": it + 1, "iter_time_s": max(p.elapsed_s for p in logs),
                              "call_time_s": {}, "realloc_time_s": 0.0, "realloc_bytes": 0}
    for part in logs:
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
        for call, hist in part.response_hist.items():
            record[f"{call}/response_len_hist"] = hist
        for call, lag in part.staleness.items():
            record[f"{call}/staleness"] = lag
        for call, count in part.stream_chunks.items():
            record[f"{call}/stream_chunks"] = count
    return record


def headline(graph: DataflowGraph, record: Mapping[str, Any]) -> dict[str, float]:
    """The console's summary numbers: reward, accuracy, KL and the losses of the train calls."""
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


MIN_REDRAW_S = 30.0
"""Seconds between two redraws of curves.png at least, and before the first (the last
iteration always redraws). A redraw is ~0.5-1 s of Python on rank 0 (the first also imports
matplotlib); on its thread it still takes the interpreter lock from rank 0's calls: redrawn
every 5 iterations, a 12-iteration run measured iterations 6-10 at 0.4-0.8 s against 0.1 s.
TensorBoard has every record live."""


class MetricsReporter:
    """Collects the ranks' logs on rank 0 and writes metrics.jsonl, TensorBoard and curves.png.

    No rank waits for another at the end of an iteration: every rank but 0 posts its log to
    rank 0 (`ObjectSender`, tag METRICS_TAG, on a process group of its own) and goes on, and
    a thread on rank 0 receives each iteration's logs, merges them and has the record written.
    (A world gather here made every rank wait for the slowest one and for the gather itself,
    7-28 ms an iteration in ppo_tiny on 4 workers, and rank 0 ran the next iteration's first
    call only after it.) The dataflow between calls orders the iterations by itself.
    """

    def __init__(self, *, graph: DataflowGraph, rank: int, world_size: int, run_dir: Path, name: str,
                 iterations: int, plot_every: int, start: int, history: list[dict[str, Any]]) -> None:
        self.graph, self.rank, self.world_size = graph, rank, world_size
        self.run_dir, self.name, self.iterations, self.plot_every = run_dir, name, iterations, plot_every
        self.history = history
        """Records so far (rank 0): a resumed run starts with the checkpoint's."""
        # collective: every rank makes the group, at the same point of its start-up
        self.group = dist.new_group(backend="gloo") if world_size > 1 else None
        self.sender = ObjectSender(METRICS_TAG, self.group) if rank != 0 else None
        if rank == 0:
            self.metrics = MetricsWriter(run_dir / "metrics.jsonl")
            # a resumed run hides the events a killed attempt logged after its checkpoint
            self.tensorboard = TensorBoardWriter(run_dir / "tensorboard", purge_step=start + 1 if start else None)
            self.plotter = CurvePlotter(run_dir / "curves.png", title=name)
            # rank 0's own log of each iteration; the thread receives the others' and writes the record
            self.collector: SerialThread | None = SerialThread(self._collect, name="metrics")
        else:
            self.collector = None
        self.last_redraw = time.monotonic()  # the first redraw comes MIN_REDRAW_S into the run
        self.trace = StepTrace()
        """Rank 0: the last iterations' steps, written as RUN_DIR/trace.json at close."""
        self._last_end: float | None = None

    def report(self, it: int, log: IterationLog) -> None:
        """Hand this rank's log of iteration `it` to rank 0 (returns at once on every rank)."""
        if self.sender is not None:
            self.sender.wait()  # the previous iteration's log has arrived: at most one in flight
            self.sender.send(log, (0,))
        else:
            assert self.collector is not None
            self.collector.submit((it, log))

    def _collect(self, item: tuple[int, IterationLog]) -> None:
        """Rank 0's thread: iteration `it`'s logs of every rank, merged and written."""
        it, own = item
        self._record(it, [own, *(recv_object(r, METRICS_TAG, self.group) for r in range(1, self.world_size))])

    def _record(self, it: int, logs: list[IterationLog]) -> None:
        self.trace.add(it, [part.spans for part in logs])
        record = merge_logs(it, logs)
        # iterations overlap (no barrier): an iteration's time is the period between the last
        # rank ending the previous one and the last ending this one (throughput, what the
        # planner's iteration time estimates); the run's first: its slowest rank's elapsed time
        ended = max(part.ended_at for part in logs)
        if self._last_end is not None and ended > self._last_end:
            record["iter_time_s"] = ended - self._last_end
        self._last_end = ended
        record.update(headline(self.graph, record))
        self.metrics.write(record)
        self.tensorboard.write(record)
        self.history.append(record)
        every = max(self.plot_every, self.iterations // 20)  # ~20 redraws a run: a plot costs ~0.5 s of a core
        last = it + 1 == self.iterations
        if last or ((it + 1) % every == 0 and time.monotonic() - self.last_redraw >= MIN_REDRAW_S):
            self.last_redraw = time.monotonic()
            self.plotter.request(self.history)  # drawn on a background thread

    def flush(self) -> None:
        """Rank 0: block until every record so far is in metrics.jsonl and TensorBoard (it waits
        for the other ranks' logs, which they have posted or will post without waiting)."""
        if self.collector is not None:
            self.collector.flush()

    def close(self) -> None:
        """Rank 0: collect and write the last records; the others: wait until rank 0 has their logs."""
        if self.sender is not None:
            self.sender.wait()
        if self.collector is not None:
            try:
                self.collector.close()
            finally:
                self.tensorboard.close()
                self.plotter.close()
            self.trace.write(self.run_dir / TRACE_FILE)
