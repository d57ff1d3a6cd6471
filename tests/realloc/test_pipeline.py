"""Tests of realloc/pipeline.py: loading, stage references, skip logic, and one end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from realloc.pipeline import (
    PipelineError,
    apply_overrides,
    load_pipeline,
    parse_pipeline,
    resolve_stages,
    stage_finished,
    tail_means,
)


def _pipeline(stages: list[dict], **extra) -> dict:
    return {"name": "p", "run_dir": "out", "stages": stages, **extra}


def test_shipped_dschat_pipeline_resolves_each_reference_to_an_earlier_run_dir(tmp_path: Path) -> None:
    pipe = load_pipeline("dschat_tiny", [f"run_dir={tmp_path}"])
    stages = resolve_stages(pipe)
    assert [s.name for s in stages] == ["sft", "rm", "ppo"]
    assert [s.run_dir for s in stages] == [tmp_path / "sft", tmp_path / "rm", tmp_path / "ppo"]
    ppo = dict(ov.split("=", 1) for ov in stages[2].overrides)
    assert ppo["models.actor.checkpoint"] == f"{tmp_path}/sft/models/actor"
    assert ppo["models.ref.checkpoint"] == f"{tmp_path}/sft/models/actor"
    assert ppo["models.critic.checkpoint"] == f"{tmp_path}/rm/models/reward"
    assert ppo["models.reward.checkpoint"] == f"{tmp_path}/rm/models/reward"
    assert ppo["train.run_dir"] == str(tmp_path / "ppo")
    assert not any("${" in ov for s in stages for ov in s.overrides)


def test_relative_run_dir_is_taken_from_the_base(tmp_path: Path) -> None:
    pipe = parse_pipeline(_pipeline([{"name": "a", "experiment": "sft_tiny"}]))
    assert resolve_stages(pipe, base=tmp_path)[0].run_dir == tmp_path / "out" / "a"


def test_other_interpolations_are_left_to_hydra() -> None:
    pipe = parse_pipeline(_pipeline([
        {"name": "a", "experiment": "sft_tiny", "overrides": ["models.ref.arch=${models.actor.arch}"]}]))
    assert resolve_stages(pipe)[0].overrides[0] == "models.ref.arch=${models.actor.arch}"


@pytest.mark.parametrize(("stages", "message"), [
    ([{"name": "a", "experiment": "sft_tiny", "overrides": ["x=${stages.b.run_dir}"]},
      {"name": "b", "experiment": "sft_tiny"}],
     "stage 'a' refers to stage 'b' but it runs at or after this stage; earlier stages: none"),
    ([{"name": "a", "experiment": "sft_tiny"},
      {"name": "b", "experiment": "sft_tiny", "overrides": ["x=${stages.zz.run_dir}/m"]}],
     "stage 'b' refers to stage 'zz' but there is no such stage; earlier stages: a"),
    ([{"name": "a", "experiment": "sft_tiny", "overrides": ["x=${stages.a.run_dir}"]}],
     "stage 'a' refers to stage 'a' but it runs at or after this stage"),
    ([{"name": "a", "experiment": "sft_tiny"},
      {"name": "b", "experiment": "sft_tiny", "overrides": ["x=${stages.a.models}"]}],
     r"stage 'b': \$\{stages.a.models\} is unknown"),
    ([{"name": "a", "experiment": "no_such_exp"}], "stage 'a': experiment 'no_such_exp' not found"),
    ([{"name": "a", "experiment": "sft_tiny", "overrides": ["train.run_dir=x"]}],
     "stage 'a': do not set train.run_dir"),
])
def test_bad_references_name_the_stage(stages: list[dict], message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        resolve_stages(parse_pipeline(_pipeline(stages)))


@pytest.mark.parametrize(("data", "message"), [
    (_pipeline([]), "pipeline has no stages"),
    (_pipeline([{"name": "a", "experiment": "e"}, {"name": "a", "experiment": "f"}]), "'a' is used twice"),
    (_pipeline([{"name": "all", "experiment": "e"}]), "stage name 'all' is not allowed"),
    (_pipeline([{"name": "a", "experiment": "e", "overides": []}]), "unknown key 'overides'"),
    (_pipeline([{"name": "a", "experiment": "e", "overrides": ["novalue"]}]), "'novalue' is not of the form"),
    (_pipeline([{"name": "a", "experiment": "e"}], eval={"rul": "x"}), "eval: unknown key 'rul'"),
    ({"stages": {"a": 1}}, "must be a list of stages"),
    ({"stage": []}, "unknown pipeline key 'stage'"),
])
def test_bad_pipeline_files(data: dict, message: str) -> None:
    with pytest.raises(PipelineError, match=message):
        parse_pipeline(data)


def test_command_line_overrides_target_one_stage_or_all() -> None:
    pipe = parse_pipeline(_pipeline([{"name": "a", "experiment": "e", "overrides": ["x=1"]},
                                     {"name": "b", "experiment": "e"}]))
    out = apply_overrides(pipe, ["a.train.iterations=3", "all.cluster.devices_per_node=1", "run_dir=/r"])
    assert out.run_dir == "/r"
    assert out.stages[0].overrides == ("x=1", "train.iterations=3", "cluster.devices_per_node=1")
    assert out.stages[1].overrides == ("cluster.devices_per_node=1",)
    with pytest.raises(PipelineError, match="names no stage 'c'; stages: a, b"):
        apply_overrides(pipe, ["c.x=1"])
    with pytest.raises(PipelineError, match="write run_dir=DIR, STAGE.key=value"):
        apply_overrides(pipe, ["iterations=1"])


def test_unknown_pipeline_lists_shipped_ones() -> None:
    with pytest.raises(PipelineError, match="pipeline 'nope' not found; .* dschat_tiny"):
        load_pipeline("nope")


def test_stage_finished_needs_every_iteration_and_saved_models(tmp_path: Path) -> None:
    lines = "".join(json.dumps({"iteration": i, "reward": 0.1 * i}) + "\n" for i in range(1, 5))
    (tmp_path / "metrics.jsonl").write_text(lines)
    assert not stage_finished(tmp_path, 4)  # no models saved yet
    (tmp_path / "models" / "actor").mkdir(parents=True)
    assert stage_finished(tmp_path, 4)
    assert not stage_finished(tmp_path, 5)  # killed before its last iteration
    assert not stage_finished(tmp_path / "missing", 1)


def test_tail_means_average_the_last_tenth() -> None:
    records = [{"iteration": i, "reward": float(i), "loss": None} for i in range(1, 21)]
    assert tail_means(records) == {"reward": 19.5}
    assert tail_means(records[:3]) == {"reward": 3.0}


def test_eval_overrides_are_typed() -> None:
    pipe = load_pipeline("dschat_tiny", ["eval.num_prompts=7", "eval.rule=arithmetic_partial"])
    assert pipe.eval is not None and (pipe.eval.num_prompts, pipe.eval.rule) == (7, "arithmetic_partial")
    with pytest.raises(PipelineError, match="eval.num_prompts=x: expected an integer"):
        load_pipeline("dschat_tiny", ["eval.num_prompts=x"])
    with pytest.raises(PipelineError, match="eval.rules: unknown key"):
        load_pipeline("dschat_tiny", ["eval.rules=x"])


def _weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_dschat_pipeline_end_to_end_feeds_each_stage_and_skips_finished_ones(tmp_path: Path, capsys) -> None:
    """SFT -> RM -> PPO with a few iterations each, then a re-run that skips all three."""
    import torch

    from realloc.cli import main

    args = ["pipeline", "dschat_tiny", f"run_dir={tmp_path}", "all.cluster.devices_per_node=1",
            "sft.train.iterations=3", "sft.graph.train.lr=1e-2", "rm.train.iterations=3",
            "ppo.train.iterations=1", "ppo.graph.train.lr=1e-9", "ppo.graph.critic_train.lr=1e-9",
            "eval.num_prompts=5"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "3 stages done" in out and out.count(" ran ") == 3 and "actor eval accuracy" in out
    sft, rm, ppo = (_weights(tmp_path / s / "models" / r) for s, r in
                    (("sft", "actor"), ("rm", "reward"), ("ppo", "actor")))
    # PPO started from the SFT actor (it barely moved at lr 1e-9), not from a fresh init
    assert sft.keys() == ppo.keys()
    for name in sft:
        torch.testing.assert_close(ppo[name], sft[name], atol=1e-6, rtol=0)
    critic = _weights(tmp_path / "ppo" / "models" / "critic")
    torch.testing.assert_close(critic["score.weight"], rm["score.weight"], atol=1e-6, rtol=0)
    ppo_config = (tmp_path / "ppo" / "config.yaml").read_text()
    assert f"checkpoint: {tmp_path}/rm/models/reward" in ppo_config and "rule: null" in ppo_config

    assert main(args) == 0  # every stage finished: nothing runs again
    out = capsys.readouterr().out
    assert out.count(" skipped ") == 3 and out.count(" ran ") == 0

    assert main([*args, "rm.graph.train.lr=-1"]) == 2  # a stage that cannot load names itself
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("realloc: error: stage 'rm': ") and "lr" in err[0]


def test_greedy_responses_match_transformers_generate_and_evaluate_scores_them(tmp_path: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from realloc.pipeline import EvalSpec, evaluate_actor, greedy_responses
    from runtime.data.records import generate
    from runtime.data.tokenizer import CharTokenizer
    from runtime.rewards.rules import arithmetic_exact

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path)
    tok = CharTokenizer()
    records = generate("arithmetic_1digit", "prompts_with_answers", 30, 3)
    want = []
    for r in records:  # the independent reference: HF's own greedy generate
        ids = torch.tensor([[tok.bos_id, *tok.encode(r.prompt)]])
        out = model.generate(ids, max_new_tokens=3, do_sample=False, eos_token_id=tok.eos_id,
                             pad_token_id=tok.pad_id)
        want.append(tok.decode(out[0, ids.shape[1]:].tolist()))
    got = greedy_responses(tmp_path, [r.prompt for r in records], max_new_tokens=3)
    assert got == want and len(set(got)) > 1
    correct = sum(arithmetic_exact(r.prompt, text, {}) for r, text in zip(records, got))
    spec = EvalSpec(generator="arithmetic_1digit", num_prompts=30, max_new_tokens=3, seed=3)
    assert evaluate_actor(tmp_path, spec) == correct / 30


def test_a_failed_stage_attempt_is_kept_aside_never_deleted(tmp_path: Path) -> None:
    """Two failed attempts, then a success: both failed run directories survive, renamed with a
    timestamp, and the message says what a re-run does."""
    from realloc.pipeline import run_pipeline

    pipeline = apply_overrides(load_pipeline("dschat_tiny"), [f"run_dir={tmp_path}"])
    pipeline = pipeline.__class__(**{**pipeline.__dict__, "stages": pipeline.stages[:1], "eval": None})
    attempts = []

    def runner(experiment) -> int:
        run_dir = Path(experiment.config.train.run_dir)
        (run_dir / "logs").mkdir(parents=True)
        (run_dir / "logs" / "why.txt").write_text(f"attempt {len(attempts)}")
        attempts.append(run_dir)
        return 1 if len(attempts) < 3 else 0

    for _ in range(2):
        with pytest.raises(PipelineError, match="a re-run of the pipeline resumes it from its last checkpoint, or keeps this attempt"):
            run_pipeline(pipeline, runner=runner, echo=lambda _: None)
    run_pipeline(pipeline, runner=runner, echo=lambda _: None)
    kept = sorted(p for p in tmp_path.iterdir() if p.name.startswith("sft.attempt-"))
    assert len(kept) == 2
    assert sorted((p / "logs" / "why.txt").read_text() for p in kept) == ["attempt 0", "attempt 1"]


def test_shipped_am_ppo_pipeline_scores_ppo_with_the_advantage_model(tmp_path: Path) -> None:
    stages = resolve_stages(load_pipeline("am_ppo_tiny", [f"run_dir={tmp_path}"]))
    assert [s.name for s in stages] == ["sft", "am", "ppo"]
    assert stages[1].experiment == "am_tiny"
    ppo = dict(ov.split("=", 1) for ov in stages[2].overrides)
    assert ppo["models.reward.checkpoint"] == f"{tmp_path}/am/models/reward"
    assert ppo["graph.reward_form"] == "advantage"


def _one_stage(tmp_path: Path, *overrides: str):
    pipeline = apply_overrides(load_pipeline("dschat_tiny"), [f"run_dir={tmp_path}", *overrides])
    return pipeline.__class__(**{**pipeline.__dict__, "stages": pipeline.stages[:1], "eval": None})


def _fake_run(experiment, *, iterations_done: int, checkpoint_at: int | None = None) -> None:
    """What a run leaves behind: config.yaml, metrics, a checkpoint (its meta and files), models
    when every iteration is done."""
    from realloc.run import fingerprint
    from runtime.rundir import checkpoints as rc

    run_dir = Path(experiment.config.train.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(experiment.to_yaml())
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps({"iteration": i, "loss": 1.0 / i}) + "\n" for i in range(1, iterations_done + 1)))
    if checkpoint_at is not None:
        tmp = rc.begin(run_dir / "checkpoints", checkpoint_at)
        (tmp / ".metadata").write_bytes(b"dcp")
        meta = rc.CheckpointMeta(iteration=checkpoint_at, world_size=1, data_position=checkpoint_at,
                                 fingerprint=fingerprint(experiment), layouts={},
                                 files={".metadata": rc.file_entry(tmp / ".metadata")})
        rc.commit(run_dir / "checkpoints", meta, keep=2)
    if iterations_done >= experiment.config.train.iterations:
        (run_dir / "models" / "actor").mkdir(parents=True, exist_ok=True)


def test_a_failed_stage_resumes_from_its_last_checkpoint_on_a_rerun(tmp_path: Path) -> None:
    from realloc.pipeline import run_pipeline

    pipeline = _one_stage(tmp_path, "sft.train.iterations=4", "sft.train.save_every=2")
    seen = []

    def runner(experiment) -> int:
        seen.append(experiment.config.train.resume)
        if len(seen) == 1:  # killed after its checkpoint of iteration 2
            _fake_run(experiment, iterations_done=3, checkpoint_at=2)
            return 1
        _fake_run(experiment, iterations_done=4, checkpoint_at=4)
        return 0

    with pytest.raises(PipelineError, match="failed with exit code 1"):
        run_pipeline(pipeline, runner=runner, echo=lambda _: None)
    lines: list[str] = []
    [result] = run_pipeline(pipeline, runner=runner, echo=lines.append)
    assert seen == [False, True] and result.status == "ran"
    assert "   an unfinished attempt was there; resuming it from iter_000002" in lines
    assert not any(p.name.startswith("sft.attempt-") for p in tmp_path.iterdir())  # resumed in place


def test_a_finished_stage_is_reused_only_with_the_same_fingerprint(tmp_path: Path) -> None:
    from realloc.pipeline import run_pipeline

    runs = []

    def runner(experiment) -> int:
        runs.append(experiment.config.graph.batch_size)
        _fake_run(experiment, iterations_done=experiment.config.train.iterations)
        return 0

    run_pipeline(_one_stage(tmp_path, "sft.train.iterations=2"), runner=runner, echo=lambda _: None)
    [again] = run_pipeline(_one_stage(tmp_path, "sft.train.iterations=2"), runner=runner, echo=lambda _: None)
    assert again.status == "skipped" and len(runs) == 1
    changed = _one_stage(tmp_path, "sft.train.iterations=2", "sft.graph.batch_size=4", "sft.seed=7")
    with pytest.raises(PipelineError) as info:
        run_pipeline(changed, runner=runner, echo=lambda _: None)
    message = str(info.value)
    assert "\n" not in message and message.startswith("stage 'sft' finished earlier under another config (")
    assert f"graph.batch_size is {runs[0]} there, 4 now" in message and "seed is " in message
    assert message.endswith("pass --rerun sft to run it again (the old run is kept, moved aside), or undo the change")
    assert len(runs) == 1
    [forced] = run_pipeline(changed, runner=runner, rerun=("sft",), echo=lambda _: None)
    assert forced.status == "ran" and runs == [runs[0], 4]
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("sft.attempt-")]) == 1
    with pytest.raises(PipelineError, match="--rerun ppo: no such stage; stages: sft"):
        run_pipeline(changed, runner=runner, rerun=("ppo",), echo=lambda _: None)
