"""`realloc pipeline`: run experiments as stages, each feeding its trained models to the next.

A pipeline file lists stages in order, each an experiment with overrides:

    name: dschat_tiny
    run_dir: runs/dschat_tiny          # stage S runs in RUN_DIR/S
    stages:
      - name: sft
        experiment: sft_tiny
        overrides: [train.iterations=200]
      - name: ppo
        experiment: ppo_tiny
        overrides: ["models.actor.checkpoint=${stages.sft.run_dir}/models/actor"]

`${stages.NAME.run_dir}` in an override is the run directory of an EARLIER stage; every
other `${...}` is left to Hydra. Run directories are fixed by the pipeline, so all
references resolve before anything runs (`resolve_stages`, no processes). A pipeline that
failed half-way is re-run with the same command:

- a stage whose run directory holds a finished run (every iteration logged, models saved)
  is reused when its fingerprint (the resolved experiment with its overrides, as
  checkpoints record it) is the one the stage has now; otherwise the pipeline stops with
  one line naming the changed keys, and `--rerun STAGE` runs it again;
- an unfinished stage with a usable checkpoint of the same fingerprint resumes from it
  (train.resume=true);
- any other attempt is kept, moved aside to RUN_DIR/S.attempt-YYYYMMDDTHHMMSS, and the
  stage runs from the start.

An optional `eval` section scores every stage's saved actor with a rule after the stage
(greedy decoding of generated prompts with transformers on CPU): the rule-measured
accuracy of each step's output, whatever reward the step trained on.
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph.errors import UserError
from realloc.experiment import ConfigError, find_experiment

_REF_RE = re.compile(r"\$\{stages\.([^.}]+)\.([^}]+)\}")
_STAGE_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
RESERVED_STAGE_NAMES = frozenset({"all", "run_dir", "eval"})
"""Names a stage may not take: they prefix pipeline-wide overrides."""


class PipelineError(UserError):
    """A pipeline problem a user can fix; the message names the stage or key."""


@dataclass(frozen=True, kw_only=True)
class Stage:
    """One step of a pipeline: an experiment and its overrides (references unresolved)."""

    name: str
    """Stage name; its run directory is PIPELINE_RUN_DIR/NAME."""
    experiment: str
    """Experiment YAML path or shipped name."""
    overrides: tuple[str, ...] = ()
    """Hydra overrides; `${stages.EARLIER.run_dir}` names an earlier stage's run directory."""

    def __post_init__(self) -> None:
        if not _STAGE_NAME_RE.fullmatch(self.name) or self.name in RESERVED_STAGE_NAMES:
            raise PipelineError(f"stage name {self.name!r} is not allowed; use letters, digits, _ or - "
                                f"(starting with a letter), not {', '.join(sorted(RESERVED_STAGE_NAMES))}")
        for ov in self.overrides:
            if "=" not in ov:
                raise PipelineError(f"stage {self.name!r}: override {ov!r} is not of the form key=value")


@dataclass(frozen=True, kw_only=True)
class EvalSpec:
    """Rule-measured accuracy of each stage's saved actor."""

    rule: str = "arithmetic_exact"
    """Reward rule that judges a response (runtime.rewards.rules)."""
    generator: str = "arithmetic"
    """Built-in generator of the evaluation prompts (format prompts_with_answers)."""
    num_prompts: int = 200
    """Prompts scored."""
    max_new_tokens: int = 4
    """Most tokens of a greedy response."""
    seed: int = 12345
    """Seed of the evaluation prompts."""

    def __post_init__(self) -> None:
        if self.num_prompts < 1 or self.max_new_tokens < 1:
            raise PipelineError("eval.num_prompts and eval.max_new_tokens must be >= 1")


@dataclass(frozen=True, kw_only=True)
class Pipeline:
    """A loaded pipeline file."""

    name: str
    """Pipeline name."""
    run_dir: str
    """Root of the stages' run directories."""
    stages: tuple[Stage, ...]
    """The stages, in order."""
    eval: EvalSpec | None = None
    """Accuracy check of each stage's actor, or None."""

    def __post_init__(self) -> None:
        if not self.stages:
            raise PipelineError("pipeline has no stages; list them under `stages:`")
        names = [s.name for s in self.stages]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise PipelineError(f"stage name {dup[0]!r} is used twice; give each stage a distinct name")


@dataclass(frozen=True, kw_only=True)
class ResolvedStage:
    """A stage ready to run: every reference replaced, its run directory fixed."""

    name: str
    experiment: str
    overrides: tuple[str, ...]
    run_dir: Path


# --------------------------------------------------------------------------- loading


def _stage(raw: Any, index: int) -> Stage:
    if not isinstance(raw, Mapping):
        raise PipelineError(f"stages[{index}] must be a mapping with name, experiment and overrides")
    unknown = sorted(set(raw) - {"name", "experiment", "overrides"})
    if unknown:
        raise PipelineError(f"stages[{index}]: unknown key {unknown[0]!r}; known: name, experiment, overrides")
    for key in ("name", "experiment"):
        if not isinstance(raw.get(key), str):
            raise PipelineError(f"stages[{index}].{key} must be a string")
    overrides = raw.get("overrides") or []
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise PipelineError(f"stage {raw['name']!r}: overrides must be a list of key=value strings")
    return Stage(name=raw["name"], experiment=raw["experiment"], overrides=tuple(overrides))


def _eval_spec(raw: Any) -> EvalSpec | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise PipelineError("eval must be a mapping (rule, generator, num_prompts, max_new_tokens, seed)")
    known = set(EvalSpec.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise PipelineError(f"eval: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return EvalSpec(**raw)


def parse_pipeline(data: Any, *, default_name: str = "pipeline") -> Pipeline:
    """A Pipeline from the parsed YAML mapping."""
    if not isinstance(data, Mapping):
        raise PipelineError("a pipeline file is a mapping with name, run_dir and stages")
    unknown = sorted(set(data) - {"name", "run_dir", "stages", "eval"})
    if unknown:
        raise PipelineError(f"unknown pipeline key {unknown[0]!r}; known: name, run_dir, stages, eval")
    stages = data.get("stages")
    if not isinstance(stages, list):
        raise PipelineError("pipeline: `stages:` must be a list of stages")
    name = str(data.get("name") or default_name)
    return Pipeline(name=name, run_dir=str(data.get("run_dir") or f"runs/{name}"),
                    stages=tuple(_stage(s, i) for i, s in enumerate(stages)), eval=_eval_spec(data.get("eval")))


def find_pipeline(path: str) -> Path:
    """A pipeline file: a YAML path, or a shipped name under experiments/pipelines/."""
    from realloc.experiment import EXPERIMENTS_DIR

    for c in (Path(path), EXPERIMENTS_DIR / "pipelines" / path, EXPERIMENTS_DIR / "pipelines" / f"{path}.yaml"):
        if c.is_file():
            return c.resolve()
    shipped = sorted(p.stem for p in (EXPERIMENTS_DIR / "pipelines").glob("*.yaml"))
    raise PipelineError(f"pipeline {path!r} not found; give a YAML path or one of: {', '.join(shipped)}")


def load_pipeline(path: str, overrides: Sequence[str] = ()) -> Pipeline:
    """Read a pipeline file and apply command-line overrides.

    `run_dir=DIR` moves the pipeline; `STAGE.key=value` adds an override to one stage,
    `all.key=value` to every stage; `eval.key=value` sets a key of the eval section.
    """
    import yaml

    p = find_pipeline(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise PipelineError(f"cannot read pipeline {str(p)!r}: {' '.join(str(exc).split())}") from None
    return apply_overrides(parse_pipeline(data, default_name=p.stem), overrides)


def apply_overrides(pipeline: Pipeline, overrides: Sequence[str]) -> Pipeline:
    """The pipeline with `run_dir=`, `STAGE.key=`, `all.key=` and `eval.key=` overrides applied."""
    import dataclasses

    run_dir, evaluation = pipeline.run_dir, pipeline.eval
    extra: dict[str, list[str]] = {s.name: [] for s in pipeline.stages}
    for ov in overrides:
        key, sep, value = ov.partition("=")
        if not sep:
            raise PipelineError(f"override {ov!r} is not of the form key=value")
        if key == "run_dir":
            run_dir = value
            continue
        target, dot, rest = key.partition(".")
        if target == "eval" and dot:
            evaluation = _override_eval(evaluation or EvalSpec(), rest, value)
            continue
        if not dot or not rest:
            raise PipelineError(f"override {ov!r}: write run_dir=DIR, STAGE.key=value or all.key=value")
        if target == "all":
            for names in extra.values():
                names.append(f"{rest}={value}")
        elif target in extra:
            extra[target].append(f"{rest}={value}")
        else:
            raise PipelineError(f"override {ov!r} names no stage {target!r}; stages: {', '.join(extra)} (or all)")
    stages = tuple(dataclasses.replace(s, overrides=s.overrides + tuple(extra[s.name])) for s in pipeline.stages)
    return dataclasses.replace(pipeline, run_dir=run_dir, stages=stages, eval=evaluation)


def _override_eval(spec: EvalSpec, key: str, value: str) -> EvalSpec:
    import dataclasses

    fields = {f.name: f for f in dataclasses.fields(EvalSpec)}
    if key not in fields:
        raise PipelineError(f"override eval.{key}: unknown key; known: {', '.join(sorted(fields))}")
    if isinstance(getattr(spec, key), int):
        try:
            return dataclasses.replace(spec, **{key: int(value)})
        except ValueError:
            raise PipelineError(f"override eval.{key}={value}: expected an integer") from None
    return dataclasses.replace(spec, **{key: value})


# --------------------------------------------------------------------------- resolution


def resolve_stages(pipeline: Pipeline, *, base: Path | None = None) -> list[ResolvedStage]:
    """Every stage with its run directory and references to earlier stages filled in.

    Pure: touches no file besides checking that each experiment exists.
    """
    root = Path(pipeline.run_dir)
    if not root.is_absolute():
        root = (base or Path.cwd()) / root
    done: dict[str, Path] = {}
    out = []
    for stage in pipeline.stages:
        where = f"stage {stage.name!r}"

        def substitute(match: re.Match[str], stage: Stage = stage, where: str = where) -> str:
            ref, attr = match.group(1), match.group(2)
            if attr != "run_dir":
                raise PipelineError(f"{where}: ${{stages.{ref}.{attr}}} is unknown; only "
                                    f"${{stages.NAME.run_dir}} can be referred to")
            if ref not in done:
                later = ref in {s.name for s in pipeline.stages}
                why = "it runs at or after this stage" if later else "there is no such stage"
                earlier = ", ".join(done) or "none"
                raise PipelineError(f"{where} refers to stage {ref!r} but {why}; earlier stages: {earlier}")
            return str(done[ref])

        run_dir = root / stage.name
        overrides = [_REF_RE.sub(substitute, ov) for ov in stage.overrides]
        for ov in overrides:
            if ov.split("=", 1)[0].lstrip("+~") == "train.run_dir":
                raise PipelineError(f"{where}: do not set train.run_dir; the pipeline runs it in {run_dir}")
        try:
            find_experiment(stage.experiment)
        except ConfigError as exc:
            raise PipelineError(f"{where}: {exc}") from None
        out.append(ResolvedStage(name=stage.name, experiment=stage.experiment,
                                 overrides=(*overrides, f"train.run_dir={run_dir}"), run_dir=run_dir))
        done[stage.name] = run_dir
    return out


def set_aside(run_dir: Path) -> Path:
    """Rename an unfinished stage attempt to `NAME.attempt-YYYYMMDDTHHMMSS` beside it (never
    deleted: its logs say why it failed); returns the new path."""
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    target = run_dir.with_name(f"{run_dir.name}.attempt-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = run_dir.with_name(f"{run_dir.name}.attempt-{stamp}-{n}")
    os.replace(run_dir, target)
    return target


def stage_finished(run_dir: Path, iterations: int) -> bool:
    """Whether `run_dir` holds a finished run: `iterations` logged and the models saved."""
    from runtime.rundir.metrics import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    logged = max((int(r.get("iteration", 0)) for r in records), default=0)
    models = run_dir / "models"
    return logged >= iterations and models.is_dir() and any(models.iterdir())


# --------------------------------------------------------------------------- running


@dataclass(frozen=True, kw_only=True)
class StageResult:
    """What one stage did, for the summary."""

    name: str
    status: str
    """ran or skipped (reused)."""
    run_dir: Path
    metrics: dict[str, float]
    """Mean reward / loss / accuracy over the last tenth of the iterations."""
    eval_accuracy: float | None = None
    """Rule-measured accuracy of the stage's saved actor (pipeline eval), if any."""


SUMMARY_KEYS = ("reward", "accuracy", "loss", "actor_loss", "critic_loss")


def tail_means(records: Sequence[Mapping[str, Any]], keys: Sequence[str] = SUMMARY_KEYS) -> dict[str, float]:
    """Means of `keys` over the last tenth (at least one) of the records."""
    tail = list(records)[-max(1, len(records) // 10):]
    out = {}
    for key in keys:
        values = [float(r[key]) for r in tail if r.get(key) is not None]
        if values:
            out[key] = sum(values) / len(values)
    return out


Runner = Callable[[Any], int]
"""Runs a loaded experiment, returning its exit code (realloc.run.run_experiment)."""


def saved_fingerprint(run_dir: Path) -> dict[str, Any] | None:
    """The fingerprint of the experiment a run directory ran (its config.yaml), or None."""
    import yaml

    from runtime.rundir.checkpoints import experiment_fingerprint

    config = run_dir / "config.yaml"
    if not config.is_file():
        return None
    return experiment_fingerprint(yaml.safe_load(config.read_text()) or {})


def changed_keys(saved: Mapping[str, Any] | None, now: Mapping[str, Any]) -> list[str]:
    """'key is A there, B now' per differing key (everything, when nothing was saved)."""
    from runtime.rundir.checkpoints import differences

    if saved is None:
        return ["config.yaml is missing there"]
    return differences(saved, now)


def _resume_point(run_dir: Path, fingerprint: Mapping[str, Any]) -> tuple[Path | None, str]:
    """(checkpoint to resume an unfinished stage from, or None; why not)."""
    from runtime.rundir.checkpoints import CheckpointError, find_resume_point

    try:
        point = find_resume_point(run_dir / "checkpoints")
    except CheckpointError:
        return None, "it has no usable checkpoint"
    diffs = changed_keys(saved_fingerprint(run_dir), fingerprint)
    if point.meta.fingerprint != dict(fingerprint) or diffs:
        return None, f"its checkpoint belongs to another config ({(diffs or ['fingerprint'])[0]})"
    return point.path, ""


def run_pipeline(pipeline: Pipeline, *, runner: Runner | None = None, rerun: Sequence[str] = (),
                 echo: Callable[[str], None] = print) -> list[StageResult]:
    """Run the stages in order, reusing finished ones of the same fingerprint and resuming
    unfinished ones from their checkpoints; `rerun` names stages run again from the start
    whatever is there. Raises PipelineError naming a failed or changed stage."""
    from realloc.experiment import load_experiment
    from realloc.run import fingerprint
    from runtime.rundir.metrics import read_metrics

    if runner is None:
        from realloc.run import run_experiment as runner
    stages = resolve_stages(pipeline)
    unknown = sorted(set(rerun) - {s.name for s in stages})
    if unknown:
        raise PipelineError(f"--rerun {unknown[0]}: no such stage; stages: {', '.join(s.name for s in stages)}")
    results = []
    for stage in stages:
        echo(f"== stage {stage.name}: {stage.experiment} -> {stage.run_dir}")
        try:
            experiment = load_experiment(stage.experiment, list(stage.overrides))
        except ValueError as exc:
            raise PipelineError(f"stage {stage.name!r}: {' '.join(str(exc).split())}") from None
        now = fingerprint(experiment)
        finished = stage_finished(stage.run_dir, experiment.config.train.iterations)
        diffs = changed_keys(saved_fingerprint(stage.run_dir), now) if finished else []
        if finished and diffs and stage.name not in rerun:
            raise PipelineError(
                f"stage {stage.name!r} finished earlier under another config ({'; '.join(diffs)}); pass "
                f"--rerun {stage.name} to run it again (the old run is kept, moved aside), or undo the change")
        if finished and stage.name not in rerun:
            status = "skipped"
            echo(f"   finished earlier in {stage.run_dir} with the same config; reusing it")
        else:
            resume, why = (None, "--rerun") if stage.name in rerun else _resume_point(stage.run_dir, now)
            if resume is not None:
                echo(f"   an unfinished attempt was there; resuming it from {resume.name}")
                experiment = load_experiment(stage.experiment, [*stage.overrides, "train.resume=true"])
            elif stage.run_dir.exists():
                aside = set_aside(stage.run_dir)
                echo(f"   an earlier attempt was there ({why}); kept it as {aside} and starting the stage over")
            code = runner(experiment)
            if code != 0:
                raise PipelineError(f"stage {stage.name!r} ({stage.experiment}) failed with exit code {code}; "
                                    f"see {stage.run_dir / 'logs'}; a re-run of the pipeline resumes it from its "
                                    "last checkpoint, or keeps this attempt (moved aside with a timestamp) and "
                                    "runs the stage again")
            status = "ran"
        accuracy = None
        actor = stage.run_dir / "models" / "actor"
        if pipeline.eval is not None and actor.is_dir():
            accuracy = evaluate_actor(actor, pipeline.eval, tokenizer=experiment.config.data.tokenizer)
        results.append(StageResult(name=stage.name, status=status, run_dir=stage.run_dir,
                                   metrics=tail_means(read_metrics(stage.run_dir / "metrics.jsonl")),
                                   eval_accuracy=accuracy))
    return results


def summary_lines(results: Sequence[StageResult]) -> list[str]:
    """One line per stage: status, the last tenth's metrics and the eval accuracy."""
    lines = []
    for r in results:
        parts = [f"{k} {v:+.3f}" for k, v in r.metrics.items()]
        if r.eval_accuracy is not None:
            parts.append(f"actor eval accuracy {r.eval_accuracy:.3f}")
        lines.append(f"{r.name:<8} {r.status:<7} {' | '.join(parts) or 'no metrics'}  ({r.run_dir})")
    return lines


# --------------------------------------------------------------------------- evaluation


def greedy_responses(checkpoint: Path, prompts: Sequence[str], *, max_new_tokens: int,
                     tokenizer: str = "char") -> list[str]:
    """Greedy responses of a HF checkpoint (CPU, transformers) to `prompts`.

    Each prompt is BOS + its tokens, as in a run; decoding stops at EOS or max_new_tokens.
    """
    import os

    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from runtime.data.tokenizer import load_tokenizer

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()  # the summary is the pipeline's output
    tok = load_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(str(checkpoint), local_files_only=True).eval()
    out = []
    with torch.no_grad():
        for prompt in prompts:
            ids = [tok.bos_id, *tok.encode(prompt)]
            response: list[int] = []
            for _ in range(max_new_tokens):
                nxt = int(model(torch.tensor([ids + response])).logits[0, -1].argmax())
                if nxt == tok.eos_id:
                    break
                response.append(nxt)
            out.append(tok.decode(response))
    return out


def evaluate_actor(checkpoint: Path, spec: EvalSpec, *, tokenizer: str = "char") -> float:
    """Fraction of generated prompts whose greedy response the rule gives its full score."""
    from runtime.data.records import generate
    from runtime.rewards.rules import get_rule

    rule = get_rule(spec.rule)
    records = generate(spec.generator, "prompts_with_answers", spec.num_prompts, spec.seed)
    responses = greedy_responses(checkpoint, [r.prompt for r in records], max_new_tokens=spec.max_new_tokens,
                                 tokenizer=tokenizer)
    full = sum(float(rule(r.prompt, text, {"answer": float(r.answer)})) >= 1.0
               for r, text in zip(records, responses))
    return full / len(records)
