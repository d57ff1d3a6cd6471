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
them (point-to-point messages between two ranks stay in order).
"""

from __future__ import annotations

import pickle
from typing import Any

import torch
import torch.distributed as dist


def comm_device() -> torch.device:
    """Where the process group's point-to-point tensors live: the current GPU with NCCL, else the CPU."""
    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


class ObjectSender:
    """Non-blocking sends of pickled objects; the buffers stay alive until `wait`."""

    def __init__(self) -> None:
        self.pending: list[tuple[Any, torch.Tensor]] = []

    def post(self, tensor: torch.Tensor, dsts: tuple[int, ...]) -> None:
        """Send one tensor to each rank of `dsts`."""
        for dst in dsts:
            self.pending.append((dist.isend(tensor, dst=dst), tensor))

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


def recv_size(src: int) -> int:
    """The next size header from `src` (0 is an end marker where a protocol uses one)."""
    size = torch.zeros(1, dtype=torch.int64, device=comm_device())
    dist.recv(size, src=src)
    return int(size.item())


def recv_bytes(src: int, size: int) -> Any:
    """The object whose `size` pickled bytes `src` sends next."""
    buf = torch.empty(size, dtype=torch.uint8, device=comm_device())
    dist.recv(buf, src=src)
    return pickle.loads(buf.cpu().numpy().tobytes())


def recv_object(src: int) -> Any:
    """The next object `ObjectSender.send` sent this rank from `src`."""
    return recv_bytes(src, recv_size(src))
