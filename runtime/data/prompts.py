"""Prompts as token ids: the chat template, and the longest-prompt limit.

`encode_prompt` turns a record's prompt (a string, or a list of chat messages) into ids:
through the tokenizer's chat template when it has one and `data.chat_template` is on (a
string becomes one user message; the template opens the assistant's turn), else BOS + the
text. `fit_prompts` applies `data.max_prompt_len` to a whole dataset once, before training:
an overlong prompt is dropped (and counted) or truncated to its last tokens, the end that
holds the question and the opened assistant turn.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from runtime.data.records import DataError, Record
from runtime.data.tokenizer import Tokenizer

OVERLONG_MODES = ("drop", "truncate")
"""Values of data.overlong_prompts."""


def encode_prompt(tok: Tokenizer, prompt: Any, *, chat_template: bool) -> list[int]:
    """Token ids of one prompt (see the module docstring)."""
    use_template = chat_template and tok.has_chat_template
    if isinstance(prompt, str):
        if use_template:
            return tok.apply_chat_template([{"role": "user", "content": prompt}])
        return [tok.bos_id] + tok.encode(prompt)
    if not use_template:
        why = "data.chat_template is off" if tok.has_chat_template else "the tokenizer has no chat template"
        raise DataError(f"a prompt is a list of chat messages but {why}; give string prompts, or a tokenizer "
                        "with a chat template and data.chat_template=true")
    return tok.apply_chat_template([dict(m) for m in prompt])


def fit_prompts(records: Sequence[Record], tok: Tokenizer, *, chat_template: bool, max_len: int | None,
                overlong: str = "drop") -> tuple[list[Record], int]:
    """The records with `prompt_ids` set, and how many were dropped for being over `max_len`."""
    if overlong not in OVERLONG_MODES:
        raise DataError(f"data.overlong_prompts: {overlong!r} is not one of {', '.join(OVERLONG_MODES)}")
    if max_len is not None and max_len < 1:
        raise DataError(f"data.max_prompt_len must be >= 1 (or null), got {max_len}")
    kept: list[Record] = []
    dropped = 0
    for r in records:
        ids = encode_prompt(tok, r.prompt, chat_template=chat_template)
        if max_len is not None and len(ids) > max_len:
            if overlong == "drop":
                dropped += 1
                continue
            ids = ids[-max_len:]
        kept.append(dataclasses.replace(r, prompt_ids=tuple(ids)))
    return kept, dropped
