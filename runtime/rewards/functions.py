"""Reward functions written by the user: loading, checking, and calling them in batches.

A function is named `path/to/file.py:name` or `package.module:name` and is called the way
TRL calls its reward functions, with keyword arguments, once per batch:

    name(prompts=[...], completions=[...], **columns) -> list[float | None]

`prompts` are the dataset's prompts as given (strings, or lists of chat messages);
`completions` are the decoded responses: strings, or, for chat prompts,
`[{"role": "assistant", "content": text}]` (TRL's conversational form); `columns` are the
dataset's other columns, one list each, aligned with the batch. A function without `**kwargs`
receives only the columns it names.

`None` for a sample means "no score from this function here": the sample's reward is the
weighted sum of the functions that did score it (0 when none did), and the function's own
metric averages only the samples it scored.

Pure Python (no torch): the front door loads and checks every function at load time,
before any worker starts (`load_function`, `check_signature`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import math
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph.errors import UserError
from graph.spec import RewardFunctionSpec


class RewardFunctionError(UserError):
    """A reward function cannot be loaded, has the wrong signature, or failed on a sample."""


@dataclass(frozen=True)
class LoadedFunction:
    """A reward function ready to call."""

    spec: RewardFunctionSpec
    fn: Callable[..., Any]
    metric: str
    """Its metric name: `reward_NAME` (numbered when two functions share a name)."""


def resolve_reference(ref: str, base_dir: Path | None = None) -> str:
    """`ref` with a relative `FILE.py` made absolute: relative to `base_dir` (the experiment's
    folder) when the file is there, else to the working directory. Modules are left as given."""
    target, _, name = ref.rpartition(":")
    if not target.endswith(".py"):
        return ref
    p = Path(target).expanduser()
    if not p.is_absolute():
        p = base_dir / p if base_dir is not None and (base_dir / p).is_file() else Path.cwd() / p
    return f"{p.resolve()}:{name}"


def load_function(ref: str) -> Callable[..., Any]:
    """The function `ref` names; RewardFunctionError for a missing file, module or name."""
    target, _, name = ref.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise RewardFunctionError(f"reward function {ref!r}: file {target!r} does not exist")
        module_name = f"realloc_reward_{abs(hash(str(path))):x}"
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            try:
                spec.loader.exec_module(module)
            except Exception as exc:  # noqa: BLE001 - the user's module failed to import
                raise RewardFunctionError(f"reward function {ref!r}: importing {target!r} failed: "
                                          f"{type(exc).__name__}: {exc}") from None
            sys.modules[module_name] = module
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise RewardFunctionError(f"reward function {ref!r}: cannot import module {target!r} ({exc}); "
                                      "give 'path/to/file.py:name' or an importable 'package.module:name'") from None
        except Exception as exc:  # noqa: BLE001
            raise RewardFunctionError(f"reward function {ref!r}: importing {target!r} failed: "
                                      f"{type(exc).__name__}: {exc}") from None
    fn = getattr(module, name, None)
    if fn is None:
        known = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise RewardFunctionError(f"reward function {ref!r}: {target!r} has no {name!r}; "
                                  f"callables there: {', '.join(known) or 'none'}")
    if not callable(fn):
        raise RewardFunctionError(f"reward function {ref!r}: {name!r} is a {type(fn).__name__}, not a function")
    return fn


def _accepts(fn: Callable[..., Any]) -> tuple[set[str], bool, set[str]]:
    """(keyword parameters, has **kwargs, required parameters) of `fn`."""
    params = inspect.signature(fn).parameters.values()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    required = {p.name for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY, p.POSITIONAL_ONLY)}
    return named, var_kw, required


def check_signature(fn: Callable[..., Any], ref: str, columns: Sequence[str] | None) -> None:
    """RewardFunctionError unless `fn(prompts=..., completions=..., **columns)` can be called:
    it takes `completions` (by name or **kwargs), and every parameter it requires is
    `prompts`, `completions` or a dataset column (`columns`; None: not known, not checked)."""
    try:
        named, var_kw, required = _accepts(fn)
    except (TypeError, ValueError):
        return  # a builtin or C function: nothing to inspect
    if "completions" not in named and not var_kw:
        raise RewardFunctionError(f"reward function {ref!r} must take the keyword argument 'completions' "
                                  f"(TRL's convention: def {ref.rpartition(':')[2]}(prompts, completions, **kwargs))")
    missing = sorted(required - {"prompts", "completions", *columns}) if columns is not None else []
    if missing:
        have = ", ".join(sorted(columns or ())) or "none"
        raise RewardFunctionError(f"reward function {ref!r} requires {', '.join(repr(m) for m in missing)}, "
                                  f"which the dataset does not give (its columns: {have}); give them a default "
                                  "or take **kwargs")


def load_functions(specs: Sequence[RewardFunctionSpec], columns: Sequence[str] | None = None) -> list[LoadedFunction]:
    """Load and check every function; metrics are named `reward_NAME` (numbered on a clash)."""
    out: list[LoadedFunction] = []
    seen: dict[str, int] = {}
    for spec in specs:
        fn = load_function(spec.function)
        check_signature(fn, spec.function, columns)
        seen[spec.name] = seen.get(spec.name, 0) + 1
        metric = f"reward_{spec.name}" + (f"_{seen[spec.name]}" if seen[spec.name] > 1 else "")
        out.append(LoadedFunction(spec, fn, metric))
    return out


@contextlib.contextmanager
def _time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise RewardFunctionError after `seconds` (0: no limit); needs the main thread (SIGALRM)."""
    usable = seconds > 0 and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    if not usable:
        yield
        return

    def expire(signum: int, frame: Any) -> None:
        # (no "timeout" in the message: the launcher takes such errors for a peer's collateral)
        raise RewardFunctionError(f"{what} ran past its limit of {seconds:g} s per batch; make it faster or "
                                  "raise models.reward.time_limit_s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _kwargs(lf: LoadedFunction, prompts: list[Any], completions: list[Any],
            columns: Mapping[str, list[Any]]) -> dict[str, Any]:
    try:
        named, var_kw, _ = _accepts(lf.fn)
    except (TypeError, ValueError):
        named, var_kw = set(), True
    cols = dict(columns) if var_kw else {k: v for k, v in columns.items() if k in named}
    args = {"prompts": prompts, "completions": completions, **cols}
    if not var_kw and "prompts" not in named:
        args.pop("prompts")
    return args


def _describe_sample(i: int, prompts: list[Any], completions: list[Any]) -> str:
    prompt = prompts[i] if isinstance(prompts[i], str) else prompts[i][-1]["content"]
    completion = completions[i] if isinstance(completions[i], str) else completions[i][0]["content"]
    return f"sample {i} (prompt {prompt[:60]!r}, completion {completion[:60]!r})"


def _failing_sample(lf: LoadedFunction, prompts: list[Any], completions: list[Any],
                    columns: Mapping[str, list[Any]]) -> int | None:
    """The first sample the function raises on when called on it alone (None: none does)."""
    for i in range(len(completions)):
        one = {k: [v[i]] for k, v in columns.items()}
        try:
            lf.fn(**_kwargs(lf, [prompts[i]], [completions[i]], one))
        except Exception:  # noqa: BLE001
            return i
    return None


def call_function(lf: LoadedFunction, prompts: list[Any], completions: list[Any],
                  columns: Mapping[str, list[Any]], *, time_limit_s: float = 0.0) -> list[float | None]:
    """One function's scores of a batch; RewardFunctionError naming the function and the sample
    when it raises (the traceback goes to stderr, the worker's log) or returns a bad value."""
    ref = lf.spec.function
    try:
        with _time_limit(time_limit_s, f"reward function {ref!r} on a batch of {len(completions)} samples"):
            scores = lf.fn(**_kwargs(lf, prompts, completions, columns))
    except RewardFunctionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code: name it, log the traceback
        print(f"reward function {ref!r} raised:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        i = _failing_sample(lf, prompts, completions, columns)
        where = _describe_sample(i, prompts, completions) if i is not None else f"a batch of {len(completions)} samples"
        raise RewardFunctionError(f"reward function {ref!r} raised {type(exc).__name__}: {exc} on {where} "
                                  "(traceback in the worker log)") from None
    try:
        scores = list(scores)
    except TypeError:
        raise RewardFunctionError(f"reward function {ref!r} returned a {type(scores).__name__}; it must return a "
                                  "list with one float (or None) per completion") from None
    if len(scores) != len(completions):
        raise RewardFunctionError(f"reward function {ref!r} returned {len(scores)} scores for {len(completions)} "
                                  "completions; return one float (or None) per completion")
    out: list[float | None] = []
    for i, s in enumerate(scores):
        if s is None:
            out.append(None)
            continue
        if isinstance(s, bool) or not isinstance(s, int | float) and not hasattr(s, "__float__"):
            raise RewardFunctionError(f"reward function {ref!r} returned {s!r} for "
                                      f"{_describe_sample(i, prompts, completions)}; return a float or None")
        value = float(s)
        if not math.isfinite(value):
            raise RewardFunctionError(f"reward function {ref!r} returned {value} for "
                                      f"{_describe_sample(i, prompts, completions)}; return a finite float or None")
        out.append(value)
    return out


def score_batch(functions: Sequence[LoadedFunction], prompts: list[Any], completions: list[Any],
                columns: Mapping[str, list[Any]], *, time_limit_s: float = 0.0
                ) -> tuple[list[float], dict[str, list[float | None]]]:
    """Rewards of a batch (the weighted sum over functions; a None adds nothing) and each
    function's scores by its metric name."""
    total = [0.0] * len(completions)
    each: dict[str, list[float | None]] = {}
    for lf in functions:
        scores = call_function(lf, prompts, completions, columns, time_limit_s=time_limit_s)
        each[lf.metric] = scores
        for i, s in enumerate(scores):
            if s is not None:
                total[i] += lf.spec.weight * s
    return total, each
