"""LoRA engines (runtime.engine.lora + runtime.engine.model_engine) against independent references, in ONE launch
of 4 gloo workers:

- logits equal transformers' logits of the MERGED model (W + alpha/r * B @ A, merged by
  hand from the engine's global state) at tp1 and tp2, with non-zero adapters;
- a train step (with weight decay) changes the adapters and a critic's value head only:
  the base is bit-identical, and losses agree across layouts (tp2, dp2 x pp2);
- the saved HF checkpoint is the merged model: transformers loads it and gives the
  engine's logits; the adapters alone are saved beside it;
- a replica refreshed with the adapters-only plan equals the trained home bit for bit,
  having received exactly the adapter bytes its shards hold (hand-counted from shapes).

Plus one-process checks of the pure helpers (merge against numpy, initial adapters).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from graph.spec import LoraSpec, ModelSpec
from runtime.execution.launch import LaunchSpec, launch
from tests.runtime import dist_checks

LORA = LoraSpec(rank=4, alpha=8.0)
MLP_ONLY = LoraSpec(rank=2, alpha=2.0, targets=("linear_fc1", "linear_fc2"))
SEQS = ([5, 9, 33, 2, 71, 8, 14], [40, 41, 42], [7, 7, 19, 60, 3])


def _layout(dp: int, tp: int, pp: int, start: int, micro_batches: int = 1) -> Any:
    from graph.placement.layout import DeviceMesh, Layout

    return Layout(mesh=DeviceMesh.span(start, dp * tp * pp), dp=dp, tp=tp, pp=pp,
                  micro_batches=micro_batches)


def random_adapters(arch: Any, lora: LoraSpec, seed: int) -> dict[str, torch.Tensor]:
    """Non-zero global adapters (A and B), so the adapted model differs from its base."""
    from graph.placement.params import lora_layer_params

    gen = torch.Generator().manual_seed(seed)
    return {p.name: 0.1 * torch.randn(p.shape, generator=gen)
            for i in range(arch.num_layers) for p in lora_layer_params(arch, i, lora)}


def _batch() -> Any:
    from runtime.data.batch import SeqBatch

    return SeqBatch.from_lists([list(s) for s in SEQS], [2, 1, 3])


def _merged_hf_logits(arch: Any, mg: dict[str, torch.Tensor], lora: LoraSpec) -> list[torch.Tensor]:
    """transformers' logits of W + alpha/r * B @ A, merged here (not with runtime.engine.lora)."""
    from runtime.engine.convert import megatron_to_hf

    merged = {k: v for k, v in mg.items() if not k.endswith((".lora_a", ".lora_b"))}
    for name, a in mg.items():
        if name.endswith(".lora_a"):
            stem = name[: -len(".lora_a")]
            merged[stem + ".weight"] = mg[stem + ".weight"] + lora.alpha / lora.rank * mg[stem + ".lora_b"] @ a
    hf = dist_checks.hf_model(arch, megatron_to_hf(merged, arch, value_head=False))
    with torch.no_grad():
        return [hf(torch.tensor([s])).logits[0] for s in SEQS]


def _logit_err(logits: torch.Tensor, ref: list[torch.Tensor]) -> float:
    return max(float((logits[i, : len(s)] - ref[i]).abs().max()) for i, s in enumerate(SEQS))


def check_logits(rank: int, res: dict[str, Any]) -> None:
    from runtime.engine.model_engine import build_engine

    for family, lora in (("llama", LORA), ("gpt2", LORA), ("qwen2", MLP_ONLY)):
        arch = dist_checks.tiny_arch(family)
        spec = ModelSpec(role="actor", arch=arch, trainable=True, lora=lora)
        for name, dp, tp, pp in (("tp1", 1, 1, 1), ("tp2", 1, 2, 1)):
            engine = build_engine(spec, _layout(dp, tp, pp, 0), rank, seed=5)
            if engine is None:
                continue
            engine.load_global_state(random_adapters(arch, lora, seed=11), partial=True)
            logits = dist_checks._full_logits(engine, _batch())
            mg = engine.global_state()
            if mg is not None:
                res[f"logits/{family}/{name}"] = _logit_err(logits, _merged_hf_logits(arch, mg, lora))
                base = {k: v for k, v in mg.items() if not k.endswith((".lora_a", ".lora_b"))}
                res[f"base_differs/{family}/{name}"] = _logit_err(
                    logits, _merged_hf_logits(arch, base, lora)) > 1e-2


TRAIN_LAYOUTS = (("single", 1, 1, 1), ("tp2", 1, 2, 1), ("dp2pp2", 2, 1, 2))
ALL = tuple(name for name, *_ in TRAIN_LAYOUTS)
TRAIN_CASES = (  # (label, interface, family, value head, layouts): gpt2 and the tied qwen2 at pp2
    ("sft", "sft", "llama", False, ALL),                 # freeze their embeddings' shared copies
    ("ppo_critic", "ppo_critic", "llama", True, ALL),
    ("sft_gpt2", "sft", "gpt2", False, ("single", "dp2pp2")),
    ("sft_qwen2_tied", "sft", "qwen2", False, ("single", "dp2pp2")),
)


def check_training(rank: int, tmp: Path, res: dict[str, Any]) -> None:
    from graph.catalog import make_args
    from runtime.engine.model_engine import build_engine
    from runtime.interfaces import run_interface

    batch = dist_checks._train_batch()
    for label, interface, family, value_head, layouts in TRAIN_CASES:
        arch = dist_checks.tiny_arch(family)
        args = {"lr": 1e-2, "weight_decay": 0.1}
        spec = ModelSpec(role="critic" if value_head else "actor", arch=arch, trainable=True,
                         value_head=value_head, lora=LORA)
        for name, dp, tp, pp in TRAIN_LAYOUTS:
            if name not in layouts:
                continue
            engine = build_engine(spec, _layout(dp, tp, pp, 0, micro_batches=2), rank, seed=5)
            if engine is None:
                continue
            engine.load_global_state(random_adapters(arch, LORA, seed=12), partial=True)
            before = engine.global_state()
            losses = [run_interface(interface, engine, batch, make_args(interface, args))["loss"]
                      for _ in range(2)]
            after = engine.global_state()
            res[f"train/{label}/{name}"] = losses
            if before is not None:
                trained = [k for k in before if k.endswith((".lora_a", ".lora_b")) or k == "value_head.weight"]
                res[f"frozen/{label}/{name}"] = all(torch.equal(before[k], after[k])
                                                    for k in before if k not in trained)
                res[f"changed/{label}/{name}"] = [k for k in trained if not torch.equal(before[k], after[k])]
                res[f"trained/{label}/{name}"] = trained
            if label == "sft" and name == "tp2":
                _check_save(engine, rank, tmp, res)


def _check_save(engine: Any, rank: int, tmp: Path, res: dict[str, Any]) -> None:
    import transformers
    from safetensors.torch import load_file

    path = tmp / "saved_lora"
    engine.save_hf(str(path))
    logits = dist_checks._full_logits(engine, _batch())
    mg = engine.global_state()
    if mg is None:
        return
    loaded = transformers.AutoModelForCausalLM.from_pretrained(str(path)).eval()
    with torch.no_grad():
        ref = [loaded(torch.tensor([s])).logits[0] for s in SEQS]
    res["save/merged_logits"] = _logit_err(logits, ref)
    names = {k for k in loaded.state_dict()}
    res["save/plain_hf"] = not any("lora" in k for k in names)
    adapters = load_file(str(path / "lora_adapters.safetensors"))
    res["save/adapters"] = (sorted(adapters) == sorted(k for k in mg if k.endswith((".lora_a", ".lora_b")))
                            and all(torch.equal(adapters[k], mg[k]) for k in adapters))


def check_refresh(rank: int, res: dict[str, Any]) -> None:
    """Home tp2 on {0,1} trains; replica dp2 on {2,3} gets the adapters-only plan."""
    from graph.catalog import make_args
    from graph.placement.params import param_manifest
    from graph.placement.transfer import plan_transfer
    from runtime.engine.model_engine import build_engine
    from runtime.execution.reallocation import execute_transfer
    from runtime.interfaces import run_interface

    arch = dist_checks.tiny_arch("llama")
    spec = ModelSpec(role="critic", arch=arch, trainable=True, value_head=True, lora=LORA)
    home_layout, replica_layout = _layout(1, 2, 1, 0), _layout(2, 1, 1, 2)
    home = build_engine(spec, home_layout, rank, seed=8)
    replica = build_engine(spec, replica_layout, rank, seed=8)
    if home is not None:
        run_interface("ppo_critic", home, dist_checks._train_batch(), make_args("ppo_critic", {"lr": 1e-2}))
    plan = plan_transfer(arch, home_layout, replica_layout, value_head=True, lora=LORA,
                         trainable_only=True, dtype_bytes=4)

    def shards(e: Any) -> dict[str, torch.Tensor] | None:
        return None if e is None else {n: s.tensor for n, s in e.named_local_shards().items()}

    stats = execute_transfer(plan, arch, rank, src_shards=shards(home), dst_shards=shards(replica),
                             value_head=True, lora=LORA)
    res[f"refresh/received/rank{rank}"] = stats.bytes_received
    full = sum(4 * p.numel for p in param_manifest(arch, value_head=True))
    res["refresh/full_model_bytes"] = full
    states = [e.global_state() if e is not None else None for e in (home, replica)]
    # compare on the replica's first rank: fetch the home state there
    import torch.distributed as dist

    box = [states[0]]
    dist.broadcast_object_list(box, src=0)
    if states[1] is not None:
        res["refresh/bitexact"] = (sorted(box[0]) == sorted(states[1])
                                   and all(torch.equal(box[0][k], states[1][k]) for k in box[0]))


def _worker(ctx: Any, tmp: str) -> dict[str, Any]:
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    res: dict[str, Any] = {}
    check_logits(ctx.rank, res)
    check_training(ctx.rank, Path(tmp), res)
    check_refresh(ctx.rank, res)
    return res


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("lora")
    per_rank = launch(_worker, (str(tmp),), LaunchSpec(nproc_per_node=4, log_dir=str(tmp / "logs")))
    merged: dict[str, Any] = {}
    for r in sorted(per_rank):
        merged.update(per_rank[r])
    return merged


@pytest.mark.slow
@pytest.mark.parametrize("family", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("layout", ["tp1", "tp2"])
def test_logits_equal_transformers_on_the_merged_model(results: dict, family: str, layout: str) -> None:
    assert results[f"logits/{family}/{layout}"] < 1e-4
    assert results[f"base_differs/{family}/{layout}"] is True  # the adapters matter


@pytest.mark.slow
@pytest.mark.parametrize(("case", "layouts"), [(c[0], c[4]) for c in TRAIN_CASES])
def test_train_step_changes_adapters_only(results: dict, case: str, layouts: tuple) -> None:
    ref = results[f"train/{case}/single"]
    assert ref[1] != ref[0]
    for name in layouts:
        assert results[f"frozen/{case}/{name}"] is True, name
        assert results[f"changed/{case}/{name}"] == results[f"trained/{case}/{name}"], name
        got = results[f"train/{case}/{name}"]
        assert max(abs(a - b) for a, b in zip(got, ref)) < 1e-5, (name, got, ref)
    trained = results[f"trained/{case}/single"]
    assert len(trained) == 2 * 4 * 2 + (case == "ppo_critic")  # A, B x 4 targets x 2 layers (+ head)


@pytest.mark.slow
def test_saved_checkpoint_is_the_merged_model(results: dict) -> None:
    assert results["save/merged_logits"] < 1e-4
    assert results["save/plain_hf"] is True
    assert results["save/adapters"] is True


@pytest.mark.slow
def test_refresh_moves_only_the_adapters_and_is_bitexact(results: dict) -> None:
    assert results["refresh/bitexact"] is True
    arch = dist_checks.tiny_arch("llama")  # llama: h 64, f 128, 4 heads / 2 kv heads of 16
    h, f, r, qkv = 64, 128, LORA.rank, (4 + 2 * 2) * 16
    adapters = 2 * r * ((h + qkv) + (h + h) + (h + 2 * f) + (f + h))  # 2 layers x (A + B) per target
    per_replica = 4 * (adapters + h)  # fp32, plus the value head [1, h]
    assert arch.num_layers == 2 and arch.head_dim == 16
    # disjoint meshes: each replica rank (dp2 x tp1) receives the whole adapter set once
    assert [results[f"refresh/received/rank{r}"] for r in range(4)] == [0, 0, per_replica, per_replica]
    assert per_replica * 10 < results["refresh/full_model_bytes"]  # 12x fewer bytes on this tiny model


def test_merge_lora_against_numpy() -> None:
    import numpy as np

    from runtime.engine.lora import merge_lora

    gen = torch.Generator().manual_seed(4)
    w, a, b = (torch.randn(shape, generator=gen) for shape in ((6, 5), (3, 5), (6, 3)))
    stem = "decoder.layers.0.mlp.linear_fc2"
    mg = {stem + ".weight": w, stem + ".lora_a": a, stem + ".lora_b": b, "other.weight": w}
    merged = merge_lora(mg, LoraSpec(rank=3, alpha=1.5, targets=("linear_fc2",)))
    assert sorted(merged) == [stem + ".weight", "other.weight"]
    expected = w.numpy() + 0.5 * b.numpy() @ a.numpy()
    assert np.allclose(merged[stem + ".weight"].numpy(), expected, atol=1e-6)
    assert torch.equal(merged["other.weight"], w)


def test_initial_adapters_start_at_the_base_model() -> None:
    from runtime.engine.lora import init_adapters

    arch = dist_checks.tiny_arch("llama")
    first, again, other = (init_adapters(arch, LORA, seed) for seed in (3, 3, 4))
    assert len(first) == 2 * 4 * 2
    for name, value in first.items():
        assert torch.equal(value, again[name])  # a function of (seed, name) only
        if name.endswith(".lora_b"):
            assert not value.any()  # B = 0: the adapted model starts equal to its base
        else:
            bound = 1 / value.shape[1] ** 0.5
            assert value.abs().max() <= bound and value.std() > bound / 4
            assert not torch.equal(value, other[name])
