"""The user's reward functions: loading by file or module, signature checks, TRL's calling
convention, None handling, weights, timeouts and errors that name the function and sample."""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from graph.spec import RewardFunctionSpec
from runtime.rewards.functions import (
    RewardFunctionError,
    call_function,
    load_functions,
    resolve_reference,
    score_batch,
)

SOURCE = textwrap.dedent('''
    def exact(prompts, completions, answer, **kwargs):
        return [1.0 if c.strip() == a else 0.0 for c, a in zip(completions, answer)]

    def length(completions, **kwargs):  # TRL style: no prompts parameter
        return [None if c == "" else -0.1 * len(c) for c in completions]

    def only_named(prompts, completions, level):
        return [float(x) for x in level]

    def boom(prompts, completions, **kwargs):
        return [1.0 / len(c) for c in completions]   # ZeroDivisionError on an empty completion

    def slow(prompts, completions, **kwargs):
        import time
        time.sleep(5)
        return [0.0] * len(completions)

    def too_few(prompts, completions, **kwargs):
        return [0.0]

    def nan(prompts, completions, **kwargs):
        return [float("nan")] * len(completions)

    def needs_missing(prompts, completions, difficulty):
        return [0.0] * len(completions)

    def no_completions(prompts):
        return []

    NOT_A_FUNCTION = 3
''')


@pytest.fixture
def rewards_file(tmp_path):
    path = tmp_path / "my_rewards.py"
    path.write_text(SOURCE)
    return path


def _spec(path, name, weight=1.0):
    return RewardFunctionSpec(function=f"{path}:{name}", weight=weight)


PROMPTS = ["2+3=", "7-4=", "1+1="]
COMPLETIONS = ["5", " 4", ""]
COLUMNS = {"answer": ["5", "3", "2"], "level": [1, 2, 3]}


def test_weighted_sum_with_none_and_per_function_scores(rewards_file):
    fns = load_functions([_spec(rewards_file, "exact", 2.0), _spec(rewards_file, "length", 0.5)],
                         ["answer", "level"])
    total, each = score_batch(fns, PROMPTS, COMPLETIONS, COLUMNS)
    # by hand: exact = [1, 0, 0]; length = [-0.1, -0.2, None]
    assert each["reward_exact"] == [1.0, 0.0, 0.0]
    assert each["reward_length"][:2] == pytest.approx([-0.1, -0.2]) and each["reward_length"][2] is None
    assert total == pytest.approx([2 * 1.0 + 0.5 * -0.1, 2 * 0.0 + 0.5 * -0.2, 0.0])


def test_a_function_without_kwargs_gets_only_the_columns_it_names(rewards_file):
    (fn,) = load_functions([_spec(rewards_file, "only_named")], ["answer", "level"])
    assert call_function(fn, PROMPTS, COMPLETIONS, COLUMNS) == [1.0, 2.0, 3.0]


def test_same_name_twice_gets_numbered_metrics(rewards_file, tmp_path):
    other = tmp_path / "other.py"
    other.write_text(SOURCE)
    fns = load_functions([_spec(rewards_file, "exact"), _spec(other, "exact")], ["answer"])
    assert [f.metric for f in fns] == ["reward_exact", "reward_exact_2"]


def test_module_reference_and_relative_paths(rewards_file, monkeypatch):
    monkeypatch.syspath_prepend(str(rewards_file.parent))
    (fn,) = load_functions([RewardFunctionSpec(function="my_rewards:exact")], ["answer"])
    assert call_function(fn, PROMPTS, COMPLETIONS, COLUMNS) == [1.0, 0.0, 0.0]
    sys.modules.pop("my_rewards", None)
    assert resolve_reference("my_rewards.py:exact", rewards_file.parent) == f"{rewards_file}:exact"
    assert resolve_reference("pkg.mod:f", rewards_file.parent) == "pkg.mod:f"


@pytest.mark.parametrize("name,columns,message", [
    ("nope", ["answer"], "has no 'nope'; callables there: boom, exact"),
    ("NOT_A_FUNCTION", ["answer"], "'NOT_A_FUNCTION' is a int, not a function"),
    ("needs_missing", ["answer", "level"], "requires 'difficulty', which the dataset does not give \\(its columns: answer, level\\)"),
    ("exact", ["level"], "requires 'answer', which the dataset does not give"),
    ("no_completions", ["answer"], "must take the keyword argument 'completions'"),
])
def test_load_time_errors_name_the_function(rewards_file, name, columns, message):
    with pytest.raises(RewardFunctionError, match=message):
        load_functions([_spec(rewards_file, name)], columns)


def test_missing_file_and_module(tmp_path):
    with pytest.raises(RewardFunctionError, match="file '.*nothere.py' does not exist"):
        load_functions([RewardFunctionSpec(function=f"{tmp_path}/nothere.py:f")])
    with pytest.raises(RewardFunctionError, match="cannot import module 'no_such_pkg.mod'"):
        load_functions([RewardFunctionSpec(function="no_such_pkg.mod:f")])
    with pytest.raises(ValueError, match="must be 'path/to/file.py:name'"):
        RewardFunctionSpec(function="just_a_name")


def test_an_exception_names_the_function_and_the_sample(rewards_file, capsys):
    (fn,) = load_functions([_spec(rewards_file, "boom")], ["answer"])
    with pytest.raises(RewardFunctionError, match=r"'.*:boom' raised ZeroDivisionError: float division by zero on "
                                                  r"sample 2 \(prompt '1\+1=', completion ''\)"):
        call_function(fn, PROMPTS, COMPLETIONS, COLUMNS)
    assert "Traceback" in capsys.readouterr().err  # the traceback goes to the worker's log


@pytest.mark.parametrize("name,message", [
    ("too_few", "returned 1 scores for 3 completions"),
    ("nan", "returned nan for sample 0"),
])
def test_bad_return_values(rewards_file, name, message):
    (fn,) = load_functions([_spec(rewards_file, name)], ["answer"])
    with pytest.raises(RewardFunctionError, match=message):
        call_function(fn, PROMPTS, COMPLETIONS, COLUMNS)


def test_per_batch_time_limit(rewards_file):
    (fn,) = load_functions([_spec(rewards_file, "slow")], ["answer"])
    start = time.perf_counter()
    with pytest.raises(RewardFunctionError, match="ran past its limit of 0.2 s per batch"):
        call_function(fn, PROMPTS, COMPLETIONS, COLUMNS, time_limit_s=0.2)
    assert time.perf_counter() - start < 2
