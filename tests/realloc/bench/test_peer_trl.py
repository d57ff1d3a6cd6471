"""The TRL peer harness: same tokens, same weights, hand-worked summaries, TRL on the tiny model."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import pytest
import torch

from realloc.bench import peer_trl
from realloc.bench.peer_trl import PeerSettings, aggregate, summarise


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


def test_summary_phases_trl_train_is_the_rest_of_its_step() -> None:
    raw = {"step_s": [9.0, 1.0, 2.0], "generate_s": [5.0, 0.5, 1.0], "samples": [4] * 3, "tokens": [8] * 3,
           "threads": 2, "workers": 1,
           "phase_s": {"generate": [5.0, 0.5, 1.0], "score": [0.0, 0.1, 0.2], "reference": [1.0, 0.1, 0.2]}}
    got = summarise(raw, warmup=1)
    # train = step - generate - score - reference: 1 - 0.7 = 0.3 and 2 - 1.4 = 0.6, median 0.45
    assert got["phase_s"] == {"generate": 0.75, "score": 0.15, "reference": 0.15, "train": 0.45}
    assert got["workers"] == 1 and got["threads"] == 2


def test_rounds_aggregate_to_median_and_range() -> None:
    rounds = [{"step_s": s, "samples_per_s": 32 / s, "tokens_per_s": 256 / s, "tokens_per_step": 256.0,
               "generate_share": g, "threads": 1, "workers": 2, "busy_workers": 1, "peak_rss_gib": m,
               "phase_s": {"generate": g * s, "train": 0.01}, "call_s": {"gen": g * s}}
              for s, g, m in ((0.5, 0.5, 1.0), (0.25, 0.4, 1.5), (1.0, 0.6, 1.2))]
    got = aggregate(rounds)
    assert got["rounds"] == 3
    assert got["step_s"] == 0.5 and got["step_s_range"] == [0.25, 1.0]
    assert got["tokens_per_s"] == 512.0 and got["tokens_per_s_range"] == [256.0, 1024.0]
    assert got["samples_per_s"] == 64.0
    assert got["generate_share"] == 0.5
    assert got["phase_s"] == {"generate": 0.25, "train": 0.01}  # medians of 0.25, 0.1, 0.6
    assert got["call_s"] == {"gen": 0.25}
    assert (got["workers"], got["threads"], got["cores_used"], got["busy_workers"]) == (2, 1, 1, 1)
    assert got["peak_rss_gib"] == 1.5
    with pytest.raises(ValueError, match="no rounds"):
        aggregate([])


def test_every_system_gets_the_same_cores() -> None:
    s = PeerSettings(threads=4, devices=2)
    assert s.threads_per_worker == 2 and s.devices * s.threads_per_worker == s.threads
    default = PeerSettings()
    assert default.threads == (os.cpu_count() or 1) and default.devices == default.threads
    assert default.threads_per_worker == 1
    with pytest.raises(ValueError, match="threads must be >= 0"):
        PeerSettings(threads=-1)
    with pytest.raises(ValueError, match="rounds must be >= 1"):
        PeerSettings(rounds=0)


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
    assert gen.args.min_new_tokens == 5  # equal lengths: every response max_new_tokens long
    assert peer_trl.load(dataclasses.replace(s, equal_lengths=False), devices=1,
                         run_dir="unused").graph.call("actor_gen").args.min_new_tokens == 0
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
    s = PeerSettings(steps=1, warmup=1, max_new_tokens=4, threads=1)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        raw = peer_trl.trl_in_subprocess(s, peer_trl.save_initial_actor(s, work / "init"), work, timeout_s=300)
    assert len(raw["step_s"]) == s.iterations and all(t > 0 for t in raw["step_s"])
    assert raw["samples"] == [s.samples_per_step] * s.iterations
    # equal lengths: every response exactly max_new_tokens long (EOS masked until then)
    assert raw["tokens"] == [s.samples_per_step * s.max_new_tokens] * s.iterations
    assert raw["threads"] == s.threads and raw["autocast"] is False and raw["gradient_checkpointing"] is False
    assert all(0 < g < t for g, t in zip(raw["generate_s"], raw["step_s"]))
    assert raw["reference_model"] is True
    phases = raw["phase_s"]
    for i, t in enumerate(raw["step_s"]):
        assert phases["reference"][i] > 0 and phases["score"][i] > 0
        assert sum(phases[p][i] for p in peer_trl.TRL_PHASES) < t
    assert 0.1 < raw["peak_rss_gib"] < 64


def test_realloc_calls_map_to_the_phases() -> None:
    exp = peer_trl.load(PeerSettings(), devices=1, run_dir="unused")
    phases = {c.name: peer_trl.call_phase(c) for c in exp.graph.calls}
    assert phases == {"actor_gen": "generate", "reward_inf": "score", "ref_inf": "reference",
                      "actor_train": "train"}
