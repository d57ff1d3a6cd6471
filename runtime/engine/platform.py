"""Platform layer: run Megatron-core unchanged on GPUs (NCCL) and on a CPU-only torch (gloo).

`apply_platform_patches()` is called once at process start (and by every engine
constructor; it is idempotent). On a machine with CUDA it only records the backend and
patches nothing. On a CPU-only torch it routes Megatron's CUDA calls to the CPU:

1. RNG: `torch.cuda.{get,set}_rng_state / manual_seed` and Megatron's
   `_get_cuda_rng_state / _set_cuda_rng_state` use the CPU default generator.
2. `torch.cuda.current_device()` returns the CPU device; `synchronize` is a no-op.
3. A process-wide `TorchFunctionMode` rewrites `device="cuda"` arguments to the CPU and
   makes `Tensor.cuda()` a no-op (Megatron hard-codes CUDA in schedules and optimizers).
4. The same mode reports CUDA type names from `Tensor.type()` (Megatron asserts them).
5. `torch.cuda.Event` gets a stand-in timed with `time.perf_counter`.
6. The causal-mask helper gets a CPU version, so forward passes can run without the mode
   (`without_cuda_rewrites()`), which costs ~30% on small models.

Sequence parallelism needs no patch here: the engine never enables it on CPU.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

_STATE: dict[str, Any] = {"applied": False, "mode": None}

_CPU = torch.device("cpu")


def has_cuda() -> bool:
    """Whether this process drives a CUDA device."""
    return torch.cuda.is_available()


def backend() -> str:
    """torch.distributed backend for this platform: nccl with CUDA, gloo without."""
    return "nccl" if has_cuda() else "gloo"


def device() -> torch.device:
    """The device tensors of this process live on."""
    return torch.device("cuda", torch.cuda.current_device()) if has_cuda() else _CPU


def _is_cuda_device(value: Any) -> bool:
    if isinstance(value, torch.device):
        return value.type == "cuda"
    if isinstance(value, str):
        return value.startswith("cuda")
    return False


_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
    "torch.DoubleTensor": "torch.cuda.DoubleTensor",
    "torch.LongTensor": "torch.cuda.LongTensor",
    "torch.IntTensor": "torch.cuda.IntTensor",
}


class _CpuAsCudaMode(TorchFunctionMode):
    """Rewrite CUDA device arguments to the CPU; report CUDA type names."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return _CUDA_TYPE_NAMES.get(name, name)
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs = {**kwargs, "device": _CPU}
        if func is torch.Tensor.to:
            args = tuple(_CPU if _is_cuda_device(a) else a for a in args)
        return func(*args, **kwargs)


class _PerfCounterEvent:
    """Stand-in for torch.cuda.Event on CPU: records wall time."""

    def __init__(self, enable_timing: bool = False, **_: Any) -> None:
        self._t = 0.0

    def record(self, *_: Any, **__: Any) -> None:
        self._t = time.perf_counter()

    def synchronize(self) -> None:
        return None

    def query(self) -> bool:
        return True

    def wait(self, *_: Any, **__: Any) -> None:
        return None

    def elapsed_time(self, end: _PerfCounterEvent) -> float:
        return (end._t - self._t) * 1000.0


def _patch_cuda_module() -> None:
    cuda = torch.cuda
    cuda.current_device = lambda: _CPU  # type: ignore[assignment]
    cuda.synchronize = lambda *a, **k: None  # type: ignore[assignment]
    cuda.get_rng_state = lambda *a, **k: torch.get_rng_state()  # type: ignore[assignment]
    cuda.set_rng_state = lambda state, *a, **k: torch.set_rng_state(state)  # type: ignore[assignment]
    # torch.manual_seed would call torch.cuda.manual_seed again: seed the generator directly.
    cuda.manual_seed = lambda seed: torch.default_generator.manual_seed(int(seed))  # type: ignore[assignment]
    cuda.manual_seed_all = cuda.manual_seed  # type: ignore[assignment]
    cuda.Event = _PerfCounterEvent  # type: ignore[assignment,misc]
    cuda.empty_cache = lambda: None  # type: ignore[assignment]


def _patch_megatron_rng() -> None:
    from megatron.core.tensor_parallel import random as mrandom

    def get_state(device: int = -1, clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
        state = torch.get_rng_state()
        return state.clone() if clone else state

    def set_state(new_state: torch.Tensor, device: int = -1, graph_safe: bool = False) -> None:
        torch.set_rng_state(new_state)

    mrandom._get_cuda_rng_state = get_state
    mrandom._set_cuda_rng_state = set_state


class _DropCpuRngWarning(logging.Filter):
    """On CPU the 'CUDA' RNG is the CPU generator, so Megatron's fork check always fires."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed" not in record.getMessage()


def _patch_megatron_cuda_literals() -> None:
    """Megatron helpers on the forward path that hard-code device="cuda"."""
    import functools

    from megatron.core.fusions import fused_softmax
    from megatron.core.transformer import utils as tutils

    @functools.lru_cache(maxsize=32)
    def causal_mask(sq: int) -> torch.Tensor:
        return torch.triu(torch.ones(sq, sq, device=_CPU), diagonal=1).bool()

    tutils.get_default_causal_mask = causal_mask
    fused_softmax.get_default_causal_mask = causal_mask


def _patch_megatron_multi_tensor() -> None:
    """Megatron's fallbacks for Apex's multi-tensor kernels (the grad norm and clipping
    without Apex/TE) loop over tensors in Python, one rewritten op at a time; torch's
    `_foreach` ops compute the same values (per-tensor 2-norms, in-place scaling) in one call."""
    from megatron.core.optimizer import clip_grads
    from megatron.core.utils import local_multi_tensor_l2_norm, local_multi_tensor_scale

    if clip_grads.l2_norm_impl is not local_multi_tensor_l2_norm:
        return  # Apex or Transformer Engine kernels are in use

    def l2_norm(chunk_size: int, noop_flag: Any, tensor_lists: Any, per_tensor: bool, *args: Any) -> tuple:
        norms = torch._foreach_norm(list(tensor_lists[0]))
        return torch.linalg.vector_norm(torch.stack(norms)).reshape(1), None

    def scale(chunk_size: int, noop_flag: Any, tensor_lists: Any, factor: float) -> None:
        src, dst = tensor_lists
        if len(src) == len(dst) and all(a is b for a, b in zip(src, dst)):
            torch._foreach_mul_(list(dst), factor)
        else:
            local_multi_tensor_scale(chunk_size, noop_flag, tensor_lists, factor)

    clip_grads.l2_norm_impl = l2_norm
    clip_grads.multi_tensor_scale_impl = scale


def _alone(group: Any) -> bool:
    """Whether a process group (None: the world) has this rank only."""
    import torch.distributed as dist

    if group is None or group is dist.GroupMember.WORLD:
        return dist.get_world_size() == 1
    return group.size() == 1


def _skip_collectives_of_one() -> None:
    """Collectives on a group of one rank are identities; on gloo each still costs a round
    trip through the backend (~1 ms on a loaded CPU). Megatron runs several per train step at
    dp = tp = pp = 1: the gradient-norm all-reduce and the distributed optimizer's
    parameter all-gather (whose only shard is the whole buffer) and gradient reduce-scatter.
    Asynchronous calls go to the backend unchanged (their handles are waited on)."""
    import torch.distributed as dist
    from megatron.core.distributed import param_and_grad_buffer as pgb

    if getattr(dist.all_reduce, "_realloc_skips_one", False):
        return
    all_reduce = dist.all_reduce

    def all_reduce_unless_alone(tensor: torch.Tensor, op: Any = dist.ReduceOp.SUM, group: Any = None,
                                async_op: bool = False) -> Any:
        if not async_op and _alone(group):
            return None
        return all_reduce(tensor, op=op, group=group, async_op=async_op)

    all_reduce_unless_alone._realloc_skips_one = True  # type: ignore[attr-defined]
    dist.all_reduce = all_reduce_unless_alone  # type: ignore[assignment]

    start_param_sync = pgb._ParamAndGradBucketGroup.start_param_sync

    def start_param_sync_unless_alone(self: Any, force_sync: bool = False) -> None:
        if self.intra_distributed_optimizer_instance_size == 1 and self.param_gather_handle is None:
            self.param_gather_dispatched = True  # the local shard is the whole buffer: nothing to gather
            return
        start_param_sync(self, force_sync)

    pgb._ParamAndGradBucketGroup.start_param_sync = start_param_sync_unless_alone

    reduce_scatter = pgb.dist_reduce_scatter_func  # the gradient reduce-scatter of the distributed optimizer

    def reduce_scatter_unless_alone(output: torch.Tensor, input: torch.Tensor, op: Any = dist.ReduceOp.SUM,
                                    group: Any = None, async_op: bool = False) -> Any:
        if not async_op and _alone(group):
            if output.data_ptr() != input.data_ptr() or output.numel() != input.numel():
                output.copy_(input.view_as(output))
            return None
        return reduce_scatter(output, input, op=op, group=group, async_op=async_op)

    pgb.dist_reduce_scatter_func = reduce_scatter_unless_alone


def apply_platform_patches() -> str:
    """Make Megatron-core run on this platform; idempotent. Returns the dist backend."""
    if _STATE["applied"]:
        return backend()
    if not has_cuda():
        _patch_cuda_module()
        _patch_megatron_rng()
        _patch_megatron_cuda_literals()
        _skip_collectives_of_one()
        _patch_megatron_multi_tensor()
        logging.getLogger("megatron.core.tensor_parallel.random").addFilter(_DropCpuRngWarning())
        mode = _CpuAsCudaMode()
        mode.__enter__()  # process-wide, for the rest of the process
        _STATE["mode"] = mode
    _STATE["applied"] = True
    return backend()


@contextmanager
def without_cuda_rewrites() -> Iterator[None]:
    """Run plain torch code (e.g. a transformers baseline) without the CPU device mode."""
    if _STATE["mode"] is None:
        yield
        return
    with torch._C.DisableTorchFunction():
        yield


@contextmanager
def in_thread() -> Iterator[None]:
    """The process's CPU device mode in another thread (torch function modes are per thread)."""
    if _STATE["mode"] is None:
        yield
        return
    with _CpuAsCudaMode():
        yield


def patches_applied() -> bool:
    """Whether `apply_platform_patches` has run in this process."""
    return bool(_STATE["applied"])
