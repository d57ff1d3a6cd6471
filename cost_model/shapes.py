"""Model shape costs from a ModelArch: parameters, FLOPs per token, bytes.

Conventions (pure functions, counts not times):
- A GEMM of an [n, k] input with a [k, m] weight costs 2*n*k*m FLOPs; backward costs
  twice the forward (grad of input and of weight).
- Attention's sequence-dependent term per layer and token is 4 * ctx * q_width FLOPs
  (QK^T and PV), where ctx is the number of keys the token attends to. Causal
  attention over a sequence of s tokens averages ctx = (s + 1) / 2 (FlashAttention
  skips masked blocks); `model_flops_per_token` uses the PaLM-paper convention (full
  s, no causal saving) that published MFU figures are computed with.
- Norms, biases, activations and softmax are ignored in FLOPs (under 1%), counted in bytes.
"""

from __future__ import annotations

from graph.spec import ModelArch


def q_width(arch: ModelArch) -> int:
    """Width of the query projection output (num_heads * head_dim)."""
    return arch.num_heads * arch.head_dim


def kv_width(arch: ModelArch) -> int:
    """Width of the key (or value) projection output (num_kv_heads * head_dim)."""
    return arch.num_kv_heads * arch.head_dim


def gated_mlp(arch: ModelArch) -> bool:
    """True for SwiGLU (llama, qwen2: gate and up projections), False for GPT-2's GeLU MLP."""
    return arch.family != "gpt2"


def attn_matmul_params(arch: ModelArch) -> int:
    """Weights of q, k, v and output projections of one layer."""
    h = arch.hidden_size
    return h * q_width(arch) + 2 * h * kv_width(arch) + q_width(arch) * h


def mlp_matmul_params(arch: ModelArch) -> int:
    """Weights of the MLP of one layer (3*h*f gated, 2*h*f plain)."""
    return (3 if gated_mlp(arch) else 2) * arch.hidden_size * arch.ffn_hidden_size


def layer_matmul_params(arch: ModelArch) -> int:
    """GEMM weights of one transformer layer."""
    return attn_matmul_params(arch) + mlp_matmul_params(arch)


def layer_params(arch: ModelArch) -> int:
    """All parameters of one layer (GEMM weights, biases, norms), as ModelArch.num_params counts them."""
    h, f = arch.hidden_size, arch.ffn_hidden_size
    if arch.family == "gpt2":
        return 4 * h * h + 2 * h * f + 3 * h + h + f + h + 4 * h  # weights, biases, 2 LayerNorms
    biases = q_width(arch) + 2 * kv_width(arch) if arch.qkv_bias else 0
    return layer_matmul_params(arch) + biases + 2 * h


def head_params(arch: ModelArch, *, value_head: bool = False) -> int:
    """GEMM weights of the output layer: vocab x hidden for an LM head, hidden for a value head."""
    return arch.hidden_size if value_head else arch.vocab_size * arch.hidden_size


def forward_flops_per_token(arch: ModelArch, ctx: float, *, value_head: bool = False,
                            head: bool = True) -> float:
    """Forward FLOPs of one token attending to `ctx` keys, through every layer (+ the head)."""
    per_layer = 2 * layer_matmul_params(arch) + 4 * ctx * q_width(arch)
    total = arch.num_layers * per_layer
    if head:
        total += 2 * head_params(arch, value_head=value_head)
    return float(total)


def backward_flops_per_token(arch: ModelArch, ctx: float, *, value_head: bool = False) -> float:
    """Backward FLOPs of one token: twice the forward (gradients of inputs and of weights)."""
    return 2.0 * forward_flops_per_token(arch, ctx, value_head=value_head)


def train_flops_per_token(arch: ModelArch, ctx: float, *, value_head: bool = False,
                          recompute: bool = False) -> float:
    """Forward + backward FLOPs of one token, plus a second forward under full recomputation."""
    passes = 4.0 if recompute else 3.0
    return passes * forward_flops_per_token(arch, ctx, value_head=value_head)


def layer_forward_flops(arch: ModelArch, num_tokens: float, ctx: float) -> float:
    """Forward FLOPs of one layer over `num_tokens` tokens attending to `ctx` keys on average."""
    return num_tokens * (2 * layer_matmul_params(arch) + 4 * ctx * q_width(arch))


def causal_ctx(seq_len: float) -> float:
    """Average keys per token under a causal mask over `seq_len` tokens."""
    return (seq_len + 1) / 2


def model_flops_per_token(arch: ModelArch, seq_len: int, *, value_head: bool = False) -> float:
    """Train FLOPs per token for MFU (PaLM appendix B): 6 * matmul params + 12 * L * q_width * s."""
    matmul = arch.num_layers * layer_matmul_params(arch) + head_params(arch, value_head=value_head)
    return 6.0 * matmul + 12.0 * arch.num_layers * q_width(arch) * seq_len


def kv_cache_bytes_per_token(arch: ModelArch, dtype_bytes: int = 2) -> int:
    """KV-cache bytes one token keeps across all layers (K and V)."""
    return 2 * arch.num_layers * kv_width(arch) * dtype_bytes


def layer_activation_bytes_per_token(arch: ModelArch, *, tp: int = 1, sequence_parallel: bool = True,
                                     dtype_bytes: int = 2, dropout: bool | None = None) -> float:
    """Bytes one layer saves per token for its backward pass, per TP rank, FlashAttention assumed.

    Saved tensors (cf. Korthikanti et al. 2022, "Reducing Activation Recomputation in
    Large Transformer Models", section 4.1): input of each norm (h, twice), the QKV
    input (h), q/k/v (q + 2 kv), the attention output entering linear_proj (q), the
    fc1 input (h), fc1's output (f, or 2f gated) and the activation output (f); plus one
    byte per element of the two dropout masks (h, twice) when dropout is on (GPT-2).
    For GPT-2 sizes (f = 4h) that is 34 bytes * h per token: Korthikanti's 34sbh, less
    the 5as^2b attention-score term that FlashAttention does not store. Under TP the
    [s, h]-shaped terms shard only with sequence parallelism; the rest always shard.
    """
    h, f = arch.hidden_size, arch.ffn_hidden_size
    if dropout is None:
        dropout = arch.family == "gpt2"
    sharded = q_width(arch) + 2 * kv_width(arch) + q_width(arch) + (2 if gated_mlp(arch) else 1) * f + f
    seq_shaped = 4 * h  # two norm inputs, QKV input, fc1 input
    masks = 2 * h if dropout else 0
    seq_div = tp if sequence_parallel else 1
    return dtype_bytes * (sharded / tp + seq_shaped / seq_div) + masks / seq_div
