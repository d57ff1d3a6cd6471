"""Reallocation executes the TransferPlan bit-exactly: A -> B -> A over many layout pairs on 4 ranks
(LoRA refreshes too: adapters only, each rank receiving exactly the adapter bytes it lacks)."""

import itertools
import random

import pytest
import torch

from graph.placement.layout import DeviceMesh, Layout
from graph.placement.params import param_manifest
from graph.placement.transfer import plan_transfer
from graph.spec import LoraSpec, ModelArch
from runtime.execution.launch import LaunchSpec, launch
from runtime.execution.reallocation import StagingPool, execute_transfer, local_shard

pytestmark = pytest.mark.slow

ARCH = ModelArch(family="llama", num_layers=4, hidden_size=64, ffn_hidden_size=96, num_heads=8,
                 num_kv_heads=4, vocab_size=64)
TIED = ModelArch(family="qwen2", num_layers=2, hidden_size=32, ffn_hidden_size=64, num_heads=4,
                 num_kv_heads=4, vocab_size=64, tied_embeddings=True, qkv_bias=True)
LORA = LoraSpec(rank=4, alpha=8.0)
WORLD = 4


def _layouts():
    """Every strategy with TP 1/2/4, PP 1/2, DP 1/2 on meshes inside 4 devices."""
    out = []
    for tp, pp, dp in itertools.product((1, 2, 4), (1, 2), (1, 2)):
        size = tp * pp * dp
        for start in range(0, WORLD - size + 1):
            out.append(Layout(mesh=DeviceMesh.span(start, size), dp=dp, tp=tp, pp=pp))
    return out


def _pairs(num, seed):
    layouts = _layouts()
    rng = random.Random(seed)
    pairs = []
    kinds = {"same": [], "overlap": [], "disjoint": []}
    for a, b in itertools.product(layouts, layouts):
        if a == b:
            continue
        if a.mesh == b.mesh:
            kinds["same"].append((a, b))
        elif a.mesh.overlaps(b.mesh):
            kinds["overlap"].append((a, b))
        else:
            kinds["disjoint"].append((a, b))
    for pool in kinds.values():
        pairs += rng.sample(pool, min(len(pool), num))
    return pairs


def _global_weights(arch, value_head, seed, lora=None):
    gen = torch.Generator().manual_seed(seed)
    return {p.name: torch.randn(p.shape, generator=gen)
            for p in param_manifest(arch, value_head=value_head, lora=lora, trainable_only=True)}


def _shards(arch, weights, layout, rank, value_head, lora=None):
    if rank not in layout.mesh.devices:
        return None
    _, tp_rank, pp_rank = layout.coords(rank)
    out = {}
    for p in param_manifest(arch, value_head=value_head, pp=layout.pp, lora=lora, trainable_only=True):
        if pp_rank in p.stages(layout.pp, arch.num_layers):
            out[p.name] = local_shard(weights[p.data_name], p, layout.tp, tp_rank)
    return out


def _zeros_like(shards):
    return None if shards is None else {k: torch.full_like(v, float("nan")) for k, v in shards.items()}


def _lacking_bytes(arch, a, b, rank, value_head, lora):
    """Brute force: bytes of `rank`'s shards in layout b that it does not hold in layout a,
    counted index by index along each parameter's cut dimension (fp32)."""
    if rank not in b.mesh.devices:
        return 0
    def held(layout, p_name):
        if rank not in layout.mesh.devices:
            return set()
        _, tp_rank, pp_rank = layout.coords(rank)
        out = set()
        for q in param_manifest(arch, value_head=value_head, pp=layout.pp, lora=lora, trainable_only=True):
            if q.data_name == p_name and pp_rank in q.stages(layout.pp, arch.num_layers):
                out |= {i for lo, hi in q.shard_runs(layout.tp, tp_rank) for i in range(lo, hi)}
        return out
    total = 0
    for p in param_manifest(arch, value_head=value_head, pp=b.pp, lora=lora, trainable_only=True):
        missing = held(b, p.name) - held(a, p.data_name)
        total += 4 * len(missing) * (p.numel // p.shape[0 if p.tp_dim is None else p.tp_dim])
    return total


def _round_trips(ctx, arch, pairs, value_head, options=None, lora=None):
    """A -> B -> A over `pairs`; with `lora`, only the adapters (+ value head) move, as in a
    refresh of a LoRA model's replica, and each rank must receive exactly what it lacked."""
    weights = _global_weights(arch, value_head, seed=7, lora=lora)
    failures, moved = [], 0
    which = {"value_head": value_head, "lora": lora, "trainable_only": lora is not None}
    for a, b in pairs:
        src = _shards(arch, weights, a, ctx.rank, value_head, lora)
        expected_b = _shards(arch, weights, b, ctx.rank, value_head, lora)
        got_b = _zeros_like(expected_b)
        forward = plan_transfer(arch, a, b, dtype_bytes=4, **which)
        stats = execute_transfer(forward, arch, ctx.rank, src_shards=src, dst_shards=got_b,
                                 value_head=value_head, chunk_bytes=8192, lora=lora, **(options or {}))
        moved += stats.bytes_received
        if lora is not None and stats.bytes_received != _lacking_bytes(arch, a, b, ctx.rank, value_head, lora):
            failures.append(f"{a} -> {b}: rank {ctx.rank} received more than the adapter bytes it lacked")
        back = _zeros_like(src)
        backward = plan_transfer(arch, b, a, dtype_bytes=4, **which)
        execute_transfer(backward, arch, ctx.rank, src_shards=got_b, dst_shards=back, value_head=value_head,
                         lora=lora)
        for name in (expected_b or {}):
            if not torch.equal(got_b[name], expected_b[name]):
                failures.append(f"{a} -> {b}: {name} differs on rank {ctx.rank}")
        for name in (src or {}):
            if not torch.equal(back[name], src[name]):
                failures.append(f"{a} -> {b} -> back: {name} differs on rank {ctx.rank}")
        # what a rank received is exactly what the plan says it lacked
        if stats.bytes_received != sum(op.nbytes for op in forward.ops if op.dst == ctx.rank):
            failures.append(f"{a} -> {b}: rank {ctx.rank} received other bytes than planned")
    return failures, moved


# column-sharded weights (linear_proj, linear_fc2): a TP2 shard is a whole, contiguous
# tensor; the same columns of a TP1 replica are a strided view of it
TP2 = Layout(mesh=DeviceMesh.span(0, 2), dp=1, tp=2, pp=1)
TP1 = Layout(mesh=DeviceMesh.span(2, 1), dp=1, tp=1, pp=1)


def _staging_choice(ctx):
    """Who copies through staging: only the side whose view is strided.

    TP2 -> TP1: the senders' views are whole shards (sent as they are); the receiver's
    column views are strided (received into staging). TP1 -> TP2 is the mirror image.
    Returns, per direction, (send bytes staged, recv bytes staged, results exact).
    """
    weights = _global_weights(ARCH, False, seed=3)
    out = []
    for a, b in ((TP2, TP1), (TP1, TP2)):
        pool = StagingPool()
        src = _shards(ARCH, weights, a, ctx.rank, False)
        expected = _shards(ARCH, weights, b, ctx.rank, False)
        got = _zeros_like(expected)
        plan = plan_transfer(ARCH, a, b, dtype_bytes=4)
        threads = torch.get_num_threads()
        execute_transfer(plan, ARCH, ctx.rank, src_shards=src, dst_shards=got, staging=pool, chunk_bytes=4096)
        exact = all(torch.equal(got[n], expected[n]) for n in (expected or {}))
        bound = 4 * max(4096, max(op.nbytes for op in plan.ops))  # two chunks in flight per direction
        out.append((pool.nbytes("send"), pool.nbytes("recv"), exact, pool.nbytes() <= bound,
                    torch.get_num_threads() == threads))
    return out


def _scenarios(ctx, scenarios):
    return [_round_trips(ctx, *s) for s in scenarios], _staging_choice(ctx)


def test_round_trips_are_bit_exact(tmp_path):
    """One launch of 4 workers: random pairs of every mesh relation, a tied model, a value head,
    the transport without overlap or thread cap; then which side stages a strided op."""
    pairs = _pairs(6, seed=0)
    assert len(pairs) == 18
    pp_changes = [(Layout(mesh=DeviceMesh.span(0, 2), dp=1, tp=2, pp=1), Layout(mesh=DeviceMesh.span(0, 4), dp=1, tp=2, pp=2)),
                  (Layout(mesh=DeviceMesh.span(0, 4), dp=2, tp=1, pp=2), Layout(mesh=DeviceMesh.span(2, 2), dp=1, tp=1, pp=2)),
                  (Layout(mesh=DeviceMesh.span(0, 4), dp=1, tp=4, pp=1), Layout(mesh=DeviceMesh.span(1, 2), dp=2, tp=1, pp=1))]
    plain = {"overlap": False, "copy_threads": None}
    scenarios = [(ARCH, pairs, False), (TIED, pp_changes, False), (ARCH, pp_changes, True),
                 (ARCH, _pairs(2, seed=1), False, plain), (ARCH, _pairs(3, seed=2) + pp_changes, True, None, LORA)]
    results = launch(_scenarios, (scenarios,), LaunchSpec(nproc_per_node=WORLD, log_dir=str(tmp_path)))
    names = ("random pairs", "tied embeddings", "value head", "no overlap, all threads", "LoRA refresh")
    for i, name in enumerate(names):
        failures = [f for r in results.values() for f in r[0][i][0]]
        assert failures == [], name
        assert sum(r[0][i][1] for r in results.values()) > 0, name
    to_tp1, to_tp2 = ([results[r][1][k] for r in range(WORLD)] for k in (0, 1))
    # TP2 -> TP1: senders 0 and 1 stage nothing, receiver 2 stages its strided columns
    assert [x[:2] for x in to_tp1] == [(0, 0), (0, 0), (0, to_tp1[2][1]), (0, 0)]
    assert to_tp1[2][1] > 0
    # TP1 -> TP2: sender 2 packs its strided columns, receivers 0 and 1 take them in place
    assert [x[:2] for x in to_tp2] == [(0, 0), (0, 0), (to_tp2[2][0], 0), (0, 0)]
    assert to_tp2[2][0] > 0
    assert all(exact and bounded and threads for r in (to_tp1, to_tp2) for _, _, exact, bounded, threads in r)


def test_bad_copy_threads_is_rejected():
    plan = plan_transfer(ARCH, TP2, TP1, dtype_bytes=4)
    with pytest.raises(ValueError, match="copy_threads=0"):
        execute_transfer(plan, ARCH, 3, src_shards=None, dst_shards=None, copy_threads=0)
    with pytest.raises(ValueError, match="direction='both'"):
        StagingPool().nbytes("both")
