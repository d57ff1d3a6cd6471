"""The first transport of `runtime.execution.reallocation` (kept for the benchmarks' comparison only).

Per chunk, ops whose source and destination views are both contiguous travel alone; every
other op of a chunk between two ranks is packed into one flat buffer on the sender and
unpacked on the receiver (both sides copy), and chunks run one after the other.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

from graph.placement.params import Slice
from graph.placement.transfer import TransferOp, TransferPlan
from graph.spec import ModelArch
from runtime.execution.reallocation import ReallocStats, StagingPool, _chunks, _view, manifests


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


def execute_transfer_v0(plan: TransferPlan, arch: ModelArch, rank: int, *,
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
