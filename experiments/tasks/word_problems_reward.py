"""Reward functions of the shipped word-problem task (experiments/grpo_smollm2_words.yaml),
in TRL's convention: called as fn(prompts=..., completions=..., answer=..., operation=...).

`correct`: 1.0 when the number after the last "Answer:" equals the row's answer, else 0.0.
`answer_format`: 1.0 when the reply ends with "Answer: N" (a whole number, an optional full
stop), 0.5 when "Answer: N" appears earlier, else 0.0. The experiment weighs them 1.0 and 0.5.
"""

from __future__ import annotations

import re

_ANSWER = re.compile(r"answer:\s*(-?\d+)", re.IGNORECASE)
_ENDS_WITH_ANSWER = re.compile(r"answer:\s*-?\d+\s*\.?\s*$", re.IGNORECASE)


def _text(completion: object) -> str:
    """A completion as text: a string, or TRL's conversational [{"role", "content"}]."""
    if isinstance(completion, str):
        return completion
    return str(completion[0]["content"])  # type: ignore[index]


def correct(prompts: list, completions: list, answer: list, **kwargs: object) -> list[float]:
    """1.0 for the right number after the last 'Answer:', else 0.0."""
    scores = []
    for completion, want in zip(completions, answer):
        found = _ANSWER.findall(_text(completion))
        scores.append(1.0 if found and int(found[-1]) == int(want) else 0.0)
    return scores


def answer_format(completions: list, **kwargs: object) -> list[float]:
    """1.0 for a reply ending in 'Answer: N', 0.5 for 'Answer: N' elsewhere, else 0.0."""
    scores = []
    for completion in completions:
        text = _text(completion).strip()
        scores.append(1.0 if _ENDS_WITH_ANSWER.search(text) else 0.5 if _ANSWER.search(text) else 0.0)
    return scores
