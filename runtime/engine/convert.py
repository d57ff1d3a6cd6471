"""HF <-> Megatron-core (local spec) weight layouts, and tensor-parallel sharding.

Three forms of the same weights:

* **HF**: a transformers state dict (`model.layers.0.self_attn.q_proj.weight`, ...).
* **Megatron-global** (the "global name"): Megatron-core GPTModel parameter names with the
  GLOBAL layer index (`decoder.layers.3.self_attention.linear_qkv.weight`) and the full,
  unsharded tensor, the same in every layout (true vocabulary, no padding). A value head
  is `value_head.weight`.
* **Local shard**: what one (tp_rank, pp_rank) holds:
  `shard(pad_vocab(name, full, tp), spec, tp, tp_rank)`. Vocab-parallel tensors
  (word embeddings, output layer) are first padded with zero rows to a multiple of tp.

`ShardSpec(dim, stride)` says how a global tensor splits over TP: `dim=None` replicated;
otherwise the tensor is cut into `stride` equal parts along `dim` (fc1's [gate; up] has
stride 2), each part into tp contiguous chunks, and rank r holds its chunk of every part.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from graph.spec import ModelArch

VALUE_HEAD = "value_head.weight"


@dataclass(frozen=True, kw_only=True)
class ShardSpec:
    """How a Megatron-global tensor is split across tensor-parallel ranks."""

    dim: int | None
    """Partition dimension; None when every TP rank holds the whole tensor."""
    stride: int = 1
    """Number of interleaved parts (2 for the fused gate/up of SwiGLU)."""


def padded_vocab(arch: ModelArch, tp: int) -> int:
    """Vocabulary rounded up to a multiple of tp (Megatron's vocab-parallel embedding)."""
    return -(-arch.vocab_size // tp) * tp


def shard_spec(global_name: str, family: str) -> ShardSpec:
    """The TP split of a Megatron-global parameter."""
    leaf = global_name.split(".")
    last2 = ".".join(leaf[-2:])
    if global_name in ("embedding.word_embeddings.weight", "output_layer.weight"):
        return ShardSpec(dim=0)
    if last2 in ("linear_qkv.weight", "linear_qkv.bias"):
        return ShardSpec(dim=0)
    if last2 in ("linear_fc1.weight", "linear_fc1.bias"):
        return ShardSpec(dim=0, stride=1 if family == "gpt2" else 2)
    if last2 in ("linear_proj.weight", "linear_fc2.weight"):
        return ShardSpec(dim=1)
    # LoRA adapters (runtime.engine.lora) are cut like their base layer
    if last2 == "linear_qkv.lora_b":
        return ShardSpec(dim=0)
    if last2 == "linear_fc1.lora_b":
        return ShardSpec(dim=0, stride=1 if family == "gpt2" else 2)
    if last2 in ("linear_proj.lora_a", "linear_fc2.lora_a"):
        return ShardSpec(dim=1)
    return ShardSpec(dim=None)


def shard(full: torch.Tensor, spec: ShardSpec, tp: int, tp_rank: int) -> torch.Tensor:
    """The part of a global tensor that TP rank `tp_rank` of `tp` holds."""
    if spec.dim is None or tp == 1:
        return full
    parts = full.chunk(spec.stride, dim=spec.dim)
    return torch.cat([p.chunk(tp, dim=spec.dim)[tp_rank] for p in parts], dim=spec.dim)


def shard_ranges(spec: ShardSpec, global_len: int, tp: int, tp_rank: int) -> tuple[tuple[int, int], ...]:
    """[start, stop) index ranges along `spec.dim` of the global tensor that rank `tp_rank`
    holds, in local order (one range per stride part; the whole length when replicated)."""
    if spec.dim is None or tp == 1:
        return ((0, global_len),)
    part = global_len // spec.stride
    chunk = part // tp
    return tuple((k * part + tp_rank * chunk, k * part + (tp_rank + 1) * chunk)
                 for k in range(spec.stride))


def unshard(shards: list[torch.Tensor], spec: ShardSpec) -> torch.Tensor:
    """Inverse of `shard`: the global tensor from every TP rank's part, in rank order."""
    if spec.dim is None or len(shards) == 1:
        return shards[0]
    split = [s.chunk(spec.stride, dim=spec.dim) for s in shards]
    return torch.cat([split[r][k] for k in range(spec.stride) for r in range(len(shards))],
                     dim=spec.dim)


# --------------------------------------------------------------------------- HF -> Megatron


def _fuse_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, arch: ModelArch) -> torch.Tensor:
    """[q; k; v] of HF into Megatron's per-query-group [q heads of g, k_g, v_g] order."""
    ng, d = arch.num_kv_heads, arch.head_dim
    per = arch.num_heads // ng
    tail = q.shape[1:]
    qg = q.reshape(ng, per * d, *tail)
    kg = k.reshape(ng, d, *tail)
    vg = v.reshape(ng, d, *tail)
    return torch.cat([qg, kg, vg], dim=1).reshape(-1, *tail)


def _split_qkv(fused: torch.Tensor, arch: ModelArch) -> tuple[torch.Tensor, ...]:
    """Inverse of `_fuse_qkv`."""
    ng, d = arch.num_kv_heads, arch.head_dim
    per = arch.num_heads // ng
    tail = fused.shape[1:]
    g = fused.reshape(ng, (per + 2) * d, *tail)
    q, k, v = g.split([per * d, d, d], dim=1)
    return (q.reshape(-1, *tail).contiguous(), k.reshape(-1, *tail).contiguous(),
            v.reshape(-1, *tail).contiguous())


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    return torch.cat([t, t.new_zeros(rows - t.shape[0], *t.shape[1:])], dim=0)


VOCAB_PARALLEL = ("embedding.word_embeddings.weight", "output_layer.weight")


def pad_vocab(name: str, full: torch.Tensor, arch: ModelArch, tp: int) -> torch.Tensor:
    """A vocab-parallel global tensor padded with zero rows for `tp`; others unchanged."""
    if name in VOCAB_PARALLEL:
        return _pad_rows(full, padded_vocab(arch, tp))
    return full


def unpad_vocab(name: str, full: torch.Tensor, arch: ModelArch) -> torch.Tensor:
    """Inverse of `pad_vocab`."""
    return full[: arch.vocab_size] if name in VOCAB_PARALLEL else full


def hf_to_megatron(hf: dict[str, torch.Tensor], arch: ModelArch, *,
                   value_head: bool) -> dict[str, torch.Tensor]:
    """Megatron-global tensors from a HF state dict."""
    if arch.family == "gpt2":
        out = _gpt2_to_megatron(hf, arch)
    else:
        out = _llama_to_megatron(hf, arch)
    if value_head:
        out[VALUE_HEAD] = hf["score.weight"]
    elif not arch.tied_embeddings:
        out["output_layer.weight"] = hf["lm_head.weight"]
    return out


def _llama_to_megatron(hf: dict[str, torch.Tensor], arch: ModelArch) -> dict[str, torch.Tensor]:
    out = {"embedding.word_embeddings.weight": hf["model.embed_tokens.weight"],
           "decoder.final_layernorm.weight": hf["model.norm.weight"]}
    for i in range(arch.num_layers):
        src, dst = f"model.layers.{i}.", f"decoder.layers.{i}."
        att = src + "self_attn."
        out[dst + "input_layernorm.weight"] = hf[src + "input_layernorm.weight"]
        out[dst + "pre_mlp_layernorm.weight"] = hf[src + "post_attention_layernorm.weight"]
        out[dst + "self_attention.linear_qkv.weight"] = _fuse_qkv(
            hf[att + "q_proj.weight"], hf[att + "k_proj.weight"], hf[att + "v_proj.weight"], arch)
        if arch.qkv_bias:
            out[dst + "self_attention.linear_qkv.bias"] = _fuse_qkv(
                hf[att + "q_proj.bias"], hf[att + "k_proj.bias"], hf[att + "v_proj.bias"], arch)
        out[dst + "self_attention.linear_proj.weight"] = hf[att + "o_proj.weight"]
        mlp = src + "mlp."
        out[dst + "mlp.linear_fc1.weight"] = torch.cat(
            [hf[mlp + "gate_proj.weight"], hf[mlp + "up_proj.weight"]], dim=0)
        out[dst + "mlp.linear_fc2.weight"] = hf[mlp + "down_proj.weight"]
    return out


def _interleave_gpt2_qkv(w: torch.Tensor, arch: ModelArch) -> torch.Tensor:
    """GPT-2's [q; k; v] (rows) into Megatron's per-head [q_h, k_h, v_h] order."""
    nh, d = arch.num_heads, arch.head_dim
    tail = w.shape[1:]
    return w.reshape(3, nh, d, *tail).transpose(0, 1).reshape(3 * nh * d, *tail).contiguous()


def _deinterleave_gpt2_qkv(w: torch.Tensor, arch: ModelArch) -> torch.Tensor:
    nh, d = arch.num_heads, arch.head_dim
    tail = w.shape[1:]
    return w.reshape(nh, 3, d, *tail).transpose(0, 1).reshape(3 * nh * d, *tail).contiguous()


def _gpt2_to_megatron(hf: dict[str, torch.Tensor], arch: ModelArch) -> dict[str, torch.Tensor]:
    p = "transformer."
    out = {"embedding.word_embeddings.weight": hf[p + "wte.weight"],
           "embedding.position_embeddings.weight": hf[p + "wpe.weight"],
           "decoder.final_layernorm.weight": hf[p + "ln_f.weight"],
           "decoder.final_layernorm.bias": hf[p + "ln_f.bias"]}
    for i in range(arch.num_layers):
        src, dst = f"{p}h.{i}.", f"decoder.layers.{i}."
        for a, b in (("ln_1", "input_layernorm"), ("ln_2", "pre_mlp_layernorm")):
            out[dst + b + ".weight"] = hf[src + a + ".weight"]
            out[dst + b + ".bias"] = hf[src + a + ".bias"]
        qkv = dst + "self_attention.linear_qkv."
        out[qkv + "weight"] = _interleave_gpt2_qkv(hf[src + "attn.c_attn.weight"].t(), arch)
        out[qkv + "bias"] = _interleave_gpt2_qkv(hf[src + "attn.c_attn.bias"], arch)
        pairs = (("attn.c_proj", "self_attention.linear_proj"), ("mlp.c_fc", "mlp.linear_fc1"),
                 ("mlp.c_proj", "mlp.linear_fc2"))
        for a, b in pairs:
            out[dst + b + ".weight"] = hf[src + a + ".weight"].t().contiguous()
            out[dst + b + ".bias"] = hf[src + a + ".bias"]
    return out


# --------------------------------------------------------------------------- Megatron -> HF


def megatron_to_hf(mg: dict[str, torch.Tensor], arch: ModelArch, *,
                   value_head: bool) -> dict[str, torch.Tensor]:
    """A HF state dict from Megatron-global tensors."""
    out = _gpt2_to_hf(mg, arch) if arch.family == "gpt2" else _llama_to_hf(mg, arch)
    if value_head:
        out["score.weight"] = mg[VALUE_HEAD]
    elif not arch.tied_embeddings:
        out["lm_head.weight"] = mg["output_layer.weight"]
    return {k: v.contiguous() for k, v in out.items()}


def _llama_to_hf(mg: dict[str, torch.Tensor], arch: ModelArch) -> dict[str, torch.Tensor]:
    out = {"model.embed_tokens.weight": mg["embedding.word_embeddings.weight"],
           "model.norm.weight": mg["decoder.final_layernorm.weight"]}
    f = arch.ffn_hidden_size
    for i in range(arch.num_layers):
        src, dst = f"decoder.layers.{i}.", f"model.layers.{i}."
        att = dst + "self_attn."
        out[dst + "input_layernorm.weight"] = mg[src + "input_layernorm.weight"]
        out[dst + "post_attention_layernorm.weight"] = mg[src + "pre_mlp_layernorm.weight"]
        q, k, v = _split_qkv(mg[src + "self_attention.linear_qkv.weight"], arch)
        out.update({att + "q_proj.weight": q, att + "k_proj.weight": k, att + "v_proj.weight": v})
        if arch.qkv_bias:
            q, k, v = _split_qkv(mg[src + "self_attention.linear_qkv.bias"], arch)
            out.update({att + "q_proj.bias": q, att + "k_proj.bias": k, att + "v_proj.bias": v})
        out[att + "o_proj.weight"] = mg[src + "self_attention.linear_proj.weight"]
        fc1 = mg[src + "mlp.linear_fc1.weight"]
        out[dst + "mlp.gate_proj.weight"] = fc1[:f]
        out[dst + "mlp.up_proj.weight"] = fc1[f:]
        out[dst + "mlp.down_proj.weight"] = mg[src + "mlp.linear_fc2.weight"]
    return out


def _gpt2_to_hf(mg: dict[str, torch.Tensor], arch: ModelArch) -> dict[str, torch.Tensor]:
    p = "transformer."
    out = {p + "wte.weight": mg["embedding.word_embeddings.weight"],
           p + "wpe.weight": mg["embedding.position_embeddings.weight"],
           p + "ln_f.weight": mg["decoder.final_layernorm.weight"],
           p + "ln_f.bias": mg["decoder.final_layernorm.bias"]}
    for i in range(arch.num_layers):
        src, dst = f"decoder.layers.{i}.", f"{p}h.{i}."
        for a, b in (("ln_1", "input_layernorm"), ("ln_2", "pre_mlp_layernorm")):
            out[dst + a + ".weight"] = mg[src + b + ".weight"]
            out[dst + a + ".bias"] = mg[src + b + ".bias"]
        qkv = src + "self_attention.linear_qkv."
        out[dst + "attn.c_attn.weight"] = _deinterleave_gpt2_qkv(mg[qkv + "weight"], arch).t()
        out[dst + "attn.c_attn.bias"] = _deinterleave_gpt2_qkv(mg[qkv + "bias"], arch)
        pairs = (("attn.c_proj", "self_attention.linear_proj"), ("mlp.c_fc", "mlp.linear_fc1"),
                 ("mlp.c_proj", "mlp.linear_fc2"))
        for a, b in pairs:
            out[dst + a + ".weight"] = mg[src + b + ".weight"].t()
            out[dst + a + ".bias"] = mg[src + b + ".bias"]
    return out


# --------------------------------------------------------------------------- random init


def expected_hf_shapes(arch: ModelArch, *, value_head: bool) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor a HF checkpoint of `arch` holds."""
    h, f, v, d = arch.hidden_size, arch.ffn_hidden_size, arch.vocab_size, arch.head_dim
    q, kv = arch.num_heads * d, arch.num_kv_heads * d
    if arch.family == "gpt2":
        p = "transformer."
        shapes = {p + "wte.weight": (v, h), p + "wpe.weight": (arch.max_position_embeddings, h),
                  p + "ln_f.weight": (h,), p + "ln_f.bias": (h,)}
        for i in range(arch.num_layers):
            s = f"{p}h.{i}."
            shapes.update({
                s + "ln_1.weight": (h,), s + "ln_1.bias": (h,), s + "ln_2.weight": (h,),
                s + "ln_2.bias": (h,), s + "attn.c_attn.weight": (h, 3 * h),
                s + "attn.c_attn.bias": (3 * h,), s + "attn.c_proj.weight": (h, h),
                s + "attn.c_proj.bias": (h,), s + "mlp.c_fc.weight": (h, f),
                s + "mlp.c_fc.bias": (f,), s + "mlp.c_proj.weight": (f, h),
                s + "mlp.c_proj.bias": (h,)})
    else:
        shapes = {"model.embed_tokens.weight": (v, h), "model.norm.weight": (h,)}
        for i in range(arch.num_layers):
            s = f"model.layers.{i}."
            a = s + "self_attn."
            shapes.update({
                s + "input_layernorm.weight": (h,), s + "post_attention_layernorm.weight": (h,),
                a + "q_proj.weight": (q, h), a + "k_proj.weight": (kv, h),
                a + "v_proj.weight": (kv, h), a + "o_proj.weight": (h, q),
                s + "mlp.gate_proj.weight": (f, h), s + "mlp.up_proj.weight": (f, h),
                s + "mlp.down_proj.weight": (h, f)})
            if arch.qkv_bias:
                shapes.update({a + "q_proj.bias": (q,), a + "k_proj.bias": (kv,),
                               a + "v_proj.bias": (kv,)})
    if value_head:
        shapes["score.weight"] = (1, h)
    elif not arch.tied_embeddings:
        shapes["lm_head.weight"] = (v, h)
    return shapes


def _is_norm(name: str) -> bool:
    return any(k in name for k in ("layernorm", "ln_", "model.norm"))


def init_tensor(name: str, shape: tuple[int, ...], seed: int, std: float = 0.02) -> torch.Tensor:
    """A deterministic initial value for HF tensor `name`: the same in every layout."""
    if _is_norm(name) and name.endswith("weight"):
        return torch.ones(shape)
    if name.endswith("bias"):
        return torch.zeros(shape)
    gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
    return torch.randn(shape, generator=gen) * std


def random_hf_state(arch: ModelArch, *, seed: int, value_head: bool) -> dict[str, torch.Tensor]:
    """Random HF-layout weights from a seed (layout-independent by construction)."""
    return {name: init_tensor(name, shape, seed)
            for name, shape in expected_hf_shapes(arch, value_head=value_head).items()}
