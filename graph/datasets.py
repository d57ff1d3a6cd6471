"""Dataset record formats and the data keys each provides to the graph."""

from __future__ import annotations

import difflib

from graph.errors import GraphError

DATASET_FORMATS: dict[str, tuple[str, ...]] = {
    "prompts": ("prompts",),
    "prompts_with_answers": ("prompts", "answers"),
    "prompt_answer": ("prompt_answer",),
    "preference": ("pairs",),
}
"""Record format -> keys it provides.

- prompts: {"prompt": str}
- prompts_with_answers: {"prompt": str, "answer": str} (a verifiable task)
- prompt_answer: {"prompt": str, "answer": str} for supervised fine-tuning
- preference: {"prompt": str, "chosen": str, "rejected": str}
"""


def dataset_keys(fmt: str) -> tuple[str, ...]:
    """Keys a dataset of format `fmt` provides; an unknown format lists the known ones."""
    try:
        return DATASET_FORMATS[fmt]
    except KeyError:
        close = difflib.get_close_matches(str(fmt), DATASET_FORMATS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GraphError(
            f"unknown dataset format {fmt!r}{hint}; known: {', '.join(DATASET_FORMATS)}"
        ) from None
