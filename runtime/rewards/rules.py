"""Rule-based rewards: a registry of `rule(prompt, response, meta) -> score`.

A rule returns a bool (correct or not) or a float score in [0, 1]; 1 (or True) is the full
score of a correct response, and the fraction of responses with the full score is the
run's exact-match `accuracy`.

`arithmetic_exact`: the prompt holds an arithmetic expression (integers, + - * / and
parentheses), e.g. "What is 12 * (3 + 4)?"; the response is correct when the last number
in it equals the expression's value exactly. A sequence field `answer` in `meta`, when
present, is the expected value instead.

`arithmetic_partial`: the same check with partial credit for wrong answers, so that a
policy starting from random text gets a learning signal before its first exact hit:
1.0 for an exact answer (exactly where `arithmetic_exact` is true); otherwise
`NUMBER_CREDIT` for writing a number at all, `FORMAT_CREDIT` more when the response is
that number alone, plus up to `CLOSENESS_CREDIT` the closer it is (`1 / (1 + |error|)`).
A wrong answer scores below 0.6 (at most 0.4 when it is off by 1 or more), so an exact
answer always ranks highest.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

from graph.registry import Registry

Rule = Callable[[str, str, dict[str, Any]], bool | float]
RULES: Registry[Rule] = Registry("reward rule")
"""Rule name -> fn(prompt, response, meta) -> bool | float."""


def register_rule(name: str) -> Callable[[Rule], Rule]:
    """Decorator: register a rule under `name` (duplicates raise)."""
    return RULES.register(name)


def get_rule(name: str) -> Rule:
    """The rule `name`; an unknown name names the closest and lists the known ones."""
    return RULES.get(name)


def known_rules() -> tuple[str, ...]:
    """Registered rule names, sorted."""
    return tuple(sorted(RULES))


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv}
_EXPR_RE = re.compile(r"[-+*/()\d\s.]*\d[-+*/()\d\s.]*")
_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:/\d+)?")


def _eval(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return Fraction(str(node.value))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_eval(node.left), _eval(node.right))
    raise ValueError("not an arithmetic expression")


def evaluate_arithmetic(text: str) -> Fraction | None:
    """Exact value of the longest arithmetic expression with an operator in `text`."""
    candidates = sorted((m.group().strip() for m in _EXPR_RE.finditer(text)), key=len, reverse=True)
    for expr in candidates:
        if not any(op in expr.lstrip("-") for op in "+-*/"):
            continue
        try:
            return _eval(ast.parse(expr, mode="eval"))
        except (SyntaxError, ValueError, ZeroDivisionError):
            continue
    return None


def last_number(text: str) -> Fraction | None:
    """The last number written in `text` (integer, decimal or a/b), exactly."""
    found = _NUMBER_RE.findall(text.replace(",", ""))
    if not found:
        return None
    try:
        return Fraction(found[-1])
    except ZeroDivisionError:  # "7/0" is no number
        return None


def _target(prompt: str, meta: dict[str, Any]) -> Fraction | None:
    """The expected value: meta's `answer` when it is a number, else the prompt's expression."""
    expected = meta.get("answer")
    known = expected is not None and math.isfinite(float(expected))  # NaN: no usable answer given
    return Fraction(str(float(expected))) if known else evaluate_arithmetic(prompt)


@register_rule("arithmetic_exact")
def arithmetic_exact(prompt: str, response: str, meta: dict[str, Any]) -> bool:
    """Exact match of the response's last number with the prompt's arithmetic value."""
    target = _target(prompt, meta)
    got = last_number(response)
    return target is not None and got is not None and got == target


NUMBER_CREDIT = 0.1
"""arithmetic_partial: credit of a wrong response that contains a number."""
FORMAT_CREDIT = 0.1
"""arithmetic_partial: further credit when the response is that number and nothing else."""
CLOSENESS_CREDIT = 0.4
"""arithmetic_partial: most further credit for closeness, times 1 / (1 + |error|)."""
_WHOLE_NUMBER_RE = re.compile(r"\s*" + _NUMBER_RE.pattern + r"\s*")


@register_rule("arithmetic_partial")
def arithmetic_partial(prompt: str, response: str, meta: dict[str, Any]) -> float:
    """1.0 for an exact answer; partial credit (at most 0.4) for a number, its form and closeness."""
    target = _target(prompt, meta)
    got = last_number(response)
    if target is None or got is None:
        return 0.0
    if got == target:
        return 1.0
    score = NUMBER_CREDIT + CLOSENESS_CREDIT / (1.0 + float(abs(got - target)))
    if _WHOLE_NUMBER_RE.fullmatch(response.replace(",", "")):
        score += FORMAT_CREDIT
    return score
