"""What `realloc profile` measures: the grid of sizes and shapes (`QUICK`, `FULL`) and the
synthetic Llama-style model it measures on."""

from __future__ import annotations

from dataclasses import dataclass

from graph.spec import ModelArch


@dataclass(frozen=True, kw_only=True)
class ProfileGrid:
    """What to measure."""

    hidden_sizes: tuple[int, ...]
    """Hidden sizes of the synthetic model (ffn = 2 x hidden, 4 heads, 2 KV heads)."""
    shapes: tuple[tuple[int, int], ...]
    """(batch, seq) of the forward and forward+backward samples."""
    tp_degrees: tuple[int, ...]
    """TP degrees (those above the device count are skipped)."""
    decode_batches: tuple[int, ...]
    """Sequences per generation."""
    decode_steps: tuple[int, ...]
    """New tokens per generation."""
    collective_bytes: tuple[int, ...]
    """Buffer sizes of the collective samples (the full grid's largest, 128 MiB, is beyond a CPU's
    last-level cache, as a model's gradient buffer is)."""
    repeats: int
    """Timed runs per sample (the median is kept)."""
    layers: tuple[int, ...] = (1, 2)
    """Layer counts (two or more separate per-layer from per-pass costs)."""
    vocab_size: int = 64
    """Vocabulary of the synthetic model."""
    prompt_len: int = 8
    """Prompt tokens of the generations."""
    call_seqs: tuple[int, ...] = (4, 16)
    """Sequences per data-parallel rank of the call samples (cover the batches runs use)."""
    thread_hidden: tuple[int, ...] = (64, 256)
    """Hidden sizes whose one-layer forward+backward is timed with one torch thread and with
    all cores (CPU only), for the thread efficiency."""
    thread_shape: tuple[int, int] = (8, 64)
    """(batch, seq) of those timings."""
    speed_hidden: tuple[int, ...] = ()
    """Larger hidden sizes whose one-layer forward and forward+backward are timed at tp 1 for
    the compute speed by layer size (large matrices reach more FLOP/s than the fit's)."""
    speed_shapes: tuple[tuple[int, int], ...] = ((8, 32),)
    """(batch, seq) of those timings."""
    speed_decode_batch: int = 16
    """Sequences of the decode-shaped timing (a forward of one token each) at those sizes."""
    speed_decode_layers: int = 4
    """Layers of the decode-shaped timing (enough work that the fit's per-pass overheads,
    subtracted from it, do not decide the speed)."""
    corun_shape: tuple[int, int] = (8, 32)
    """(batch, seq) of the co-run forward+backward (`runtime.profiling.corun`) at each `speed_hidden`."""
    corun_max_layers: int = 32
    """Most layers of the co-run model (enough that each worker's weights are 4x the cache)."""
    optimizer_hidden: tuple[int, ...] = ()
    """Larger hidden sizes (two layers) whose optimizer step alone is timed too, so the
    per-parameter fit reaches the parameter counts of real models."""


QUICK = ProfileGrid(hidden_sizes=(64,), shapes=((2, 16), (8, 32)), tp_degrees=(1, 2),
                    decode_batches=(2, 8), decode_steps=(2, 6), collective_bytes=(4096, 1 << 20),
                    repeats=3, speed_hidden=(256,), corun_max_layers=2)
FULL = ProfileGrid(hidden_sizes=(64, 128), shapes=((2, 16), (4, 16), (8, 32), (16, 64)), tp_degrees=(1, 2, 4),
                   decode_batches=(2, 16, 64), decode_steps=(2, 8), repeats=5,
                   collective_bytes=(4096, 65536, 1 << 20, 4 << 20, 128 << 20), call_seqs=(4, 16, 64),
                   thread_hidden=(64, 256, 576, 1024), speed_hidden=(256, 576),
                   speed_shapes=((8, 32), (16, 64)), optimizer_hidden=(576,))


def synthetic_arch(hidden: int, layers: int, vocab: int, tp: int = 1) -> ModelArch:
    """The Llama-style model the profile measures (GQA 4 / 2 heads; 4 KV heads at tp 4)."""
    return ModelArch(family="llama", num_layers=layers, hidden_size=hidden, ffn_hidden_size=2 * hidden,
                     num_heads=4, num_kv_heads=max(2, tp), vocab_size=vocab, max_position_embeddings=256)
