"""Hand-worked FLOP and byte counts of a tiny model."""

from __future__ import annotations

from cost_model import shapes
from graph.spec import ModelArch

# L=2, h=64, f=128, 8 heads of 8, 4 KV heads (kv width 32), vocab 128
TINY = ModelArch(family="llama", num_layers=2, hidden_size=64, ffn_hidden_size=128, num_heads=8,
                 num_kv_heads=4, vocab_size=128)


def test_parameter_counts_by_hand() -> None:
    # attention: q 64*64 + k,v 2*64*32 + o 64*64 = 4096 + 4096 + 4096 = 12288
    assert shapes.attn_matmul_params(TINY) == 12288
    # SwiGLU: gate, up, down = 3 * 64 * 128 = 24576
    assert shapes.mlp_matmul_params(TINY) == 24576
    # + two RMSNorm weights of 64 = 36992 per layer
    assert shapes.layer_params(TINY) == 36992
    # embed 128*64 = 8192, 2 layers 73984, final norm 64, LM head 8192 -> 90432
    assert TINY.num_params() == 8192 + 2 * 36992 + 64 + 8192 == 90432
    gpt2 = ModelArch(family="gpt2", num_layers=3, hidden_size=32, ffn_hidden_size=128, num_heads=4,
                     num_kv_heads=4, vocab_size=50, max_position_embeddings=16, tied_embeddings=True)
    # every layer parameter counted once: embeddings + positions + layers + final LN (tied head)
    assert gpt2.num_params() == 50 * 32 + 16 * 32 + 3 * shapes.layer_params(gpt2) + 2 * 32


def test_forward_flops_by_hand() -> None:
    # per layer per token: 2 * 36864 GEMM weights + 4 * ctx * 64; ctx = 10 -> 73728 + 2560
    # two layers: 152576; LM head 2 * 8192 = 16384 -> 168960
    assert shapes.forward_flops_per_token(TINY, 10) == 168960
    assert shapes.forward_flops_per_token(TINY, 10, value_head=True) == 152576 + 2 * 64
    assert shapes.backward_flops_per_token(TINY, 10) == 2 * 168960
    assert shapes.train_flops_per_token(TINY, 10) == 3 * 168960
    assert shapes.train_flops_per_token(TINY, 10, recompute=True) == 4 * 168960
    # a causal sequence of 16 tokens attends to (16 + 1) / 2 keys on average
    assert shapes.causal_ctx(16) == 8.5
    assert shapes.layer_forward_flops(TINY, 64, 8.5) == 64 * (73728 + 256 * 8.5)


def test_model_flops_for_mfu_by_hand() -> None:
    # PaLM: 6 * (2 layers * 36864 + head 8192 = 81920) + 12 * L * q_width * s = 491520 + 12*2*64*16
    assert shapes.model_flops_per_token(TINY, 16) == 491520 + 24576


def test_kv_cache_and_activation_bytes_by_hand() -> None:
    # K and V, 2 layers, 32 wide, bf16: 2 * 2 * 32 * 2 = 256 bytes per token
    assert shapes.kv_cache_bytes_per_token(TINY) == 256
    # sharded terms: q 64 + k,v 64 + attn out 64 + fc1 out 256 + act out 128 = 576; [s,h]: 4 * 64 = 256
    assert shapes.layer_activation_bytes_per_token(TINY) == 2 * (576 + 256)
    # TP2 with sequence parallelism halves everything; without it the [s,h] terms stay whole
    assert shapes.layer_activation_bytes_per_token(TINY, tp=2) == 832
    assert shapes.layer_activation_bytes_per_token(TINY, tp=2, sequence_parallel=False) == 2 * (288 + 256)


def test_gpt2_activations_match_korthikanti() -> None:
    # Korthikanti et al. 2022: 34 * s * b * h bytes per layer (+5as^2b scores that FlashAttention drops)
    gpt2 = ModelArch(family="gpt2", num_layers=2, hidden_size=64, ffn_hidden_size=256, num_heads=8,
                     num_kv_heads=8, vocab_size=100)
    assert shapes.layer_activation_bytes_per_token(gpt2) == 34 * 64
    # with TP t and sequence parallelism: 34sbh / t
    assert shapes.layer_activation_bytes_per_token(gpt2, tp=4) == 34 * 64 / 4
