"""Tests of runtime/rules.py: the registry and the exact-match arithmetic checker."""

from __future__ import annotations

from fractions import Fraction

import pytest

from runtime.rewards import rules


def test_evaluates_prompt_arithmetic_exactly() -> None:
    assert rules.evaluate_arithmetic("What is 12 * (3 + 4)?") == 84
    assert rules.evaluate_arithmetic("Compute 7 / 2 - 1.") == Fraction(5, 2)
    assert rules.evaluate_arithmetic("no maths here, just 42") is None


@pytest.mark.parametrize(("response", "ok"), [
    ("The answer is 84.", True), ("12*7 = 84", True), ("I think 83", False),
    ("84 or maybe 85", False), ("", False)])
def test_arithmetic_exact(response: str, ok: bool) -> None:
    rule = rules.get_rule("arithmetic_exact")
    assert rule("What is 12 * (3 + 4)?", response, {}) is ok


def test_answer_field_overrides_prompt() -> None:
    rule = rules.get_rule("arithmetic_exact")
    assert rule("anything", "it is 2.5", {"answer": 2.5}) is True


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="unknown reward rule 'nope'; known: arithmetic_exact"):
        rules.get_rule("nope")
    with pytest.raises(ValueError, match="registered twice"):
        rules.register_rule("arithmetic_exact")(lambda p, r, m: True)


def test_degenerate_responses_score_wrong_instead_of_failing() -> None:
    import math

    from runtime.rewards.rules import arithmetic_exact, last_number

    # a sampled "7/0" once crashed a GRPO run with ZeroDivisionError
    assert last_number("7/0") is None
    assert arithmetic_exact("3+4=", "7/0", {}) is False
    assert arithmetic_exact("3+4=", "7", {"answer": math.nan}) is True  # NaN answer: use the prompt


PROMPT = "7+5="


@pytest.mark.parametrize(("response", "expected"), [
    ("12", 1.0),                               # exact
    ("the answer is 12", 1.0),                 # exact, like arithmetic_exact
    ("11", 0.1 + 0.4 / 2 + 0.1),               # a lone number, off by one
    ("9", 0.1 + 0.4 / 4 + 0.1),                # off by three
    ("x11", 0.1 + 0.4 / 2),                    # a number with other text: no format credit
    ("abc", 0.0), ("", 0.0)])
def test_arithmetic_partial_hand_worked(response: str, expected: float) -> None:
    assert rules.arithmetic_partial(PROMPT, response, {}) == pytest.approx(expected)


def test_arithmetic_partial_full_score_exactly_where_exact_accepts() -> None:
    import random

    rng = random.Random(0)
    alphabet = "0123456789+-= ab"
    for _ in range(3000):
        a, b = rng.randrange(10), rng.randrange(10)
        prompt = f"{a}+{b}="
        response = "".join(rng.choice(alphabet) for _ in range(rng.randrange(4)))
        score = rules.arithmetic_partial(prompt, response, {})
        assert 0.0 <= score <= 1.0
        assert (score == 1.0) is rules.arithmetic_exact(prompt, response, {})
        if score < 1.0:  # every wrong answer ranks below every exact one
            assert score < 0.6


def test_arithmetic_partial_prefers_closer_answers() -> None:
    scores = [rules.arithmetic_partial(PROMPT, str(v), {}) for v in (12, 11, 10, 3, 40)]
    assert scores == sorted(scores, reverse=True) and len(set(scores)) == len(scores)
