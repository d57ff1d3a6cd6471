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
"""

from __future__ import annotations

import pickle
from typing import Any

import torch
import torch.distributed as dist

PAYLOAD_TAG = 1
"""Tag of the data keys sent between steps (StepKind.SEND)."""
CHUNK_TAG = 2
"""Tag of the chunks a streaming generate call sends (runtime.execution.streaming)."""
METRICS_TAG = 3
"""Tag of the iteration logs the ranks send rank 0 (runtime.execution.metrics)."""


def comm_device() -> torch.device:
    """Where the process group's point-to-point tensors live: the current GPU with NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class ObjectSender:
    """Non-blocking sends of pickled objects with one tag; the buffers stay alive until `wait`."""

    def __init__(self, tag: int = PAYLOAD_TAG, group: Any = None) -> None:
        self.tag, self.group = tag, group
        self.pending: list[tuple[Any, torch.Tensor]] = []

    def post(self, tensor: torch.Tensor, dsts: tuple[int, ...]) -> None:
        """Send one tensor to each rank of `dsts` (with NCCL: and wait for it, see the module docstring)."""
        for dst in dsts:
            work = dist.isend(tensor, dst=dst, tag=self.tag, group=self.group)
            if tensor.is_cuda:
                work.wait()
            else:
                self.pending.append((work, tensor))

    def send(self, obj: Any, dsts: tuple[int, ...]) -> None:
        """Send `obj` to each rank of `dsts`: its byte size, then its pickled bytes."""
        device = comm_device()
        data = pickle.dumps(obj)
        self.post(torch.tensor([len(data)], dtype=torch.int64, device=device), dsts)
        self.post(torch.frombuffer(bytearray(data), dtype=torch.uint8).to(device), dsts)

    def wait(self) -> None:
        """Block until every posted send has been delivered."""
        for work, _ in self.pending:
            work.wait()
        self.pending.clear()


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
