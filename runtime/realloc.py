"""Parameter reallocation: execute the cost model's TransferPlan between two layouts.

The plan (`cost_model.transfer.plan_transfer`) says which device sends which global
slice of which parameter to which device; data a destination already holds is a local
copy. This module only executes it. It does not derive transfers a second way:

- every op is one strided copy out of the sender's local shard and one into the
  receiver's; the ops of a chunk between two ranks travel as one message (packed into a
  flat buffer, or sent straight from a lone contiguous view and received into it);
- ops go out in chunks of at most `chunk_bytes` through `batch_isend_irecv`, so the
  staging memory of a rank stays bounded whatever the model size;
- every rank walks the same op list in the same order, so sends and receives pair up
  and only the ranks of an op take part (no world barrier).

Shards are given as {global parameter name: the rank's local tensor}; `local_shard`
cuts them from global tensors the way the cost model's manifest says.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from cost_model.params import ParamInfo, Slice, param_manifest
from cost_model.transfer import TransferOp, TransferPlan
from graph.spec import ModelArch


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


def manifests(arch: ModelArch, plan: TransferPlan, *, value_head: bool,
              vocab_size: int | None) -> tuple[dict[str, ParamInfo], dict[str, ParamInfo]]:
    """Parameter info by name in the source and the destination layout."""
    src = {p.name: p for p in param_manifest(arch, value_head=value_head, pp=plan.src.pp, vocab_size=vocab_size)}
    dst = {p.name: p for p in param_manifest(arch, value_head=value_head, pp=plan.dst.pp, vocab_size=vocab_size)}
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


def slice_is_contiguous(shape: tuple[int, ...], local: Slice) -> bool:
    """Whether `local` of a contiguous row-major tensor of `shape` is one contiguous run."""
    sizes = [b - a for a, b in local]
    for k in range(len(shape)):
        if all(s == 1 for s in sizes[:k]) and all(sizes[d] == shape[d] for d in range(k + 1, len(shape))):
            return True
    return len(shape) == 0


def _pack(views: list[torch.Tensor], flat: torch.Tensor) -> torch.Tensor:
    offset = 0
    for v in views:
        flat[offset:offset + v.numel()].view(v.shape).copy_(v)
        offset += v.numel()
    return flat


def _unpack(flat: torch.Tensor, views: list[torch.Tensor]) -> None:
    offset = 0
    for v in views:
        v.copy_(flat[offset:offset + v.numel()].view(v.shape))
        offset += v.numel()


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


def execute_transfer(plan: TransferPlan, arch: ModelArch, rank: int, *,
                     src_shards: Mapping[str, torch.Tensor] | None,
                     dst_shards: Mapping[str, torch.Tensor] | None,
                     value_head: bool = False, vocab_size: int | None = None,
                     chunk_bytes: int = 64 * 2**20, group: Any = None,
                     staging: StagingPool | None = None) -> ReallocStats:
    """Run `plan` on this rank: send what it holds in the source layout, fill its destination shards.

    Call it on every rank of src.mesh and dst.mesh with the same plan (other ranks may
    call it too; they do nothing). `dst_shards` tensors are written in place. Pass the
    same `staging` pool to every call of a process to reuse its packing buffers.
    """
    pool = staging if staging is not None else StagingPool()
    start = time.perf_counter()
    src_info, dst_info = manifests(arch, plan, value_head=value_head, vocab_size=vocab_size)
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

    def _both_contiguous(op: TransferOp) -> bool:
        s_info, d_info = src_info[op.src_param], dst_info[op.param]
        s_tp, d_tp = plan.src.coords(op.src)[1], plan.dst.coords(op.dst)[1]
        return (slice_is_contiguous(s_info.local_shape(plan.src.tp), s_info.to_local(plan.src.tp, s_tp, op.slice))
                and slice_is_contiguous(d_info.local_shape(plan.dst.tp), d_info.to_local(plan.dst.tp, d_tp, op.slice)))

    copied = 0
    with torch.no_grad():
        for op in plan.local_copies:  # data this rank already holds in the source layout
            if op.dst == rank:
                value = src_view(op)
                dst_view(op).copy_(value)
                copied += value.numel() * value.element_size()
        sent = received = 0
        for chunk in _chunks(plan.ops, chunk_bytes):
            # an op travels on its own only when both ends are contiguous (both sides decide
            # this from the plan alone, so their messages pair up); the others of a chunk
            # between two ranks are packed into one reused staging buffer
            direct: list[tuple[int, torch.Tensor, bool]] = []
            packed_out: dict[int, list[torch.Tensor]] = defaultdict(list)
            packed_in: dict[int, list[torch.Tensor]] = defaultdict(list)
            for op in chunk:
                if rank not in (op.src, op.dst):
                    continue
                whole = _both_contiguous(op)
                if op.src == rank:
                    view = src_view(op)
                    if whole:
                        direct.append((op.dst, view, True))
                    else:
                        packed_out[op.dst].append(view)
                else:
                    view = dst_view(op)
                    if whole:
                        direct.append((op.src, view, False))
                    else:
                        packed_in[op.src].append(view)
            p2p, landing = [], []
            for peer, view, is_send in direct:
                p2p.append(dist.P2POp(dist.isend if is_send else dist.irecv, view, peer, group=group))
            for peer in sorted(packed_out):
                views = packed_out[peer]
                flat = _pack(views, pool.get("send", peer, sum(v.numel() for v in views), views[0]))
                p2p.append(dist.P2POp(dist.isend, flat, peer, group=group))
            for peer in sorted(packed_in):
                views = packed_in[peer]
                flat = pool.get("recv", peer, sum(v.numel() for v in views), views[0])
                p2p.append(dist.P2POp(dist.irecv, flat, peer, group=group))
                landing.append((views, flat))
            if not p2p:
                continue
            for work in dist.batch_isend_irecv(p2p):
                work.wait()
            for views, flat in landing:
                _unpack(flat, views)
            for op in chunk:
                if op.src == rank:
                    sent += op.nbytes
                elif op.dst == rank:
                    received += op.nbytes
    return ReallocStats(bytes_sent=sent, bytes_received=received, bytes_copied_locally=copied,
                        time_s=time.perf_counter() - start)
