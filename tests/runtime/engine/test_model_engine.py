"""Multi-process checks of the engines (one launch of 4 gloo workers, shared by every test).

Tests `runtime.engine.model_engine`, `runtime.engine.schedule`, `runtime.interfaces.*` end to end against
transformers and against a 1-process run; see `dist_checks.py` for what each worker does.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from graph.placement.layout import DeviceMesh, Layout
from graph.spec import ModelArch, ModelSpec
from runtime.engine.model_engine import build_engine
from tests.runtime import dist_checks

WORLD = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("dist")
    dist_checks.write_checkpoints(tmp / "ckpt")
    mp.spawn(dist_checks.worker, args=(WORLD, _free_port(), str(tmp)), nprocs=WORLD, join=True)
    merged: dict = {}
    for r in range(WORLD):
        merged.update(json.loads((Path(tmp) / f"rank{r}.json").read_text()))
    return merged


@pytest.mark.slow
@pytest.mark.parametrize("family", dist_checks.FAMILIES)
def test_logits_match_transformers_at_every_layout(results: dict, family: str) -> None:
    for name, *_ in dist_checks.LOGIT_LAYOUTS:
        err = results[f"logits/{family}/{name}"]
        assert err < 1e-4, f"{family} at {name}: max |logit diff| {err}"


@pytest.mark.slow
@pytest.mark.parametrize("family", dist_checks.FAMILIES)
def test_greedy_generation_matches_transformers(results: dict, family: str) -> None:
    for name, *_ in dist_checks.LOGIT_LAYOUTS:
        assert results[f"generate/{family}/{name}"] is True, f"{family} at {name}"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tp2", "dp2pp2"])
def test_inference_matches_transformers(results: dict, layout: str) -> None:
    for what in ("logprobs", "values", "rewards", "advantages", "prompt_embeddings", "response_loglik",
                 "pool_advantages", "pool_rewards"):
        err = results[f"infer/{what}/{layout}"]
        assert err < 1e-4, f"{what} at {layout}: max diff {err}"
    assert results[f"infer/zero_outside/{layout}"] == 0.0


@pytest.mark.slow
def test_critic_initialised_from_causal_lm_checkpoint(results: dict) -> None:
    assert results["infer/critic_from_lm"] is True


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["tp1", "tp2"])
def test_generation_controls(results: dict, layout: str) -> None:
    assert results[f"gen/eos_stops/{layout}"] is True
    assert results[f"gen/truncated/{layout}"] == [1.0] * len(dist_checks.PROMPTS)
    assert results[f"gen/min_new/{layout}"] is True
    assert results[f"gen/min_new_lp_err/{layout}"] < 1e-5
    assert results[f"gen/sample_lp_ok/{layout}"] is True
    assert results[f"gen/sample_ids/{layout}"] == [0, 1, 2, 3, 4, 5, 6, 7]


@pytest.mark.slow
def test_seeded_sampling_is_layout_independent(results: dict) -> None:
    assert results["gen/sampling_layout_invariant"] is True


@pytest.mark.slow
@pytest.mark.parametrize("case", [c[0] for c in dist_checks.TRAIN_CASES])
def test_train_losses_equal_at_every_layout(results: dict, case: str) -> None:
    ref = results[f"train/{case}/single"]
    assert len(ref) == dist_checks.TRAIN_STEPS
    assert ref[-1] != ref[0], "the optimizer did not change the loss"
    runs = {k.split("/")[-1] for k in results if k.startswith(f"train/{case}/")}
    assert len(runs) >= 3
    for name in sorted(runs - {"single"}):
        got = results[f"train/{case}/{name}"]
        diff = max(abs(a - b) for a, b in zip(got, ref))
        assert diff < 1e-5, f"{case} at {name}: losses {got} vs 1-process {ref}"


@pytest.mark.slow
def test_hf_save_load_roundtrip_is_bitexact(results: dict) -> None:
    assert results["roundtrip/same_names"] is True
    assert results["roundtrip/engine_bitexact"] is True
    assert results["roundtrip/hf_bitexact"] is True


@pytest.mark.slow
def test_random_init_is_layout_independent(results: dict) -> None:
    assert results["init/same_names"] is True
    assert results["init/bitexact"] is True
    ranges = {k: v for k, v in results.items() if k.startswith("init/shard_ranges/")}
    assert len(ranges) == 1 + 2 + 4  # every rank of the tp1, tp2 and tp2 x pp2 layouts
    assert all(v is True for v in ranges.values()), ranges


ARCH = ModelArch(family="llama", num_layers=2, hidden_size=32, ffn_hidden_size=64, num_heads=4,
                 num_kv_heads=2, vocab_size=50)


@pytest.mark.parametrize(("tp", "pp", "checkpoint", "message"), [
    (3, 1, None, "tp=3 does not divide num_heads 4"),
    (4, 1, None, "tp=4 does not divide num_kv_heads 2"),
    (1, 4, None, "pp=4 is larger than num_layers 2"),
    (1, 1, "/nonexistent/ckpt", "checkpoint '/nonexistent/ckpt' does not exist"),
])
def test_bad_layouts_fail_before_any_process_group(tp: int, pp: int, checkpoint: str | None,
                                                   message: str) -> None:
    spec = ModelSpec(role="actor", arch=ARCH, checkpoint=checkpoint)
    layout = Layout(mesh=DeviceMesh.span(0, tp * pp), dp=1, tp=tp, pp=pp)
    with pytest.raises(ValueError, match=message):
        build_engine(spec, layout, 0)
    assert not dist.is_initialized()


def test_rule_reward_model_has_no_engine() -> None:
    spec = ModelSpec(role="reward", arch=None, rule="arithmetic_exact")
    with pytest.raises(ValueError, match="rule-based reward; it has no engine"):
        build_engine(spec, Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1), 0)


def _gpu_worker(rank: int, port: int, out: str) -> None:
    import json
    import os

    import torch

    from graph.catalog import SFTArgs
    from runtime.data.batch import SeqBatch
    from runtime.engine import platform
    from runtime.engine.convert import megatron_to_hf
    from runtime.interfaces import run_interface

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    platform.apply_platform_patches()
    dist.init_process_group(platform.backend(), rank=0, world_size=1)
    spec = ModelSpec(role="actor", arch=dist_checks.tiny_arch("llama"), trainable=True)
    engine = build_engine(spec, Layout(mesh=DeviceMesh.span(0, 1), dp=1, tp=1, pp=1), 0, seed=1)
    hf = dist_checks.hf_model(spec.arch, megatron_to_hf(engine.global_state(), spec.arch,
                                                         value_head=False)).cuda()
    seqs = [[5, 9, 33, 2, 71, 8], [40, 41, 42]]
    batch = SeqBatch.from_lists(seqs, [2, 1])
    logits = dist_checks._full_logits(engine, batch).float().cpu()
    with torch.no_grad():
        ref = hf(torch.tensor([seqs[0]]).cuda()).logits[0].float().cpu()
    losses = [run_interface("sft", engine, batch, SFTArgs(lr=1e-3))["loss"] for _ in range(3)]
    result = {"dtype": str(engine.dtype), "logit_err": float((logits[0] - ref).abs().max()),
              "losses": losses}
    with open(out, "w") as fh:
        json.dump(result, fh)
    dist.destroy_process_group()


@pytest.mark.gpu
def test_bf16_engine_on_cuda(tmp_path) -> None:
    import json

    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    out = tmp_path / "gpu.json"
    mp.spawn(_gpu_worker, args=(_free_port(), str(out)), nprocs=1, join=True)
    res = json.loads(out.read_text())
    assert res["dtype"] == "torch.bfloat16"
    assert res["logit_err"] < 0.1, res  # bf16 weights and activations vs fp32 transformers
    assert all(x == x for x in res["losses"]) and res["losses"][-1] < res["losses"][0], res


def test_checkpoint_mismatch_fails_before_any_process_group(tmp_path) -> None:
    from runtime.engine.convert import random_hf_state
    from runtime.engine.hf_checkpoint import save_hf_checkpoint

    qwen = ModelArch(**{**ARCH.__dict__, "family": "qwen2", "qkv_bias": True})
    save_hf_checkpoint(str(tmp_path / "qwen"), random_hf_state(qwen, seed=0, value_head=False),
                       qwen, value_head=False)
    layout = Layout(mesh=DeviceMesh.span(0, 2), dp=1, tp=2, pp=1)
    with pytest.raises(ValueError, match="is a qwen2 model but the spec says llama"):
        build_engine(ModelSpec(role="actor", arch=ARCH, checkpoint=str(tmp_path / "qwen")), layout, 0)
    wide = ModelArch(**{**qwen.__dict__, "hidden_size": 64})
    with pytest.raises(ValueError, match="tensor 'model.embed_tokens.weight' has shape"):
        build_engine(ModelSpec(role="actor", arch=wide, checkpoint=str(tmp_path / "qwen")), layout, 0)
    assert not dist.is_initialized()
