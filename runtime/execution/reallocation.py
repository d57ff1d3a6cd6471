"""Parameter reallocation: execute the cost model's TransferPlan between two layouts.

The plan (`graph.placement.transfer.plan_transfer`) says which device sends which global
slice of which parameter to which device; data a destination already holds is a local
copy. This module only executes it. It does not derive transfers a second way:

- every op is one message: the op's slice in row-major order. A side whose local view
  is contiguous sends from it or receives into it in place; only a side whose view is
  strided copies through a reused staging buffer (each side decides on its own);
- ops go out in chunks of at most `chunk_bytes` through `batch_isend_irecv`, so the
  staging memory of a rank stays bounded whatever the model size; chunk k+1 is packed
  and posted before chunk k is awaited, and local copies run while the first is in flight;
- every rank walks the same op list in the same order, so sends and receives pair up
  and only the ranks of an op take part (no world barrier).

Shards are given as {global parameter name: the rank's local tensor}; `local_shard`
cuts them from global tensors the way the cost model's manifest says.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from graph.placement.params import ParamInfo, Slice, param_manifest
from graph.placement.transfer import TransferOp, TransferPlan
from graph.spec import LoraSpec, ModelArch


@dataclass(frozen=True, kw_only=True)
class ReallocStats:
    """What one rank did in one reallocation."""

    bytes_sent: int
    bytes_received: int
    bytes_copied_locally: int
    time_s: float


def _view(tensor: torch.Tensor, local: Slice) -> torch.Tensor:
    return tensor[tuple(slice(a, b) for a, b in local)]


def local_shard(global_tensor: torch.Tensor, info: ParamInfo, tp: int, tp_rank: int) -> torch.Tensor:
    """The local shard of TP rank `tp_rank` (the manifest's runs, concatenated along tp_dim)."""
    parts = [_view(global_tensor, s) for s in info.shard_slices(tp, tp_rank)]
    if info.tp_dim is None:
        return parts[0].clone()
    return torch.cat(parts, dim=info.tp_dim).contiguous()


def manifests(arch: ModelArch, plan: TransferPlan, *, value_head: bool, vocab_size: int | None,
              lora: LoraSpec | None = None) -> tuple[dict[str, ParamInfo], dict[str, ParamInfo]]:
    """Parameter info by name in the source and the destination layout (LoRA adapters included)."""
    which = {"value_head": value_head, "vocab_size": vocab_size, "lora": lora}
    src = {p.name: p for p in param_manifest(arch, pp=plan.src.pp, **which)}
    dst = {p.name: p for p in param_manifest(arch, pp=plan.dst.pp, **which)}
    return src, dst


class StagingPool:
    """Reusable flat buffers for packing strided views; keep one per process across reallocations.

    Fresh multi-megabyte buffers cost page faults on every use; reusing them does not.
    """

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, int, torch.dtype, str], torch.Tensor] = {}

    def get(self, role: str, peer: int, numel: int, like: torch.Tensor) -> torch.Tensor:
        key = (role, peer, like.dtype, str(like.device))
        buf = self._buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[key] = buf
        return buf[:numel]

    def nbytes(self, direction: str | None = None) -> int:
        """Bytes the pool holds: all, or those of one direction ("send" or "recv")."""
        if direction not in (None, "send", "recv"):
            raise ValueError(f"direction={direction!r}: use 'send', 'recv' or None")
        return sum(b.numel() * b.element_size() for (role, *_), b in self._buffers.items()
                   if direction is None or role.startswith(direction))


def _chunks(ops: tuple[TransferOp, ...], chunk_bytes: int) -> list[list[TransferOp]]:
    """Split the op list, in order, into runs of at most `chunk_bytes` (one op may exceed it)."""
    out: list[list[TransferOp]] = [[]]
    size = 0
    for op in ops:
        if out[-1] and size + op.nbytes > chunk_bytes:
            out.append([])
            size = 0
        out[-1].append(op)
        size += op.nbytes
    return [c for c in out if c]


@dataclass(frozen=True)
class _Step:
    """One op as this rank sees it: a send from its source shard or a receive into its destination shard."""

    send: bool
    peer: int
    view: torch.Tensor
    nbytes: int


@dataclass
class _Posted:
    """A chunk in flight: its requests and the strided views to fill from staging once they finish."""

    works: list[Any]
    landing: list[tuple[torch.Tensor, torch.Tensor]]


def _post(steps: list[_Step], pool: StagingPool, parity: int, group: Any) -> _Posted:
    """Post one chunk: every op is one message, copied through staging only on a side whose view is strided.

    Sender and receiver choose independently: the message is the op's slice in row-major
    order, whether it is read from a contiguous view, packed from a strided one, received
    in place or unpacked later.
    """
    staged: dict[tuple[bool, torch.dtype], int] = defaultdict(int)
    for s in steps:
        if not s.view.is_contiguous():
            staged[(s.send, s.view.dtype)] += s.view.numel()
    flats = {key: pool.get(("send" if key[0] else "recv") + str(parity), -1, numel, _like(steps, key))
             for key, numel in staged.items()}
    offsets: dict[tuple[bool, torch.dtype], int] = defaultdict(int)
    p2p, landing = [], []
    for s in steps:
        buf = s.view
        if not buf.is_contiguous():
            key = (s.send, buf.dtype)
            at = offsets[key]
            offsets[key] = at + buf.numel()
            flat = flats[key][at:at + buf.numel()].view(buf.shape)
            if s.send:
                flat.copy_(buf)
            else:
                landing.append((buf, flat))
            buf = flat
        p2p.append(dist.P2POp(dist.isend if s.send else dist.irecv, buf, s.peer, group=group))
    return _Posted(works=dist.batch_isend_irecv(p2p) if p2p else [], landing=landing)


def _like(steps: list[_Step], key: tuple[bool, torch.dtype]) -> torch.Tensor:
    return next(s.view for s in steps if (s.send, s.view.dtype) == key)


def _finish(posted: _Posted | None) -> None:
    if posted is None:
        return
    for work in posted.works:
        work.wait()
    for view, flat in posted.landing:
        view.copy_(flat)


def _rank_chunks(plan: TransferPlan, rank: int, chunk_bytes: int,
                 src_view: Any, dst_view: Any) -> list[list[_Step]]:
    """This rank's steps of every chunk of the plan (chunks cut the same way on every rank)."""
    out = []
    for chunk in _chunks(plan.ops, chunk_bytes):
        steps = [_Step(send=True, peer=op.dst, view=src_view(op), nbytes=op.nbytes) if op.src == rank
                 else _Step(send=False, peer=op.src, view=dst_view(op), nbytes=op.nbytes)
                 for op in chunk if rank in (op.src, op.dst)]
        if steps:
            out.append(steps)
    return out


def execute_transfer(plan: TransferPlan, arch: ModelArch, rank: int, *,
                     src_shards: Mapping[str, torch.Tensor] | None,
                     dst_shards: Mapping[str, torch.Tensor] | None,
                     value_head: bool = False, vocab_size: int | None = None,
                     lora: LoraSpec | None = None, chunk_bytes: int = 64 * 2**20, group: Any = None,
                     staging: StagingPool | None = None, overlap: bool = True,
                     copy_threads: int | None = 1) -> ReallocStats:
    """Run `plan` on this rank: send what it holds in the source layout, fill its destination shards.

    Call it on every rank of src.mesh and dst.mesh with the same plan (other ranks may
    call it too; they do nothing). `dst_shards` tensors are written in place. Pass the
    same `staging` pool to every call of a process to reuse its packing buffers. A plan
    that moves LoRA adapters needs the model's `lora` to find them.

    With `overlap`, chunk k+1 is packed and posted before chunk k is awaited and
    unpacked, and the local copies run while the first chunk is in flight; staging then
    holds at most two chunks per direction, one chunk per direction without (a chunk is
    `chunk_bytes`, or one op where a single op is larger).

    `copy_threads` caps torch's intra-op threads for the duration (restored after; None
    leaves them): the copies are memory-bound, and extra OpenMP threads only compete
    with the transport's own threads and the other ranks on the same cores.
    """
    if copy_threads is not None and copy_threads < 1:
        raise ValueError(f"copy_threads={copy_threads}: give a positive number of threads, or None")
    pool = staging if staging is not None else StagingPool()
    start = time.perf_counter()
    src_info, dst_info = manifests(arch, plan, value_head=value_head, vocab_size=vocab_size, lora=lora)
    in_src, in_dst = rank in plan.src.mesh.devices, rank in plan.dst.mesh.devices
    if in_src and src_shards is None:
        raise ValueError(f"rank {rank} is in the source layout of {plan.model!r} but has no source shards")
    if in_dst and dst_shards is None:
        raise ValueError(f"rank {rank} is in the destination layout of {plan.model!r} but has no destination shards")
    src_tp = plan.src.coords(rank)[1] if in_src else -1
    dst_tp = plan.dst.coords(rank)[1] if in_dst else -1

    def src_view(op: TransferOp) -> torch.Tensor:
        info = src_info[op.src_param]
        return _view(src_shards[op.src_param], info.to_local(plan.src.tp, src_tp, op.slice))  # type: ignore[index]

    def dst_view(op: TransferOp) -> torch.Tensor:
        info = dst_info[op.param]
        return _view(dst_shards[op.param], info.to_local(plan.dst.tp, dst_tp, op.slice))  # type: ignore[index]

    def local_copies() -> int:
        done = 0
        for op in plan.local_copies:  # data this rank already holds in the source layout
            if op.dst == rank:
                value = src_view(op)
                dst_view(op).copy_(value)
                done += value.numel() * value.element_size()
        return done

    with torch.no_grad(), _plain_torch(), _threads(copy_threads):
        chunks = _rank_chunks(plan, rank, chunk_bytes, src_view, dst_view)
        copied = 0 if chunks and overlap else local_copies()
        pending: _Posted | None = None
        for k, steps in enumerate(chunks):
            if not overlap:
                _finish(_post(steps, pool, 0, group))
                continue
            posted = _post(steps, pool, k % 2, group)
            if k == 0:
                copied = local_copies()
            _finish(pending)
            pending = posted
        _finish(pending)
    sent = sum(s.nbytes for steps in chunks for s in steps if s.send)
    received = sum(s.nbytes for steps in chunks for s in steps if not s.send)
    return ReallocStats(bytes_sent=sent, bytes_received=received, bytes_copied_locally=copied,
                        time_s=time.perf_counter() - start)


def _plain_torch() -> Any:
    """Skip the CPU platform's torch-function mode (pure overhead for copies and p2p)."""
    from runtime.engine.platform import without_cuda_rewrites

    return without_cuda_rewrites()


@contextmanager
def _threads(n: int | None) -> Iterator[None]:
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
