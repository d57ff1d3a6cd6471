"""Benchmark the reallocation planner: bytes moved against a naive baseline, and speed.

Baseline ("naive"): what megatron-core 0.16.1's resharding does (shared/notes): every
destination receives its whole new shard from the first DP replica, even bytes it
already holds. Printed per case: bytes of our TransferPlan / naive bytes, busiest-rank
bytes of each, the time to derive the full plan and the fast pricing flows, and their
priced times. Run: PYTHONPATH=$PWD python experiments/bench/cost_transfer.py
"""

from __future__ import annotations

import time
from collections import defaultdict

from cost_model.estimator import AnalyticCostModel
from cost_model.hardware import GiB, preset
from cost_model.transfer_cost import price_flows, price_transfer
from graph.placement.layout import Cluster, DeviceMesh, Layout
from graph.placement.params import param_manifest
from graph.placement.transfer import plan_transfer, transfer_flows
from graph.spec import Call, CallKind, ModelArch, ModelSpec

LLAMA7B = ModelArch(family="llama", num_layers=32, hidden_size=4096, ffn_hidden_size=11008,
                    num_heads=32, num_kv_heads=32, vocab_size=32000)
LLAMA70B = ModelArch(family="llama", num_layers=80, hidden_size=8192, ffn_hidden_size=28672,
                     num_heads=64, num_kv_heads=8, vocab_size=32000)
CLUSTER = Cluster(num_nodes=4, devices_per_node=8)


def lay(start: int, dp: int, tp: int, pp: int) -> Layout:
    return Layout(mesh=DeviceMesh.span(start, dp * tp * pp), dp=dp, tp=tp, pp=pp)


CASES = [
    ("7B  tp2dp2 -> tp1dp4, same mesh", LLAMA7B, lay(0, 2, 2, 1), lay(0, 4, 1, 1)),
    ("7B  tp2dp2 -> tp2 on 2 of its ranks", LLAMA7B, lay(0, 2, 2, 1), lay(2, 1, 2, 1)),
    ("7B  dp2tp4 -> tp2pp4, disjoint node", LLAMA7B, lay(0, 2, 4, 1), lay(8, 1, 2, 4)),
    ("70B dp1tp8pp4 -> dp4tp2pp4, same mesh", LLAMA70B, lay(0, 1, 8, 4), lay(0, 4, 2, 4)),
    ("70B tp8pp2 -> dp2tp8, overlapping", LLAMA70B, lay(0, 1, 8, 2), lay(8, 2, 8, 1)),
]


def naive_flows(arch: ModelArch, src: Layout, dst: Layout) -> list[tuple[int, int, float]]:
    """Every destination pulls its whole shard from DP replica 0 (bytes it holds included)."""
    flows: dict[tuple[int, int], float] = defaultdict(float)
    for p in param_manifest(arch, pp=dst.pp):
        src_stage = (p.stages(src.pp, arch.num_layers))[0] if not p.tied_to else src.pp - 1
        for stage in p.stages(dst.pp, arch.num_layers):
            for d in range(dst.dp):
                for t in range(dst.tp):
                    dev = dst.device(dp_rank=d, tp_rank=t, pp_rank=stage)
                    for a, b in p.shard_runs(dst.tp, t):
                        share = p.numel // p.shape[p.tp_dim or 0] * (b - a) * 2
                        # the owner of the run's first row in replica 0 sends it (approximation)
                        owner_tp = 0 if p.tp_dim is None else min(src.tp - 1, a * src.tp // p.shape[p.tp_dim])
                        flows[(src.device(dp_rank=0, tp_rank=owner_tp, pp_rank=src_stage), dev)] += share
    return [(s, d, b) for (s, d), b in flows.items()]


def main() -> None:
    hw = preset("h100-80g")
    print(f"{'case':42} {'plan GiB':>9} {'naive GiB':>9} {'ratio':>6} {'busiest':>8} {'naive':>8} "
          f"{'plan ms':>8} {'flows ms':>8} {'speedup':>7} {'t_plan':>7} {'t_flows':>7}")
    for name, arch, src, dst in CASES:
        t0 = time.perf_counter()
        plan = plan_transfer(arch, src, dst, cluster=CLUSTER)
        t1 = time.perf_counter()
        flows = transfer_flows(arch, src, dst, cluster=CLUSTER)
        t2 = time.perf_counter()
        exact, fast = price_transfer(plan, hw, CLUSTER), price_flows(flows, hw, CLUSTER)
        naive = price_flows([f for f in naive_flows(arch, src, dst)], hw, CLUSTER)
        naive_total = sum(b for _, _, b in naive_flows(arch, src, dst))
        print(f"{name:42} {plan.bytes_total / GiB:9.2f} {naive_total / GiB:9.2f} "
              f"{plan.bytes_total / naive_total:6.2f} {exact.busiest_rank_bytes / GiB:8.2f} "
              f"{naive.busiest_rank_bytes / GiB:8.2f} {(t1 - t0) * 1e3:8.1f} {(t2 - t1) * 1e3:8.2f} "
              f"{(t1 - t0) / (t2 - t1):7.0f} {exact.time_s:7.3f} {fast.time_s:7.3f}")
    cm = AnalyticCostModel(hw, CLUSTER)
    model = ModelSpec(role="actor", arch=LLAMA70B, trainable=True)
    call = Call(name="train", model="actor", kind=CallKind.TRAIN, interface="sft", batch_size=512,
                prompt_len=512, response_len=512)
    layouts = [Layout(mesh=DeviceMesh.span(0, 32), dp=dp, tp=tp, pp=pp, micro_batches=mb)
               for dp, tp, pp in [(4, 8, 1), (2, 8, 2), (1, 8, 4), (4, 2, 4), (2, 4, 4)] for mb in (8, 16, 32)]
    for label in ("first (cold caches)", "again (warm caches)"):
        t0 = time.perf_counter()
        for layout in layouts:
            cm.call_estimate(call, model, layout)
        per_call = (time.perf_counter() - t0) / len(layouts)
        print(f"call_estimate, {label}: {per_call * 1e6:.0f} us per call (70B train, {len(layouts)} layouts)")


if __name__ == "__main__":
    main()
