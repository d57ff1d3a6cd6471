"""Tests of runtime/interfaces/generate.py's sampling pieces (the decoding loop itself is
checked against transformers' generate in tests/runtime/engine/test_model_engine.py)."""

from __future__ import annotations

import math

import torch

from graph.catalog import GenerateArgs
from runtime.data.batch import SeqBatch
from runtime.interfaces.generate import expand_samples, filter_logits, sample_next, sample_uniform


def test_top_k_and_top_p_filters_by_hand() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.15, 0.1]]))
    top2 = filter_logits(logits, top_k=2, top_p=1.0)
    assert torch.isinf(top2[0, 2:]).all() and torch.isfinite(top2[0, :2]).all()
    # nucleus 0.7: 0.5 alone < 0.7, so 0.25 is kept too; 0.15 starts after 0.75 >= 0.7
    nuc = filter_logits(logits, top_k=0, top_p=0.7)
    assert torch.isfinite(nuc[0, :2]).all() and torch.isinf(nuc[0, 2:]).all()


def test_sampling_frequencies_follow_temperature() -> None:
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]])).expand(20000, 3)
    uniforms = torch.tensor([sample_uniform(0, 0, sid, 0) for sid in range(20000)], dtype=torch.float64)
    draws = sample_next(logits, GenerateArgs(temperature=2.0), uniforms)
    p = torch.softmax(logits[0] / 2.0, -1)
    freq = torch.bincount(draws, minlength=3).float() / draws.numel()
    assert torch.allclose(freq, p, atol=0.015)
    assert sample_next(logits[:1], GenerateArgs(greedy=True), uniforms[:1]).item() == 0
    assert not math.isnan(float(freq.sum()))


def test_expand_samples_repeats_prompts_consecutively() -> None:
    b = SeqBatch.from_lists([[1, 2], [3]], [2, 1], ids=[4, 7])
    b = b.with_fields(seq_fields={"answer": torch.tensor([9.0, 8.0])})
    e = expand_samples(b, 3)
    assert e.ids == (12, 13, 14, 21, 22, 23)
    assert [e.tokens(i) for i in range(6)] == [[1, 2]] * 3 + [[3]] * 3
    assert e.seq_fields["answer"].tolist() == [9.0] * 3 + [8.0] * 3


def test_stop_strings_are_checked_on_decoded_text() -> None:
    from runtime.interfaces.generate import _stop_hit
    from runtime.interfaces.registry import CallContext

    ctx = CallContext(decode=lambda ids: "".join(chr(96 + i) for i in ids))
    assert _stop_hit([1, 2, 3], ("bc",), ctx) is True
    assert _stop_hit([1, 2, 3], ("cb", "z"), ctx) is False
    assert _stop_hit([1, 2, 3], (), ctx) is False
    assert _stop_hit([1, 2, 3], ("bc",), CallContext()) is False  # no detokeniser: no stop


def test_stop_strings_without_detokeniser_raise() -> None:
    import pytest

    from runtime.interfaces import CallContext, run_interface

    b = SeqBatch.from_lists([[1, 2]], [2])
    with pytest.raises(ValueError, match="stop_strings need a detokeniser"):
        run_interface("generate", None, b, GenerateArgs(stop_strings=("x",)), CallContext())


def _streaming_child(rank: int, port: int, out: str) -> None:
    import json
    import os

    import torch.distributed as dist

    from graph.catalog import GenerateArgs
    from graph.placement.layout import DeviceMesh, Layout
    from graph.spec import ModelSpec
    from runtime.data.batch import SeqBatch
    from runtime.engine import platform
    from runtime.engine.model_engine import build_engine
    from runtime.interfaces import CallContext, run_interface
    from tests.runtime import dist_checks

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    platform.apply_platform_patches()
    dist.init_process_group("gloo", rank=0, world_size=1)
    spec = ModelSpec(role="actor", arch=dist_checks.tiny_arch("llama"), trainable=True)
    engine = build_engine(spec, Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1), 0, seed=1)
    prompts = SeqBatch.from_lists([[5 + i, 17, 33 + i] for i in range(12)], [3] * 12, ids=list(range(12)))
    # token 7 ends a response: with 101 random logits most responses run long, some stop early
    args = GenerateArgs(max_new_tokens=24)
    chunks: list[SeqBatch] = []
    ctx = dict(eos_ids=(7, 11, 13, 19, 23), seed=3, step=0)
    full = run_interface("generate", engine, prompts, args, CallContext(**ctx))
    streamed = run_interface("generate", engine, prompts, args,
                             CallContext(**ctx, on_finished=chunks.append, stream_chunk=3))
    joined = SeqBatch.concat(chunks).reorder(full.ids)
    same = all(torch.equal(getattr(joined, k), getattr(full, k)) for k in ("input_ids", "seq_lens", "prompt_lens"))
    same = same and torch.equal(joined.token_fields["logprobs"], full.token_fields["logprobs"])
    same = same and torch.equal(streamed.input_ids, full.input_ids)
    lens = [c.seq_lens.tolist() for c in chunks]
    with open(out, "w") as fh:
        json.dump({"same": same, "sizes": [c.size for c in chunks], "lens": lens,
                   "distinct": len(set(full.seq_lens.tolist()))}, fh)
    dist.destroy_process_group()


def test_streamed_chunks_are_the_final_rows(tmp_path) -> None:
    """generate's on_finished chunks: exactly the final result's rows, chunk by chunk as they end."""
    import json
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "out.json"
    mp.spawn(_streaming_child, args=(port, str(out)), nprocs=1, join=True)
    r = json.loads(out.read_text())
    assert r["same"] is True
    assert sum(r["sizes"]) == 12 and all(n >= 3 for n in r["sizes"]) and len(r["sizes"]) >= 2
    assert r["distinct"] > 2
    # a chunk goes out once its samples have ended: earlier chunks hold shorter (or equal) responses
    assert max(r["lens"][0]) <= max(r["lens"][-1])
