"""The lean forward: the engine's GPTModel computed with plain torch ops at tp = pp = 1.

Megatron's layers cost much Python per call on CPU (autograd Functions around every linear
layer, the inference-context bookkeeping in attention, rotary embeddings re-applied to the
whole key cache at every decode step). Without tensor or pipeline parallelism none of that
machinery does anything, so `forward` runs the same model from the same `Parameter`
objects with `F.linear`, the module's norms, rotary embeddings and
`scaled_dot_product_attention`. Gradients flow into the same parameters, so Megatron's DDP
hooks and the distributed optimizer see them as before.

`KVCache` is the decode-time counterpart for generation: keys are stored after the rotary
embedding (position-wise, so the same values), and a decode step attends to the filled
prefix.

What it computes is the Megatron model's function (equal to transformers' within the
engine's tests); the rounding differs from Megatron's path (fused QKV split, SDPA instead of
baddbmm + softmax), as it already differs between layouts. `ENABLED` turns it off (tests
compare both paths; benchmarks measure both).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine

ENABLED = {"on": True}
"""Switch: False sends every forward through Megatron's modules."""


def applies(engine: ModelEngine) -> bool:
    """Whether the lean forward computes this engine's model: no tensor, pipeline, sequence or
    context parallelism (LoRA adapters are fine: at tp = 1 their TP mappings are identities)."""
    if not ENABLED["on"] or engine.layout.tp != 1 or engine.layout.pp != 1:
        return False
    cfg = engine.config
    return not cfg.sequence_parallel and cfg.context_parallel_size == 1 and engine.module is not None


def _linear(module: Any, x: torch.Tensor, lora_scale: float) -> torch.Tensor:
    """A Megatron (column/row-parallel) linear layer at tp = 1, its bias included, plus its LoRA
    adapters' (alpha/r) * B(A(x)) when it has them (what `runtime.engine.lora`'s hook adds)."""
    out = F.linear(x, module.weight, module.bias)
    a = module._parameters.get("lora_a")
    if a is not None:
        out = out + F.linear(F.linear(x, a), module._parameters["lora_b"]) * lora_scale
    return out


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Megatron's non-interleaved rotary embedding: x * cos + rotate_half(x) * sin."""
    x1, x2 = torch.chunk(x, 2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class _Rope:
    """cos / sin per position [1, n, 1, d] (the module's inverse frequencies, fp32 like Megatron)."""

    def __init__(self, module: Any, length: int, dtype: torch.dtype, device: torch.device) -> None:
        inv_freq = module.rotary_pos_emb.inv_freq.to(device)
        freqs = torch.outer(torch.arange(length, device=device, dtype=inv_freq.dtype), inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)[None, :, None, :]
        self.cos, self.sin = torch.cos(emb).to(dtype), torch.sin(emb).to(dtype)

    def at(self, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[:, start:stop], self.sin[:, start:stop]


class KVCache:
    """Keys (after rotary) and values per layer for `batch` rows of up to `length` positions."""

    def __init__(self, engine: ModelEngine, batch: int, length: int) -> None:
        arch, module = engine.arch, engine.module
        p = module.embedding.word_embeddings.weight
        shape = (batch, arch.num_kv_heads, length, arch.head_dim)
        self.k = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in range(arch.num_layers)]
        self.v = [torch.empty(shape, dtype=p.dtype, device=p.device) for _ in range(arch.num_layers)]
        self.rope = _rope_of(engine, length, p.dtype, p.device) if _has_rope(module) else None


def _rope_of(engine: ModelEngine, length: int, dtype: torch.dtype, device: torch.device) -> _Rope:
    """The engine's rotary tables, kept between calls and grown on demand."""
    held = engine.__dict__.get("_lean_rope")
    if held is None or held.cos.shape[1] < length or held.cos.dtype != dtype or held.cos.device != device:
        held = _Rope(engine.module, max(length, 64), dtype, device)
        engine.__dict__["_lean_rope"] = held
    return held


def _has_rope(module: Any) -> bool:
    return getattr(module, "position_embedding_type", "rope") == "rope"


def forward(engine: ModelEngine, input_ids: torch.Tensor, position_ids: torch.Tensor, *,
            cache: KVCache | None = None, start: int = 0, last_only: bool = False) -> torch.Tensor:
    """The model's output [b, s, V] (logits, vocabulary padded as the module's) or [b, s, 1]
    (value head) for tokens at positions start..start+s-1; with `cache`, the keys and values
    of earlier positions come from it and these positions' are written into it. `last_only`:
    the output at the last position alone, [b, 1, ...] (what a decode step samples from)."""
    module, arch = engine.module, engine.arch
    b, s = input_ids.shape
    nh, ng, d = arch.num_heads, arch.num_kv_heads, arch.head_dim
    per_group = nh // ng
    scale = engine.spec.lora.scale if engine.spec.lora is not None else 0.0
    emb = module.embedding
    h = F.embedding(input_ids, emb.word_embeddings.weight)
    if getattr(emb, "add_position_embedding", False):
        h = h + emb.position_embeddings(position_ids)
    if _has_rope(module):
        rope = cache.rope if cache is not None else _rope_of(engine, start + s, h.dtype, h.device)
        cos, sin = rope.at(start, start + s)
    stop = start + s
    for i, layer in enumerate(module.decoder.layers):
        attn = layer.self_attention
        x = layer.input_layernorm(h)
        qkv = _linear(attn.linear_qkv, x, scale).view(b, s, ng, (per_group + 2) * d)
        q, k, v = torch.split(qkv, [per_group * d, d, d], dim=-1)
        q = q.reshape(b, s, nh, d)
        if _has_rope(module):
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if cache is not None:
            cache.k[i][:, :, start:stop] = k
            cache.v[i][:, :, start:stop] = v
            k, v = cache.k[i][:, :, :stop], cache.v[i][:, :, :stop]
        if start == 0:
            ctx = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=per_group > 1)
        elif s == 1:
            ctx = F.scaled_dot_product_attention(q, k, v, enable_gqa=per_group > 1)
        else:  # several new positions after a cached prefix: each sees the prefix and itself
            mask = torch.ones(s, stop, dtype=torch.bool, device=h.device).tril(start)
            ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=per_group > 1)
        h = h + _linear(attn.linear_proj, ctx.transpose(1, 2).reshape(b, s, nh * d), scale)
        mlp = layer.mlp
        x = _linear(mlp.linear_fc1, layer.pre_mlp_layernorm(h), scale)
        if engine.config.gated_linear_unit:
            gate, up = torch.chunk(x, 2, dim=-1)
            x = engine.config.activation_func(gate) * up
        else:
            x = engine.config.activation_func(x)
        h = h + _linear(mlp.linear_fc2, x, scale)
    if last_only:
        h = h[:, -1:]
    # called on Megatron's [s, b, h] layout: hooks on the final norm (rehearsal's hidden states) see what they expect
    h = module.decoder.final_layernorm(h.transpose(0, 1)).transpose(0, 1)
    head = module.output_layer
    if engine.spec.value_head:
        return F.linear(h, head.weight)
    weight = module.shared_embedding_or_output_weight() if module.share_embeddings_and_output_weights \
        else head.weight
    return F.linear(h, weight, getattr(head, "bias", None))
