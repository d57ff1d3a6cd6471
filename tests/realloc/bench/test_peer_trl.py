"""The TRL peer harness: same tokens, same weights, hand-worked summaries, TRL on the tiny model."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from realloc.bench import peer_trl
from realloc.bench.peer_trl import PeerSettings, summarise


def test_summary_medians_after_warmup() -> None:
    raw = {"step_s": [9.0, 1.0, 2.0, 4.0], "generate_s": [5.0, 0.5, 0.5, 3.0], "samples": [32, 32, 32, 32],
           "tokens": [100, 64, 96, 128], "threads": 1, "peak_rss_gib": 1.234,
           "call_s": {"gen": [5.0, 0.5, 0.25, 3.0]}}
    got = summarise(raw, warmup=1)
    assert got["step_s"] == 2.0  # median of 1, 2, 4
    assert got["samples_per_s"] == 16.0  # median of 32, 16, 8
    assert got["tokens_per_s"] == 48.0  # median of 64, 48, 32
    assert got["tokens_per_step"] == 96.0  # mean of 64, 96, 128
    assert got["generate_share"] == 0.5  # median of 0.5, 0.25, 0.75
    assert got["steps"] == 3
    assert got["call_s"] == {"gen": 0.5}  # median of 0.5, 0.25, 3.0
    assert got["peak_rss_gib"] == 1.23
    with pytest.raises(ValueError, match="no measured steps"):
        summarise(raw, warmup=4)


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="size='huge' is unknown"):
        PeerSettings(size="huge")
    with pytest.raises(ValueError, match="group_size must be >= 2"):
        PeerSettings(group_size=1)
    assert PeerSettings(prompts=8, group_size=4).samples_per_step == 32


def test_overrides_give_realloc_the_settings() -> None:
    s = PeerSettings(size="smollm2-135m-body", prompts=2, group_size=3, max_new_tokens=5, kl_coef=0.1)
    exp = peer_trl.load(s, devices=1, run_dir="unused")
    arch = exp.graph.models["actor"].arch
    assert (arch.num_layers, arch.hidden_size, arch.num_heads, arch.num_kv_heads, arch.vocab_size) == (
        30, 576, 9, 3, 64)
    assert exp.graph.models["ref"].arch == arch
    gen = exp.graph.call("actor_gen")
    assert gen.args.max_new_tokens == 5 and gen.args.num_samples == 3 and gen.args.top_k == 0
    train = exp.graph.call("actor_train")
    assert train.args.kl_coef == 0.1 and train.args.group_size == 3 and train.args.lr_schedule == "constant"
    assert len(peer_trl.prompt_schedule(s)) == s.prompts * s.iterations


def test_hf_tokenizer_matches_the_char_tokenizer() -> None:
    pytest.importorskip("tokenizers")
    from runtime.data.tokenizer import CharTokenizer

    ours, hf = CharTokenizer(), peer_trl.hf_char_tokenizer(64)
    for row in peer_trl.prompt_schedule(PeerSettings(steps=2, warmup=0)):
        assert hf(text=row["prompt"])["input_ids"] == [ours.bos_id, *ours.encode(row["prompt"])]
    ids = ours.encode("12+3=15") + [ours.eos_id]
    assert hf.decode(ids, skip_special_tokens=True) == ours.decode(ids) == "12+3=15"
    assert hf.eos_token_id == ours.eos_id and hf.pad_token_id == ours.pad_id and len(hf) == 64
    assert len(peer_trl.hf_char_tokenizer(49152)) == 49152  # every model id decodes


def test_saved_initial_actor_is_realloc_initialisation(tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from transformers import AutoModelForCausalLM

    from runtime.engine import convert
    from runtime.execution.engines import model_seed

    s = PeerSettings()
    peer_trl.save_initial_actor(s, tmp_path / "init")
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "init"), dtype=torch.float32)
    exp = peer_trl.load(s, devices=1, run_dir="unused")
    seed = model_seed(exp.graph, "actor", exp.config.seed)
    assert seed == model_seed(exp.graph, "ref", exp.config.seed)  # the reference starts as the actor
    expected = convert.random_hf_state(exp.graph.models["actor"].arch, seed=seed, value_head=False)
    state = model.state_dict()
    for name, tensor in expected.items():
        assert torch.equal(state[name], tensor), name


def test_trl_grpo_on_the_tiny_model() -> None:
    pytest.importorskip("trl")
    s = PeerSettings(steps=1, warmup=1, max_new_tokens=4)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw = peer_trl.trl_in_subprocess(s, peer_trl.save_initial_actor(s, work / "init"), work, timeout_s=300)
    assert len(raw["step_s"]) == s.iterations and all(t > 0 for t in raw["step_s"])
    assert raw["samples"] == [s.samples_per_step] * s.iterations
    # every response has 1..max_new_tokens tokens (EOS included)
    assert all(s.samples_per_step <= k <= s.samples_per_step * s.max_new_tokens for k in raw["tokens"])
    assert raw["threads"] == s.threads and raw["autocast"] is False and raw["gradient_checkpointing"] is False
    assert all(0 < g < t for g, t in zip(raw["generate_s"], raw["step_s"]))
    assert 0.1 < raw["peak_rss_gib"] < 64
