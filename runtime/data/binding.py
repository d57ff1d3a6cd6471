"""Binding graph keys to batches: dataset records in, call results out.

A data key holds one of two payloads:
- a `SeqBatch` for the roles that are sequences (prompts, sequences, pairs), carrying
  no fields, so that a consumer only sees the fields its inputs name;
- a `Field` for the roles that are values over those sequences (log-probs, values,
  rewards, answers), with the sample ids it is aligned to.

A call's input keys bind to its interface's roles by position (graph.catalog): the
first input is the sequences the call runs on; every further input is attached to them
as the field its role names, except a further sequence role (ptx), which is a batch of
its own that the interface receives in `CallContext.side_inputs` (see `side_inputs`). A call's output keys bind to the interface's output roles
the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from graph.catalog import get_interface
from graph.dataset_keys import PTX_FORMATS, PTX_KEY
from graph.roles import SEQUENCE_ROLES, SIDE_FIELD_ROLES, input_roles
from graph.spec import Call
from runtime.data.batch import SeqBatch
from runtime.data.records import Record
from runtime.data.tokenizer import Tokenizer

_FIELD_NAMES = {"answers": "answer"}
"""Batch field name of a role, where it differs from the role (the rules read `answer`)."""


@dataclass(frozen=True)
class Field:
    """Per-token ([B, T]) or per-sequence ([B]) values, aligned with sample `ids`."""

    per_token: bool
    values: torch.Tensor
    ids: tuple[int, ...]

    def aligned(self, ids: Sequence[int]) -> torch.Tensor:
        """The values in the order of `ids`.

        `ids` are the same samples, or the samples generated from them: a prompt with id
        p that was sampled n times gives samples p * n + k (k < n), which take p's value.
        """
        if tuple(ids) == self.ids:
            return self.values
        where = {sid: i for i, sid in enumerate(self.ids)}
        group = len(ids) // len(self.ids) if self.ids and len(ids) % len(self.ids) == 0 else 1
        index = []
        for sid in ids:
            if sid in where and group == 1:
                index.append(where[sid])
            elif sid // group in where:
                index.append(where[sid // group])
            else:
                raise ValueError(f"field lacks sample id {sid}: keys of one call must cover the same samples")
        return self.values[index]


Payload = SeqBatch | Field


def bare(batch: SeqBatch) -> SeqBatch:
    """The sequences alone, without fields."""
    return SeqBatch(input_ids=batch.input_ids, seq_lens=batch.seq_lens, prompt_lens=batch.prompt_lens,
                    ids=batch.ids, pad_id=batch.pad_id)


# --------------------------------------------------------------------------- dataset keys


def _answer_value(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def dataset_payloads(fmt: str, records: Sequence[Record], ids: Sequence[int],
                     tok: Tokenizer) -> dict[str, Payload]:
    """Payloads of the dataset keys of format `fmt` for one batch of records."""
    bos, eos = [tok.bos_id], [tok.eos_id]
    ids = tuple(ids)
    if fmt in ("prompts", "prompts_with_answers"):  # fitted prompts carry their ids (runtime.data.prompts)
        prompts = [list(r.prompt_ids) if r.prompt_ids is not None else bos + tok.encode(r.prompt) for r in records]
        out: dict[str, Payload] = {"prompts": SeqBatch.from_lists(prompts, [len(p) for p in prompts], ids=list(ids),
                                                                 pad_id=tok.pad_id)}
        if fmt == "prompts_with_answers":
            values = [_answer_value(r.answer) for r in records]
            if all(v is not None for v in values):
                out["answers"] = Field(False, torch.tensor(values, dtype=torch.float64), ids)
            else:  # non-numeric answers: the rule checks the prompt itself
                out["answers"] = Field(False, torch.full((len(records),), float("nan"), dtype=torch.float64), ids)
        return out
    if fmt == "prompt_answer":
        prompts = [bos + tok.encode(r.prompt) for r in records]
        seqs = [p + tok.encode(r.answer) + eos for p, r in zip(prompts, records)]
        return {"prompt_answer": SeqBatch.from_lists(seqs, [len(p) for p in prompts], ids=list(ids), pad_id=tok.pad_id)}
    if fmt == "preference":
        seqs, lens, pair_ids = [], [], []
        for sid, r in zip(ids, records):
            prompt = bos + tok.encode(r.prompt)
            for k, response in enumerate((r.chosen, r.rejected)):
                seqs.append(prompt + tok.encode(response) + eos)
                lens.append(len(prompt))
                pair_ids.append(2 * sid + k)
        return {"pairs": SeqBatch.from_lists(seqs, lens, ids=pair_ids, pad_id=tok.pad_id)}
    raise ValueError(f"unknown data format {fmt!r}")


def ptx_payloads(fmt: str, records: Sequence[Record], ids: Sequence[int],
                 tok: Tokenizer) -> dict[str, Payload]:
    """Payload of the `ptx` key: the ptx records as prompt/answer sequences (graph.dataset_keys)."""
    if fmt not in PTX_FORMATS:
        raise ValueError(f"data.ptx.format: {fmt!r} is not one of {', '.join(PTX_FORMATS)}")
    return {PTX_KEY: dataset_payloads(fmt, records, ids, tok)["prompt_answer"]}


# --------------------------------------------------------------------------- calls


def assemble_inputs(call: Call, payloads: Mapping[str, Payload]) -> SeqBatch:
    """The batch a call runs on: its first input's sequences with the other inputs attached."""
    base = payloads[call.inputs[0]]
    if not isinstance(base, SeqBatch):
        raise ValueError(f"call {call.name!r}: input {call.inputs[0]!r} must be sequences, got a field")
    token_fields: dict[str, torch.Tensor] = {}
    seq_fields: dict[str, torch.Tensor] = {}
    for key, role in zip(call.inputs[1:], input_roles(call.interface, call.inputs)[1:]):
        if role in SEQUENCE_ROLES or role in SIDE_FIELD_ROLES:  # see side_inputs, side_fields
            continue
        payload = payloads[key]
        if not isinstance(payload, Field):
            raise ValueError(f"call {call.name!r}: input {key!r} (role {role}) must be a field, got sequences")
        name = _FIELD_NAMES.get(role, role)
        values = payload.aligned(base.ids)
        if payload.per_token:
            t = base.input_ids.shape[1]
            values = values[:, :t] if values.shape[1] >= t else torch.nn.functional.pad(values, (0, t - values.shape[1]))
            token_fields[name] = values
        else:
            seq_fields[name] = values
    return base.with_fields(token_fields=token_fields, seq_fields=seq_fields)


def _side(call: Call, payloads: Mapping[str, Payload], roles: Any, kind: type, what: str) -> dict[str, Any]:
    """A call's inputs after the first whose role is in `roles`, by role; each must be a `kind`."""
    out: dict[str, Any] = {}
    for key, role in zip(call.inputs[1:], input_roles(call.interface, call.inputs)[1:]):
        if role not in roles:
            continue
        payload = payloads[key]
        if not isinstance(payload, kind):
            raise ValueError(f"call {call.name!r}: input {key!r} (role {role}) must be {what}")
        out[role] = payload
    return out


def side_inputs(call: Call, payloads: Mapping[str, Payload]) -> dict[str, SeqBatch]:
    """A call's sequence inputs after the first, by role (ptx): batches the interface runs
    besides its main batch (CallContext.side_inputs)."""
    return _side(call, payloads, SEQUENCE_ROLES, SeqBatch, "sequences, got a field")


def side_fields(call: Call, payloads: Mapping[str, Payload]) -> dict[str, Field]:
    """A call's value inputs over other sequences than its first input, by role
    (SIDE_FIELD_ROLES: pool_scores, the reward model's scores of the rehearsal pool)."""
    return _side(call, payloads, SIDE_FIELD_ROLES, Field, "a field, got sequences")


def extract_outputs(call: Call, result: Any) -> dict[str, Payload]:
    """Payloads of a call's output keys from the interface's result."""
    if not call.outputs:
        return {}
    info = get_interface(call.interface)
    if not isinstance(result, SeqBatch):
        raise ValueError(f"call {call.name!r}: interface {call.interface!r} returned no batch for its outputs")
    out: dict[str, Payload] = {}
    for key, role in zip(call.outputs, info.outputs):
        if role in SEQUENCE_ROLES:
            out[key] = bare(result)
        elif role in result.token_fields:
            out[key] = Field(True, result.token_fields[role], result.ids)
        elif role in result.seq_fields:
            out[key] = Field(False, result.seq_fields[role], result.ids)
        else:
            raise ValueError(f"call {call.name!r}: interface {call.interface!r} produced no {role!r} for key {key!r}")
    return out
