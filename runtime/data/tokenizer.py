"""Tokenizers: the project's character tokenizer, or a HF tokenizer from a directory.

Both expose the same small surface (`encode`, `decode`, `pad_id`, `bos_id`, `eos_id`,
`vocab_size`), so data preparation and generation do not care which is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from graph.errors import UserError

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
CHARS = "0123456789+-*/=()?.,: abcdefghijklmnopqrstuvwxyz"
"""Characters of the char tokenizer, after the four special tokens (52 ids in all)."""


class Tokenizer(Protocol):
    pad_id: int
    bos_id: int
    eos_id: int
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    @property
    def has_chat_template(self) -> bool: ...

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]: ...


@dataclass(frozen=True)
class CharTokenizer:
    """One id per character; unknown characters map to <unk>. Lower-cases its input."""

    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    unk_id: int = 3

    @property
    def vocab_size(self) -> int:
        """Number of ids used."""
        return len(SPECIALS) + len(CHARS)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of `text` (no BOS/EOS)."""
        return [_CHAR_TO_ID.get(ch, self.unk_id) for ch in text.lower()]

    def decode(self, ids: list[int]) -> str:
        """Text of `ids`, stopping at EOS and skipping other special tokens."""
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i >= len(SPECIALS):
                out.append(CHARS[i - len(SPECIALS)] if i - len(SPECIALS) < len(CHARS) else "")
        return "".join(out)

    @property
    def has_chat_template(self) -> bool:
        """The character tokenizer has none."""
        return False

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        raise UserError("the character tokenizer has no chat template; give string prompts or a HF tokenizer "
                        "with a chat template (data.tokenizer)")


_CHAR_TO_ID = {ch: i + len(SPECIALS) for i, ch in enumerate(CHARS)}


class HFTokenizer:
    """A transformers tokenizer loaded from a local directory (never from a hub)."""

    def __init__(self, path: str | Path, *, gguf_file: str | None = None) -> None:
        import os

        from transformers import AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        p = Path(path)
        if not p.exists():
            raise UserError(f"tokenizer directory {str(p)!r} does not exist; set data.tokenizer")
        kwargs: dict[str, Any] = {"local_files_only": True}
        if gguf_file:
            kwargs["gguf_file"] = gguf_file
        self._tok = AutoTokenizer.from_pretrained(str(p), **kwargs)
        self.eos_id = int(self._tok.eos_token_id)
        self.bos_id = int(self._tok.bos_token_id if self._tok.bos_token_id is not None else self.eos_id)
        self.pad_id = int(self._tok.pad_token_id if self._tok.pad_token_id is not None else self.eos_id)
        self.vocab_size = len(self._tok)

    def encode(self, text: str) -> list[int]:
        """Ids of `text` without special tokens."""
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode(self, ids: list[int]) -> str:
        """Text of `ids` up to EOS, without special tokens."""
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self._tok.decode(ids, skip_special_tokens=True)

    @property
    def has_chat_template(self) -> bool:
        """Whether the tokenizer carries a chat template."""
        return bool(getattr(self._tok, "chat_template", None))

    def apply_chat_template(self, messages: list[dict[str, str]]) -> list[int]:
        """Ids of `messages` through the chat template, ending with the assistant's turn opened."""
        out = self._tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = out["input_ids"] if isinstance(out, Mapping) else out
        return [int(i) for i in ids]


def load_tokenizer(name: str, vocab_size: int | None = None) -> Tokenizer:
    """'char' for the character tokenizer, else a HF tokenizer directory.

    `vocab_size`, when given, is the model's vocabulary: the tokenizer must fit in it.
    """
    tok: Tokenizer = CharTokenizer() if name == "char" else HFTokenizer(name)
    if vocab_size is not None and tok.vocab_size > vocab_size:
        raise UserError(
            f"tokenizer {name!r} has {tok.vocab_size} ids but the model's vocab_size is {vocab_size}; "
            "raise the model's vocab_size"
        )
    return tok


def _filler(i: int) -> str:
    """Token texts [a], [b], ..., [ba], ...: no digits (the ids past the characters)."""
    letters = ""
    while True:
        i, r = divmod(i, 26)
        letters = chr(ord("a") + r) + letters
        if i == 0:
            return f"[{letters}]"


def char_hf_tokenizer(*, vocab_size: int | None = None, add_bos: bool = False) -> Any:
    """The character tokenizer as a transformers fast tokenizer with exactly its ids.

    `vocab_size` pads the vocabulary with digit-free filler tokens so every id a model of
    that size samples decodes; `add_bos` makes `encode` prepend BOS as realloc's prompts do.
    """
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers, processors
    from tokenizers import Tokenizer as CoreTokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    ours = CharTokenizer()
    pieces = [*SPECIALS, *CHARS]
    pieces += [_filler(i) for i in range(max(0, (vocab_size or 0) - len(pieces)))]
    core = CoreTokenizer(WordLevel({p: i for i, p in enumerate(pieces)}, unk_token=SPECIALS[ours.unk_id]))
    core.normalizer = normalizers.Lowercase()
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    bos = SPECIALS[ours.bos_id]
    if add_bos:
        core.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, ours.bos_id)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token=bos, eos_token=SPECIALS[ours.eos_id],
                                   pad_token=SPECIALS[ours.pad_id], unk_token=SPECIALS[ours.unk_id])
