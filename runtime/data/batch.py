"""SeqBatch: the one batch type every interface reads and writes.

Layout: **right-padded** token ids `[B, T]` plus lengths. Sequence b holds tokens
`input_ids[b, :seq_lens[b]]`; its first `prompt_lens[b]` tokens are the prompt, the rest
the response. Padding (`pad_id`) is never attended to: attention is causal and padding
only follows the real tokens.

* `token_fields[key]`: float `[B, T]`, aligned with `input_ids`: entry t belongs to token
  t (e.g. `logprobs[b, t] = log p(input_ids[b, t] | input_ids[b, :t])`, `values[b, t]` =
  critic value of the prefix ending at token t). Entries outside a sequence are 0.
* `seq_fields[key]`: `[B]` per-sequence values (rewards, ...).
* `ids`: one int per sequence, stable across splits (for reordering after DP).

Pairs (rw_pairwise, dpo) are consecutive sequences: 2k chosen, 2k+1 rejected. Groups
(GRPO) are consecutive runs of `group_size`. `split(..., unit=n)` keeps such runs whole.

A SeqBatch is plain (tensors, ints, strings), picklable, on the CPU between calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True, kw_only=True)
class SeqBatch:
    """Variable-length sequences, right-padded, with per-token and per-sequence fields."""

    input_ids: torch.Tensor
    """Token ids [B, T] (int64), right-padded with pad_id."""
    seq_lens: torch.Tensor
    """Tokens per sequence [B] (prompt + response)."""
    prompt_lens: torch.Tensor
    """Prompt tokens per sequence [B]; the response is tokens prompt_len..seq_len-1."""
    ids: tuple[int, ...]
    """Sample id of each sequence, for reordering."""
    token_fields: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-token float fields [B, T], aligned with input_ids."""
    seq_fields: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-sequence fields [B]."""
    pad_id: int = 0
    """Token id used for padding."""

    def __post_init__(self) -> None:
        if self.input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [B, T], got shape {list(self.input_ids.shape)}")
        b, t = self.input_ids.shape
        if self.seq_lens.shape != (b,) or self.prompt_lens.shape != (b,):
            raise ValueError(f"seq_lens and prompt_lens must have shape [{b}]")
        if len(self.ids) != b:
            raise ValueError(f"ids has {len(self.ids)} entries for {b} sequences")
        if b and (int(self.seq_lens.max()) > t or bool((self.prompt_lens > self.seq_lens).any())):
            raise ValueError("every sequence needs prompt_len <= seq_len <= T")
        for key, value in self.token_fields.items():
            if value.shape != (b, t):
                raise ValueError(f"token field {key!r} has shape {list(value.shape)}, need [{b}, {t}]")
        for key, value in self.seq_fields.items():
            if value.shape[:1] != (b,):
                raise ValueError(f"sequence field {key!r} has shape {list(value.shape)}, need [{b}]")

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_lists(cls, sequences: list[list[int]], prompt_lens: list[int], *,
                   ids: list[int] | None = None, pad_id: int = 0) -> SeqBatch:
        """Build from token lists (prompt + response each) and prompt lengths."""
        b = len(sequences)
        t = max((len(s) for s in sequences), default=0)
        input_ids = torch.full((b, t), pad_id, dtype=torch.long)
        for i, s in enumerate(sequences):
            input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return cls(input_ids=input_ids, seq_lens=torch.tensor([len(s) for s in sequences], dtype=torch.long),
                   prompt_lens=torch.tensor(prompt_lens, dtype=torch.long),
                   ids=tuple(ids if ids is not None else range(b)), pad_id=pad_id)

    @property
    def size(self) -> int:
        """Number of sequences."""
        return int(self.input_ids.shape[0])

    @property
    def num_tokens(self) -> int:
        """Real (unpadded) tokens in the batch."""
        return int(self.seq_lens.sum())

    def tokens(self, i: int) -> list[int]:
        """Token ids of sequence i, without padding."""
        return self.input_ids[i, : int(self.seq_lens[i])].tolist()

    def response(self, i: int) -> list[int]:
        """Response token ids of sequence i."""
        return self.input_ids[i, int(self.prompt_lens[i]): int(self.seq_lens[i])].tolist()

    def positions(self) -> torch.Tensor:
        """[B, T] position index of every slot."""
        return torch.arange(self.input_ids.shape[1]).expand_as(self.input_ids)

    def valid_mask(self) -> torch.Tensor:
        """[B, T] True on real tokens."""
        return self.positions() < self.seq_lens[:, None]

    def prompt_mask(self) -> torch.Tensor:
        """[B, T] True on prompt tokens."""
        return self.positions() < self.prompt_lens[:, None]

    def response_mask(self) -> torch.Tensor:
        """[B, T] True on response tokens."""
        return self.valid_mask() & ~self.prompt_mask()

    def with_fields(self, *, token_fields: dict[str, torch.Tensor] | None = None,
                    seq_fields: dict[str, torch.Tensor] | None = None) -> SeqBatch:
        """A copy with fields added or replaced."""
        return SeqBatch(input_ids=self.input_ids, seq_lens=self.seq_lens,
                        prompt_lens=self.prompt_lens, ids=self.ids, pad_id=self.pad_id,
                        token_fields={**self.token_fields, **(token_fields or {})},
                        seq_fields={**self.seq_fields, **(seq_fields or {})})

    # ------------------------------------------------------------------ select / split / merge

    def select(self, index: list[int]) -> SeqBatch:
        """The sequences at `index`, in that order, trimmed to their longest length."""
        idx = torch.tensor(index, dtype=torch.long)
        t = int(self.seq_lens[idx].max()) if index else 0
        return SeqBatch(
            input_ids=self.input_ids[idx, :t].clone(), seq_lens=self.seq_lens[idx].clone(),
            prompt_lens=self.prompt_lens[idx].clone(), ids=tuple(self.ids[i] for i in index),
            token_fields={k: v[idx, :t].clone() for k, v in self.token_fields.items()},
            seq_fields={k: v[idx].clone() for k, v in self.seq_fields.items()}, pad_id=self.pad_id)

    def split_indices(self, n: int, *, unit: int = 1) -> list[list[int]]:
        """Partition sequence indices into n parts balanced by tokens; runs of `unit` stay whole.

        Greedy longest-first onto the lightest part, with equal counts of units per part
        as a tie-break, so parts differ in size by at most one unit where possible.
        """
        if n < 1:
            raise ValueError(f"cannot split a batch into {n} parts")
        if self.size % unit:
            raise ValueError(f"batch of {self.size} sequences does not divide into units of {unit}")
        num_units = self.size // unit
        if num_units < n:
            raise ValueError(f"batch of {num_units} units (of {unit} sequences) cannot split "
                             f"into {n} parts; give at least {n * unit} sequences")
        if n == 1:
            return [list(range(self.size))]
        weights = self.seq_lens.view(num_units, unit).sum(1).tolist()
        order = sorted(range(num_units), key=lambda u: (-weights[u], u))
        cap = -(-num_units // n)
        loads, parts = [0] * n, [[] for _ in range(n)]
        for u in order:
            open_parts = [p for p in range(n) if len(parts[p]) < cap]
            p = min(open_parts, key=lambda q: (loads[q], len(parts[q]), q))
            parts[p].append(u)
            loads[p] += weights[u]
        return [[u * unit + j for u in sorted(part) for j in range(unit)] for part in parts]

    def split(self, n: int, *, unit: int = 1) -> list[SeqBatch]:
        """n sub-batches balanced by tokens (see `split_indices`)."""
        return [self.select(part) for part in self.split_indices(n, unit=unit)]

    @staticmethod
    def concat(batches: list[SeqBatch]) -> SeqBatch:
        """Sequences of every batch, in order, padded to the longest."""
        if not batches:
            raise ValueError("concat needs at least one batch")
        t = max(int(b.input_ids.shape[1]) for b in batches)
        pad_id = batches[0].pad_id

        def pad(x: torch.Tensor, value: float) -> torch.Tensor:
            return torch.nn.functional.pad(x, (0, t - x.shape[1]), value=value)

        keys_t = set(batches[0].token_fields)
        keys_s = set(batches[0].seq_fields)
        for b in batches:
            if set(b.token_fields) != keys_t or set(b.seq_fields) != keys_s:
                raise ValueError("concat: batches carry different fields")
        return SeqBatch(
            input_ids=torch.cat([pad(b.input_ids, pad_id) for b in batches]),
            seq_lens=torch.cat([b.seq_lens for b in batches]),
            prompt_lens=torch.cat([b.prompt_lens for b in batches]),
            ids=tuple(i for b in batches for i in b.ids), pad_id=pad_id,
            token_fields={k: torch.cat([pad(b.token_fields[k], 0.0) for b in batches]) for k in keys_t},
            seq_fields={k: torch.cat([b.seq_fields[k] for b in batches]) for k in keys_s})

    def reorder(self, ids: list[int] | tuple[int, ...]) -> SeqBatch:
        """The sequences in the order of the given sample ids."""
        where = {i: k for k, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in where]
        if missing:
            raise ValueError(f"reorder: sample ids {missing[:5]} are not in the batch")
        return self.select([where[i] for i in ids])

    def sorted_by_id(self) -> SeqBatch:
        """The sequences in ascending sample id."""
        return self.reorder(sorted(self.ids))
