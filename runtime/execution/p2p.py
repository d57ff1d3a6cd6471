"""Point-to-point objects between ranks: pickled, sent without blocking the sender.

`dist.send_object_list` blocks its sender until the receiver takes the object. A program
step that sends then made its rank wait for the receiving rank to reach the matching
step, so a rank that had finished its call sat idle behind another rank's unrelated work
(e.g. the critic's rank waiting for the actor's rank to take the rewards before it could
receive its own inputs and train). `ObjectSender.send` posts the object (its size, then
its pickled bytes) with `dist.isend` and returns at once; the transport delivers it when
the receiver posts its receive. `wait` ends every pending send: the worker calls it at the
end of each iteration, and nothing a send holds is freed before.

The receiver's `recv_object(src)` takes the objects a source sent in the order it sent
them (point-to-point messages between two ranks with one tag stay in order).

Tags keep the streams apart: a payload posted early may still be in flight when its two
ranks meet in a reallocation (whose p2p messages use tag 0) or a streaming step, and gloo
matches a receive with the next message of its source *and tag*. Payloads use
`PAYLOAD_TAG`, streamed chunks `CHUNK_TAG`. NCCL ignores tags and orders a posted send
before every later operation of the communicator, so there `send` waits for its send to
finish: the blocking behaviour the step order was built for.

Payloads travel in slabs (`ObjectSender(slab=True)`, `SlabReceiver`): one message of
SLAB_BYTES holding the pickled size and the first bytes, and only for a larger object a
second message with the rest (tag + REST_TAG_OFFSET). gloo moves a message only once both
sides have posted it, and the sender's side of that hand-shake runs on its transport
thread: a receive posted while the sender computes waited 0.2-5 ms (median) for it on this
2-core machine, per message, and ppo_tiny's rank 0 spent 5-15 ms an iteration receiving
three small payloads. With gloo the receiving rank therefore posts the slabs of an
iteration's receives when the iteration starts (`SlabReceiver.post`), so the bytes land
while it computes, and the size header no longer costs a hand-shake of its own.
"""

from __future__ import annotations

import pickle
from collections import deque
from typing import Any

import torch
import torch.distributed as dist

PAYLOAD_TAG = 1
"""Tag of the data keys sent between steps (StepKind.SEND)."""
CHUNK_TAG = 2
"""Tag of the chunks a streaming generate call sends (runtime.execution.streaming)."""
METRICS_TAG = 3
"""Tag of the iteration logs the ranks send rank 0 (runtime.execution.metrics)."""
REST_TAG_OFFSET = 16
"""A slab's remainder travels with its tag + this (apart from the next object's slab)."""
SLAB_BYTES = 64 * 1024
"""Bytes of a slab: an 8-byte size, then the first bytes of the pickled object, zero-padded."""
_SIZE_BYTES = 8


def comm_device() -> torch.device:
    """Where the process group's point-to-point tensors live: the current GPU with NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def early_receives() -> bool:
    """Whether receives may be posted ahead of their turn: gloo's, not NCCL's (see SlabReceiver)."""
    return dist.is_initialized() and dist.get_backend() == "gloo"


class ObjectSender:
    """Non-blocking sends of pickled objects with one tag; the buffers stay alive until `wait`.

    `slab=True` frames each object as a slab (and a remainder when it is larger), which a
    `SlabReceiver` takes; otherwise as a size header and the bytes (`recv_object`)."""

    def __init__(self, tag: int = PAYLOAD_TAG, group: Any = None, *, slab: bool = False) -> None:
        self.tag, self.group, self.slab = tag, group, slab
        self.pending: list[tuple[Any, torch.Tensor]] = []

    def post(self, tensor: torch.Tensor, dsts: tuple[int, ...], tag: int | None = None) -> None:
        """Send one tensor to each rank of `dsts` (with NCCL: and wait for it, see the module docstring)."""
        for dst in dsts:
            work = dist.isend(tensor, dst=dst, tag=self.tag if tag is None else tag, group=self.group)
            if tensor.is_cuda:
                work.wait()
            else:
                self.pending.append((work, tensor))

    def send(self, obj: Any, dsts: tuple[int, ...]) -> None:
        """Send `obj` to each rank of `dsts`: as a slab (and its remainder), or its byte size then its bytes."""
        device = comm_device()
        data = pickle.dumps(obj)
        if self.slab:
            head, rest = slab_frames(data)
            self.post(head.to(device), dsts)
            if rest is not None:
                self.post(rest.to(device), dsts, tag=self.tag + REST_TAG_OFFSET)
            return
        self.post(torch.tensor([len(data)], dtype=torch.int64, device=device), dsts)
        self.post(torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device), dsts)

    def wait(self) -> None:
        """Block until every posted send has been delivered."""
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()


def slab_frames(data: bytes) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The slab of pickled `data` (its size, its first bytes, zeros) and the remainder, if any."""
    head = torch.zeros(SLAB_BYTES, dtype=torch.uint8)
    first = min(len(data), SLAB_BYTES - _SIZE_BYTES)
    head[:_SIZE_BYTES] = torch.frombuffer(bytearray(len(data).to_bytes(_SIZE_BYTES, "little")), dtype=torch.uint8)
    if first:
        head[_SIZE_BYTES:_SIZE_BYTES + first] = torch.frombuffer(bytearray(data[:first]), dtype=torch.uint8)
    rest = torch.frombuffer(bytearray(data[first:]), dtype=torch.uint8) if len(data) > first else None
    return head, rest


class SlabReceiver:
    """Takes the objects an `ObjectSender(slab=True)` with `tag` sent this rank, each source's in order.

    `post(src)` posts the receive of `src`'s next slab now, so that its bytes arrive while
    this rank does other work; `recv(src)` takes the oldest posted one, or receives at once
    when none is posted. Posting is for gloo only: NCCL orders a posted receive before every
    later operation of the communicator, so a receive posted early would hold them up.
    """

    def __init__(self, tag: int = PAYLOAD_TAG, group: Any = None) -> None:
        self.tag, self.group = tag, group
        self.posted: dict[int, deque[tuple[Any, torch.Tensor]]] = {}

    def post(self, src: int) -> None:
        """Post the receive of the next slab from `src` (gloo; see the class docstring)."""
        buf = torch.empty(SLAB_BYTES, dtype=torch.uint8)
        work = dist.irecv(buf, src=src, tag=self.tag, group=self.group)
        self.posted.setdefault(src, deque()).append((work, buf))

    def outstanding(self) -> int:
        """Receives posted and not taken yet."""
        return sum(len(q) for q in self.posted.values())

    def recv(self, src: int) -> Any:
        """The next object from `src`."""
        queue = self.posted.get(src)
        if queue:
            work, head = queue.popleft()
            work.wait()
        else:
            head = torch.empty(SLAB_BYTES, dtype=torch.uint8, device=comm_device())
            dist.recv(head, src=src, tag=self.tag, group=self.group)
        head = head.cpu()
        size = int.from_bytes(head[:_SIZE_BYTES].numpy().tobytes(), "little")
        first = min(size, SLAB_BYTES - _SIZE_BYTES)
        data = head[_SIZE_BYTES:_SIZE_BYTES + first].numpy().tobytes()
        if size > first:
            rest = torch.empty(size - first, dtype=torch.uint8, device=comm_device())
            dist.recv(rest, src=src, tag=self.tag + REST_TAG_OFFSET, group=self.group)
            data += rest.cpu().numpy().tobytes()
        return pickle.loads(data)


def recv_size(src: int, tag: int = PAYLOAD_TAG, group: Any = None) -> int:
    """The next size header from `src` with `tag` (0 is an end marker where a protocol uses one)."""
    size = torch.zeros(1, dtype=torch.int64, device=comm_device())
    dist.recv(size, src=src, tag=tag, group=group)
    return int(size.item())


def recv_bytes(src: int, size: int, tag: int = PAYLOAD_TAG, group: Any = None) -> Any:
    """The object whose `size` pickled bytes `src` sends next with `tag`."""
    buf = torch.empty(size, dtype=torch.uint8, device=comm_device())
    dist.recv(buf, src=src, tag=tag, group=group)
    return pickle.loads(buf.cpu().numpy().tobytes())


def recv_object(src: int, tag: int = PAYLOAD_TAG, group: Any = None) -> Any:
    """The next object an `ObjectSender` with `tag` (and `group`) sent this rank from `src`
    (`src` is a global rank, also within a group)."""
    return recv_bytes(src, recv_size(src, tag, group), tag, group)
