"""runtime.engine.lean against Megatron's own modules (the reference: the same weights through
GPTModel's forward, its static KV-cache inference and its schedule), in one 1-process launch.

transformers is the independent reference of both paths elsewhere (test_model_engine: the
tp=1 layouts there now run the lean forward, tp=2 and pp=2 Megatron's)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from runtime.execution.launch import LaunchSpec, launch
from tests.runtime import dist_checks


def _engine(family: str, *, value_head: bool = False, lora: bool = False, **arch_kw: Any) -> Any:
    import dataclasses

    from graph.placement.layout import DeviceMesh, Layout
    from graph.spec import LoraSpec, ModelSpec
    from runtime.engine.model_engine import build_engine

    arch = dataclasses.replace(dist_checks.tiny_arch(family), **arch_kw)
    spec = ModelSpec(role="critic" if value_head else "actor", arch=arch, trainable=True, value_head=value_head,
                     lora=LoraSpec(rank=4, alpha=8.0) if lora else None)
    engine = build_engine(spec, Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1), 0, seed=3)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # biases and LoRA's B start at zero: make them count
        for name, p in engine.module.named_parameters():
            if name.endswith(("bias", "lora_b")):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return engine


def _worker(ctx: Any) -> dict[str, Any]:
    import warnings

    from graph.catalog import GenerateArgs, SFTArgs
    from runtime.data.batch import SeqBatch
    from runtime.engine import lean, platform
    from runtime.interfaces import run_interface
    from runtime.interfaces.registry import CallContext

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    res: dict[str, Any] = {}
    ids = torch.randint(0, 101, (3, 12), generator=torch.Generator().manual_seed(1))
    pos = torch.arange(12).expand(3, 12)
    cases = {"llama": ("llama", {}), "llama_tied_bias": ("llama", {"tied_embeddings": True, "qkv_bias": True}),
             "qwen2": ("qwen2", {}), "gpt2": ("gpt2", {}), "critic": ("llama", {"value_head": True}),
             "lora": ("llama", {"lora": True}), "lora_gpt2_critic": ("gpt2", {"lora": True, "value_head": True})}
    for name, (family, kw) in cases.items():
        engine = _engine(family, **kw)
        res[f"applies/{name}"] = lean.applies(engine)
        params = [p for p in engine.module.parameters() if p.requires_grad]
        with platform.without_cuda_rewrites():
            ref = engine.module(ids, pos, None)
            out = lean.forward(engine, ids, pos)
            g_ref = torch.autograd.grad(ref.square().mean(), params)
            g_out = torch.autograd.grad(out.square().mean(), params)
            engine.set_training(False)
            with torch.no_grad():  # prefill 5, then 3 at once, then one at a time
                cache = lean.KVCache(engine, 3, 12)
                steps = [lean.forward(engine, ids[:, :5], pos[:, :5], cache=cache, start=0),
                         lean.forward(engine, ids[:, 5:8], pos[:, 5:8], cache=cache, start=5)]
                steps += [lean.forward(engine, ids[:, t:t + 1], pos[:, t:t + 1], cache=cache, start=t)
                          for t in range(8, 12)]
                last = lean.forward(engine, ids, pos, last_only=True)
        res[f"shape/{name}"] = list(out.shape) == list(ref.shape)
        res[f"forward/{name}"] = float((out - ref).abs().max())
        res[f"grad/{name}"] = max(float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))
                                  for a, b in zip(g_out, g_ref))
        res[f"trainable/{name}"] = len(params)
        res[f"cache/{name}"] = float((torch.cat(steps, 1) - ref.detach()).abs().max())
        res[f"last_only/{name}"] = float((last[:, 0] - ref.detach()[:, -1]).abs().max())

    # generation and a train step: the lean path against Megatron's, same engine, same weights
    prompts = SeqBatch.from_lists([[5, 9, 33, 2], [40, 41], [7, 7, 7, 1, 3, 60]], [4, 2, 6])
    gen_ctx = CallContext(seed=11, step=2, eos_ids=(0,))
    for family in ("llama", "gpt2"):
        engine = _engine(family)
        got = {}
        for on in (True, False):
            lean.ENABLED["on"] = on
            try:
                for mode, args in (("greedy", GenerateArgs(max_new_tokens=8, greedy=True)),
                                   ("sampled", GenerateArgs(max_new_tokens=8, num_samples=2, temperature=1.3))):
                    got[mode, on] = run_interface("generate", engine, prompts, args, gen_ctx)
            finally:
                lean.ENABLED["on"] = True
        for mode in ("greedy", "sampled"):
            a, b = got[mode, True], got[mode, False]
            res[f"generate/{family}/{mode}/tokens"] = torch.equal(a.input_ids, b.input_ids) and torch.equal(
                a.seq_lens, b.seq_lens)
            res[f"generate/{family}/{mode}/logprobs"] = float(
                (a.token_fields["logprobs"] - b.token_fields["logprobs"]).abs().max())
            res[f"generate/{family}/{mode}/responses"] = int((a.seq_lens - a.prompt_lens).sum())
    batch = SeqBatch.from_lists([[5, 9, 33, 2, 71, 8], [40, 41, 42], [3, 4, 5, 6, 7]], [2, 1, 3])
    losses = {}
    for on in (True, False):
        lean.ENABLED["on"] = on
        try:
            engine = _engine("llama")
            losses[on] = [run_interface("sft", engine, batch, SFTArgs(lr=1e-2))["loss"] for _ in range(3)]
        finally:
            lean.ENABLED["on"] = True
    res["train/lean"], res["train/megatron"] = losses[True], losses[False]
    return res


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("lean")
    return launch(_worker, (), LaunchSpec(nproc_per_node=1, log_dir=str(tmp / "logs")))[0]


CASES = ["llama", "llama_tied_bias", "qwen2", "gpt2", "critic", "lora", "lora_gpt2_critic"]


@pytest.mark.parametrize("case", CASES)
def test_forward_and_gradients_equal_megatron(results: dict, case: str) -> None:
    assert results[f"applies/{case}"] is True
    assert results[f"shape/{case}"] is True
    if case.startswith("lora"):  # the frozen base: only adapters (and a critic's head) get gradients
        assert results[f"trainable/{case}"] == 2 * 4 * 2 + case.endswith("critic")
    assert results[f"forward/{case}"] < 1e-5
    assert results[f"grad/{case}"] < 1e-4


@pytest.mark.parametrize("case", CASES)
def test_kv_cache_steps_equal_the_full_forward(results: dict, case: str) -> None:
    assert results[f"cache/{case}"] < 1e-5
    assert results[f"last_only/{case}"] < 1e-5


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("mode", ["greedy", "sampled"])
def test_generation_equals_megatron_path(results: dict, family: str, mode: str) -> None:
    assert results[f"generate/{family}/{mode}/responses"] > 0
    assert results[f"generate/{family}/{mode}/tokens"] is True
    assert results[f"generate/{family}/{mode}/logprobs"] < 1e-5


def test_train_steps_equal_megatron_path(results: dict) -> None:
    lean, ref = results["train/lean"], results["train/megatron"]
    assert ref[-1] < ref[0]  # the steps train
    assert max(abs(a - b) for a, b in zip(lean, ref)) < 1e-5, (lean, ref)
