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


PTX_KEY = "ptx"
"""Data key of the ptx dataset (data.ptx): sequences whose SFT loss the PPO actor mixes in."""
PTX_FORMATS = ("prompt_answer",)
"""Record formats a ptx dataset may have (loss on the answer; an empty prompt gives a
pretraining loss on the whole text)."""


def dataset_keys(fmt: str, *, ptx_format: str | None = None) -> tuple[str, ...]:
    """Keys a dataset of format `fmt` provides, plus `ptx` when a ptx dataset of format
    `ptx_format` is given; an unknown format lists the known ones."""
    if ptx_format is not None and ptx_format not in PTX_FORMATS:
        raise GraphError(f"data.ptx.format: {ptx_format!r} is not one of {', '.join(PTX_FORMATS)}")
    try:
        keys = DATASET_FORMATS[fmt]
    except KeyError:
        close = difflib.get_close_matches(str(fmt), DATASET_FORMATS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise GraphError(
            f"unknown dataset format {fmt!r}{hint}; known: {', '.join(DATASET_FORMATS)}"
        ) from None
    return keys + ((PTX_KEY,) if ptx_format is not None else ())
