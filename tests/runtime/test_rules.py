"""Tests of runtime/rules.py: the registry and the exact-match arithmetic checker."""

from __future__ import annotations

from fractions import Fraction

import pytest

from runtime import rules


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

    from runtime.rules import arithmetic_exact, last_number

    # a sampled "7/0" once crashed a GRPO run with ZeroDivisionError
    assert last_number("7/0") is None
    assert arithmetic_exact("3+4=", "7/0", {}) is False
    assert arithmetic_exact("3+4=", "7", {"answer": math.nan}) is True  # NaN answer: use the prompt
