"""Tests of runtime/platform.py, in a fresh interpreter (the patches are process-wide)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]

SCRIPT = r"""
import torch
from runtime.engine import platform
assert platform.apply_platform_patches() == "gloo"
assert platform.apply_platform_patches() == "gloo"  # idempotent
assert platform.patches_applied()
x = torch.zeros(3, device="cuda")
assert x.device.type == "cpu", x.device
assert torch.ones(2).cuda().device.type == "cpu"
assert torch.ones(2).to("cuda").device.type == "cpu"
assert torch.ones(2).type() == "torch.cuda.FloatTensor"
assert torch.cuda.current_device() == torch.device("cpu")
torch.cuda.manual_seed(3)
a = torch.rand(4)
torch.manual_seed(3)
assert torch.equal(a, torch.rand(4))
from megatron.core.tensor_parallel import random as mrandom
state = mrandom._get_cuda_rng_state(clone=True)
b = torch.rand(2)
mrandom._set_cuda_rng_state(state)
assert torch.equal(b, torch.rand(2))
e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
e0.record(); e1.record()
assert e0.elapsed_time(e1) >= 0
# the grad norm and clipping fallbacks: torch's foreach ops, the same values as Megatron's loops
from megatron.core.optimizer import clip_grads
from megatron.core.utils import local_multi_tensor_l2_norm, local_multi_tensor_scale
assert clip_grads.l2_norm_impl is not local_multi_tensor_l2_norm
g = torch.Generator().manual_seed(0)
ts = [torch.randn(shape, generator=g) for shape in [(5,), (7, 3), (64, 9)]]
ours = clip_grads.l2_norm_impl(2048, None, [ts], False)[0]
assert torch.equal(ours, local_multi_tensor_l2_norm(2048, None, [ts], False)[0])
ref = torch.linalg.vector_norm(torch.cat([t.flatten().double() for t in ts]))
assert abs(float(ours) - float(ref)) < 1e-5 * float(ref)
xs, ys = [t.clone() for t in ts], [t.clone() for t in ts]
clip_grads.multi_tensor_scale_impl(2048, None, [xs, xs], 0.3)
local_multi_tensor_scale(2048, None, [ys, ys], 0.3)
assert all(torch.equal(x, y) and torch.equal(x, t * 0.3) for x, y, t in zip(xs, ys, ts))
print("ok")
"""


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only patches")
def test_cpu_patches_route_cuda_calls_to_the_cpu() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", SCRIPT], capture_output=True,
                         text=True, env=env, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_needs_no_patches() -> None:
    from runtime.engine import platform

    assert platform.apply_platform_patches() == "nccl"
    assert torch.zeros(1, device="cuda").device.type == "cuda"
