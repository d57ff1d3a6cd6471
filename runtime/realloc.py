"""Parameter reallocation: execute the cost model's TransferPlan between two layouts.

The plan (`cost_model.transfer.plan_transfer`) says which device sends which global
slice of which parameter to which device; data a destination already holds is a local
copy. This module only executes it. It does not derive transfers a second way:

- every op is one strided copy: the sender's local view is packed and sent, the
  receiver writes into its local view (straight into it when the view is contiguous);
- ops go out in chunks of at most `chunk_bytes` through `batch_isend_irecv`, so the
  staging memory of a rank stays bounded whatever the model size;
- every rank walks the same op list in the same order, so sends and receives pair up
  and only the ranks of an op take part (no world barrier).

Shards are given as {global parameter name: the rank's local tensor}; `local_shard`
cuts them from global tensors the way the cost model's manifest says.
"""

from __future__ import annotations

import time
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
                     chunk_bytes: int = 64 * 2**20, group: Any = None) -> ReallocStats:
    """Run `plan` on this rank: send what it holds in the source layout, fill its destination shards.

    Call it on every rank of src.mesh and dst.mesh with the same plan (other ranks may
    call it too; they do nothing). `dst_shards` tensors are written in place.
    """
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

    copied = 0
    with torch.no_grad():
        for op in plan.local_copies:  # data this rank already holds in the source layout
            if op.dst == rank:
                value = src_view(op)
                dst_view(op).copy_(value)
                copied += value.numel() * value.element_size()
        sent = received = 0
        for chunk in _chunks(plan.ops, chunk_bytes):
            p2p, landing = [], []
            for op in chunk:
                if op.src == rank:
                    buf = src_view(op).contiguous()
                    p2p.append(dist.P2POp(dist.isend, buf, op.dst, group=group))
                    sent += buf.numel() * buf.element_size()
                elif op.dst == rank:
                    target = dst_view(op)
                    buf = target if target.is_contiguous() else torch.empty_like(target)
                    p2p.append(dist.P2POp(dist.irecv, buf, op.src, group=group))
                    landing.append((target, buf))
                    received += buf.numel() * buf.element_size()
            if not p2p:
                continue
            for work in dist.batch_isend_irecv(p2p):
                work.wait()
            for target, buf in landing:
                if buf is not target:
                    target.copy_(buf)
    return ReallocStats(bytes_sent=sent, bytes_received=received, bytes_copied_locally=copied,
                        time_s=time.perf_counter() - start)
