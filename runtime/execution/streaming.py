"""Inter-stage fusion at run time: a generate call streams finished samples to inference calls.

One STREAM step (`runtime.execution.program`) runs a generate call and the inference calls
that read its samples on other ranks (`Plan.streamed`):

- **senders**: the first rank (tp 0, pp 0) of each data-parallel replica of the generate
  call. While its replica generates, each chunk of at least `chunk` finished samples is
  pickled and sent with non-blocking sends to every consumer rank (generation never waits
  for a consumer), then an end marker; the generate call then returns as usual, its result
  gathered on its whole mesh;
- **consumer ranks**: receive the chunks round robin over the senders, and for each chunk
  run every streamed inference call whose mesh holds the rank, in graph order, on just
  those samples (its other inputs are dataset keys, cut to the chunk's samples). At the
  end every key is joined over the chunks and put in sample order, so the payloads are the
  ones the unfused program makes: same samples, same order; per-sample computations on
  smaller batches (their padding differs) agree with the whole batch's to rounding.

Every rank of a consumer mesh receives the same chunks in the same order, so the
collectives inside a consumer call (tp, pp, dp) pair up. Long-tail migration (moving the
last samples onto fewer devices) is not done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from graph.placement.layout import Layout
from graph.spec import Call
from runtime.data.batch import SeqBatch
from runtime.data.binding import Field, Payload, extract_outputs
from runtime.execution.p2p import CHUNK_TAG, ObjectSender, comm_device, recv_bytes, recv_size


def stream_senders(layout: Layout) -> tuple[int, ...]:
    """The rank of each data-parallel replica that sends its finished samples."""
    return tuple(layout.device(dp_rank=d, tp_rank=0, pp_rank=0) for d in range(layout.dp))


def chunk_size(num_samples: int, gen: Layout, consumers: list[Layout]) -> int:
    """Fewest samples per chunk: a quarter of a replica's samples (each chunk costs every
    consumer a call: its fixed overheads), and at least twice the largest consumer dp (so
    every consumer replica gets samples of every chunk)."""
    per_replica = -(-num_samples // gen.dp)
    return max(2 * max((c.dp for c in consumers), default=1), per_replica // 4, 1)


class ChunkSender:
    """`CallContext.on_finished` of a sender: each chunk to every consumer rank, non-blocking."""

    def __init__(self, dsts: tuple[int, ...]) -> None:
        self.dsts = dsts
        self.sender = ObjectSender(CHUNK_TAG)
        self.chunks = 0

    def __call__(self, chunk: SeqBatch) -> None:
        self.sender.send(chunk, self.dsts)
        self.chunks += 1

    def close(self) -> None:
        """Send the end marker and wait until every send has gone."""
        self.sender.post(torch.zeros(1, dtype=torch.int64, device=comm_device()), self.dsts)
        self.sender.wait()


def receive_chunks(senders: tuple[int, ...], handle: Callable[[SeqBatch], None]) -> int:
    """Receive chunks round robin over the senders until each has sent its end marker."""
    active = list(senders)
    count = 0
    while active:
        for src in list(active):
            size = recv_size(src, CHUNK_TAG)
            if size == 0:
                active.remove(src)
                continue
            handle(recv_bytes(src, size, CHUNK_TAG))
            count += 1
    return count


def expand_field(payload: Payload, num_samples: int) -> Payload:
    """A dataset field over prompts as one over sample ids (prompt p's samples p*n+k take its value),
    so that any chunk of samples selects its values by id."""
    if num_samples == 1 or not isinstance(payload, Field):
        return payload
    ids = tuple(p * num_samples + k for p in payload.ids for k in range(num_samples))
    return Field(payload.per_token, payload.values.repeat_interleave(num_samples, dim=0), ids)


@dataclass
class ChunkResults:
    """What a consumer rank gathers over the chunks: per key, the chunk payloads; per call, the
    interface results and compute seconds."""

    keys: dict[str, list[Payload]] = field(default_factory=dict)
    results: dict[str, list[Any]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def add(self, payloads: Mapping[str, Payload]) -> None:
        for key, value in payloads.items():
            self.keys.setdefault(key, []).append(value)

    def joined(self, order: tuple[int, ...]) -> dict[str, Payload]:
        """Every key over all chunks, in sample order `order`."""
        return {key: join_payloads(parts, order) for key, parts in self.keys.items()}


def join_payloads(parts: list[Payload], order: tuple[int, ...]) -> Payload:
    """Chunk payloads of one key joined in sample order (per-token fields padded with zeros)."""
    if isinstance(parts[0], SeqBatch):
        return SeqBatch.concat(parts).reorder(order)  # type: ignore[arg-type]
    fields: list[Field] = parts  # type: ignore[assignment]
    ids = tuple(i for f in fields for i in f.ids)
    if fields[0].per_token:
        width = max(int(f.values.shape[1]) for f in fields)
        values = torch.cat([torch.nn.functional.pad(f.values, (0, width - f.values.shape[1])) for f in fields])
    else:
        values = torch.cat([f.values for f in fields])
    where = {sid: k for k, sid in enumerate(ids)}
    return Field(fields[0].per_token, values[[where[i] for i in order]], tuple(order))


def join_result(parts: list[Any], order: tuple[int, ...]) -> Any:
    """An interface's chunk results as one (SeqBatch results joined in sample order)."""
    if parts and all(isinstance(p, SeqBatch) for p in parts):
        return SeqBatch.concat(parts).reorder(order)
    return parts[-1] if parts else None


def gen_outputs(gen: Call, chunk: SeqBatch) -> dict[str, Payload]:
    """The generate call's output keys for one chunk of its samples."""
    return extract_outputs(gen, chunk)
