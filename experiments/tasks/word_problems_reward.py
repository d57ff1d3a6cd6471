"""Reward functions of the shipped word-problem task (experiments/grpo_smollm2_words.yaml),
in TRL's convention: called as fn(prompts=..., completions=..., answer=..., operation=...).

`correct`: 1.0 when the last number in the reply equals the row's answer, else 0.0.
`answer_format`: 1.0 when the reply ends with "The answer is N." (N a whole number, the full
stop optional), 0.5 when "The answer is N" appears earlier, else 0.0. The experiment weighs
them 1.0 and 0.5. SmolLM2-135M-Instruct already writes "The answer is N." now and then, so
both have a learning signal from the first iteration.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d+")
_ANSWER = re.compile(r"the answer is\s*-?\d+", re.IGNORECASE)
_ENDS_WITH_ANSWER = re.compile(r"the answer is\s*-?\d+\s*\.?\s*$", re.IGNORECASE)


def _text(completion: object) -> str:
    """A completion as text: a string, or TRL's conversational [{"role", "content"}]."""
    if isinstance(completion, str):
        return completion
    return str(completion[0]["content"])  # type: ignore[index]


def correct(prompts: list, completions: list, answer: list, **kwargs: object) -> list[float]:
    """1.0 when the reply's last number is the answer, else 0.0."""
    scores = []
    for completion, want in zip(completions, answer):
        found = _NUMBER.findall(_text(completion).replace(",", ""))
        scores.append(1.0 if found and int(found[-1]) == int(want) else 0.0)
    return scores


def answer_format(completions: list, **kwargs: object) -> list[float]:
    """1.0 for a reply ending in 'The answer is N.', 0.5 for it elsewhere, else 0.0."""
    scores = []
    for completion in completions:
        text = _text(completion).strip()
        scores.append(1.0 if _ENDS_WITH_ANSWER.search(text) else 0.5 if _ANSWER.search(text) else 0.0)
    return scores
