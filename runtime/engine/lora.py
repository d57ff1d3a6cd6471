"""LoRA adapters on Megatron-core's tensor-parallel linear layers.

A targeted layer `X` (see `graph.spec.LORA_TARGETS`) computes `X(x) + (alpha/r) * B(A(x))`
with A [r, in] and B [out, r] registered on the layer itself as `X.lora_a` and
`X.lora_b`, so their global names (`decoder.layers.3.mlp.linear_fc1.lora_b`) follow the
base layer's and travel through reallocation like any other parameter
(`graph.placement.params.lora_layer_params` lists them with their TP cuts).

Under tensor parallelism the adapters are cut like the base layer:

* column-parallel (linear_qkv, linear_fc1): the input is whole on every TP rank; A is
  replicated, B is cut on `out` like W (for SwiGLU's fused fc1 each rank holds
  [gate_r; up_r] rows, as W does). `h = A x` passes Megatron's copy-to-TP-region
  (identity forward, all-reduce backward) so that A's gradient sums every rank's B part
  and is the same on every rank.
* row-parallel (linear_proj, linear_fc2): the input is cut on `in`; A is cut on `in`
  like W, B is replicated. `h = A_r x_r` is summed over TP (reduce-from-TP-region:
  all-reduce forward, identity backward), then B applies on every rank.

The base weights are frozen (requires_grad False), so Megatron's DDP and (distributed)
optimizer hold only the adapters and, for a critic, the value head. B starts at zero
(the adapted model starts equal to its base) and A from the model seed, per global name,
so every layout starts from the same adapters.
"""

from __future__ import annotations

import math
import zlib
from typing import Any

import torch
import torch.nn.functional as F

from graph.placement.params import lora_layer_params
from graph.spec import LoraSpec, ModelArch

ADAPTER_LEAVES = ("lora_a", "lora_b")
"""Parameter names of the adapters on a linear layer."""


def is_adapter(name: str) -> bool:
    """Whether a (local or global) parameter name is a LoRA adapter."""
    return name.rsplit(".", 1)[-1] in ADAPTER_LEAVES


def init_adapters(arch: ModelArch, lora: LoraSpec, seed: int) -> dict[str, torch.Tensor]:
    """Initial global adapters: A ~ U(-1/sqrt(in), 1/sqrt(in)) from (seed, name), B = 0."""
    out = {}
    for i in range(arch.num_layers):
        for p in lora_layer_params(arch, i, lora):
            if p.name.endswith(".lora_b"):
                out[p.name] = torch.zeros(p.shape)
                continue
            gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(p.name.encode())) % (2**63))
            bound = 1.0 / math.sqrt(p.shape[1])
            out[p.name] = (torch.rand(p.shape, generator=gen) * 2 - 1) * bound
    return out


def base_of(adapter_name: str) -> str:
    """Global name of the weight an adapter belongs to (`...linear_qkv.lora_a` -> `...linear_qkv.weight`)."""
    return adapter_name.rsplit(".", 1)[0] + ".weight"


def merge_lora(mg: dict[str, torch.Tensor], lora: LoraSpec) -> dict[str, torch.Tensor]:
    """Megatron-global tensors with every adapter folded in: W + (alpha/r) * B @ A, adapters dropped."""
    out = {k: v for k, v in mg.items() if not is_adapter(k)}
    for name in mg:
        if name.endswith(".lora_a"):
            stem = name.removesuffix(".lora_a")
            a, b = mg[name].float(), mg[stem + ".lora_b"].float()
            w = mg[base_of(name)]
            out[base_of(name)] = (w.float() + lora.scale * (b @ a)).to(w.dtype)
    return out


def adapters_of(mg: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Only the adapters of a Megatron-global state."""
    return {k: v for k, v in mg.items() if is_adapter(k)}


class _LoraHook:
    """Forward hook adding (alpha/r) * B(A(x)) to a Megatron linear layer's output."""

    def __init__(self, *, column: bool, scale: float, tp_group: Any) -> None:
        self.column, self.scale, self.tp_group = column, scale, tp_group

    def __call__(self, module: Any, args: tuple, kwargs: dict, output: Any) -> Any:
        from megatron.core.tensor_parallel.mappings import (
            copy_to_tensor_model_parallel_region,
            reduce_from_tensor_model_parallel_region,
        )

        x = args[0] if args else kwargs["input_"]
        h = F.linear(x, module.lora_a)
        if self.column:  # whole input: all-reduce A's input-side gradient over TP
            h = copy_to_tensor_model_parallel_region(h, group=self.tp_group)
        else:  # input cut on `in`: sum the partial products over TP
            h = reduce_from_tensor_model_parallel_region(h, group=self.tp_group)
        delta = F.linear(h, module.lora_b) * self.scale
        out, bias = output
        return out + delta, bias


def _tag(param: torch.nn.Parameter, dim: int | None, stride: int = 1) -> None:
    """Megatron's tensor-parallel attributes (grad-norm and checkpoint code read them)."""
    param.tensor_model_parallel = dim is not None
    param.partition_dim = -1 if dim is None else dim
    param.partition_stride = stride
    param.sequence_parallel = False


def attach_lora(model: torch.nn.Module, lora: LoraSpec, *, family: str, tp_group: Any) -> list[str]:
    """Add adapters (zeros; load them afterwards) and their forward hooks to every targeted
    linear layer of a GPTModel stage; returns the local names of the layers adapted."""
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear

    if getattr(getattr(model, "config", None), "sequence_parallel", False):
        raise ValueError("LoRA adapters do not support sequence parallelism; turn it off")
    adapted = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] not in lora.targets:
            continue
        weight = module.weight
        like = {"dtype": weight.dtype, "device": weight.device}
        r = lora.rank
        if isinstance(module, ColumnParallelLinear):
            a = torch.nn.Parameter(torch.zeros(r, module.input_size, **like))
            b = torch.nn.Parameter(torch.zeros(module.output_size_per_partition, r, **like))
            stride = 2 if name.endswith("linear_fc1") and family != "gpt2" else 1
            _tag(a, None)
            _tag(b, 0, stride)
            column = True
        elif isinstance(module, RowParallelLinear):
            a = torch.nn.Parameter(torch.zeros(r, module.input_size_per_partition, **like))
            b = torch.nn.Parameter(torch.zeros(module.output_size, r, **like))
            _tag(a, 1)
            _tag(b, None)
            column = False
        else:
            raise ValueError(f"lora target {name!r} is a {type(module).__name__}, not a tensor-parallel "
                             "linear layer; use the local layer spec")
        module.register_parameter("lora_a", a)
        module.register_parameter("lora_b", b)
        module.register_forward_hook(_LoraHook(column=column, scale=lora.scale, tp_group=tp_group),
                                     with_kwargs=True)
        adapted.append(name)
    return adapted


def freeze_base(model: torch.nn.Module, *, keep: tuple[str, ...] = ()) -> int:
    """requires_grad False on every parameter but the adapters and the local names in `keep`;
    returns the number of trainable elements left."""
    trainable = 0
    for name, param in model.named_parameters():
        train = is_adapter(name) or name in keep
        param.requires_grad_(train)
        trainable += param.numel() if train else 0
    return trainable


ADAPTERS_FILE = "lora_adapters.safetensors"
"""The adapters alone, by Megatron-global name, beside a merged HF checkpoint."""
ADAPTERS_CONFIG = "lora.json"
"""rank, alpha and targets of the adapters in ADAPTERS_FILE."""


def save_adapters(path: str, mg: dict[str, torch.Tensor], lora: LoraSpec) -> None:
    """Write the adapters of a Megatron-global state (fp32) and their settings into `path`."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file

    from graph.files import atomic_target, atomic_write

    directory = Path(path)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().clone() for k, v in adapters_of(mg).items()}
    with atomic_target(directory / ADAPTERS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
    settings = {"rank": lora.rank, "alpha": lora.alpha, "targets": list(lora.targets)}
    atomic_write(directory / ADAPTERS_CONFIG, json.dumps(settings, indent=2))
