"""Training data: dataset files and the built-in generated tasks. Pure Python.

Files (`read_dataset`): JSONL (read line by line here, so errors name the line), and JSON,
CSV, parquet or a `datasets` saved directory, read with the `datasets` library
(`runtime.data.files`). Record formats (graph.dataset_keys owns them and the keys each feeds):

| format | fields |
|---|---|
| prompts | prompt |
| prompts_with_answers | prompt, answer |
| prompt_answer | prompt, answer |
| preference | prompt, chosen, rejected |

The prompt column is `prompt`, or the one `data.prompt_key` names; it holds a string or a
list of chat messages (`{"role": ..., "content": ...}`). Every other column of a row travels
with its record (`Record.columns`) to user reward functions.

The built-in generator `arithmetic` makes small verifiable problems ("12+7=" -> "19"):
prompts with answers for RL, prompt/answer pairs for SFT, and chosen/rejected pairs
(the right answer against a near miss) for reward modelling and DPO.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.dataset_keys import dataset_format
from graph.errors import UserError
from graph.registry import Registry


class DataError(UserError):
    """A dataset a user gave cannot be read: names the file, line and field, and the fix."""


@dataclass(frozen=True, kw_only=True)
class Record:
    """One training example; unused fields are empty."""

    index: int
    """Position in the dataset (stable sample id)."""
    prompt: Any
    """The prompt: a string, or a list of chat messages ({"role", "content"} dicts)."""
    answer: str = ""
    """Reference answer (verifiable tasks, SFT targets)."""
    chosen: str = ""
    """Preferred response (preference data)."""
    rejected: str = ""
    """Dispreferred response (preference data)."""
    columns: Mapping[str, Any] = field(default_factory=dict)
    """The row's columns other than the prompt (reward functions receive them)."""
    prompt_ids: tuple[int, ...] | None = None
    """The tokenised prompt once fitted to data.max_prompt_len (runtime.data.prompts); None: not yet."""


def _check_format(fmt: str) -> tuple[str, ...]:
    """The string fields records of format `fmt` need (graph.dataset_keys owns the formats)."""
    return dataset_format(fmt).fields


def _jsonl_rows(p: Path) -> list[tuple[str, Any]]:
    rows = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
            rows.append((f"{p}:{lineno}", obj))
    return rows


def is_messages(value: Any) -> bool:
    """Whether `value` is a list of chat messages: dicts with string `role` and `content`."""
    return (isinstance(value, list | tuple) and len(value) > 0
            and all(isinstance(m, Mapping) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in value))


def _record(where: str, obj: Any, index: int, fmt: str, fields: tuple[str, ...], prompt_key: str) -> Record:
    if not isinstance(obj, Mapping):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    values: dict[str, Any] = {}
    for name in fields:
        key = prompt_key if name == "prompt" else name
        if key not in obj or obj[key] is None:
            hint = " (set data.prompt_key to the prompt's column)" if name == "prompt" else ""
            raise DataError(f"{where}: missing field {key!r} (format {fmt!r} needs "
                            f"{', '.join(prompt_key if f == 'prompt' else f for f in fields)}){hint}")
        value = obj[key]
        if name == "prompt" and not isinstance(value, str):
            if not is_messages(value):
                raise DataError(f"{where}: field {key!r} must be a string or a list of chat messages "
                                f"{{role, content}}, got {type(value).__name__}")
            value = [{"role": m["role"], "content": m["content"]} for m in value]
        elif name == "answer" and fmt == "prompts_with_answers" and isinstance(value, int | float) \
                and not isinstance(value, bool):
            value = str(value)
        elif name != "prompt" and not isinstance(value, str):
            raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
        values[name] = value
    columns = {k: v for k, v in obj.items() if k != prompt_key}
    return Record(index=index, columns=columns, **values)


def read_dataset(path: str | Path, fmt: str, *, prompt_key: str = "prompt") -> list[Record]:
    """Read a dataset file (JSONL, JSON, CSV, parquet) or a `datasets` saved directory,
    naming the file, the line or row, and the field of any bad record."""
    fields = _check_format(fmt)
    p = Path(path)
    if not p.exists():
        raise DataError(f"dataset {str(p)!r} does not exist; set data.path to a JSONL, JSON, CSV or "
                        "parquet file or a `datasets` saved directory")
    if p.is_file() and p.suffix == ".jsonl":
        rows = _jsonl_rows(p)
    else:
        # the `datasets` library, imported only when needed
        from runtime.data.files import read_rows

        rows = read_rows(p)
    if fmt not in ("prompts", "prompts_with_answers") and prompt_key != "prompt":
        raise DataError(f"data.prompt_key={prompt_key!r} applies to the formats prompts and "
                        f"prompts_with_answers, not {fmt!r}")
    records = [_record(where, obj, i, fmt, fields, prompt_key) for i, (where, obj) in enumerate(rows)]
    if not records:
        raise DataError(f"dataset {str(p)!r} has no records")
    return records


def read_jsonl(path: str | Path, fmt: str) -> list[Record]:
    """Read a JSONL dataset, naming the line and field of any bad record."""
    return read_dataset(path, fmt)


def write_jsonl(records: Sequence[Record], path: str | Path, fmt: str) -> Path:
    """Write records in format `fmt` (the inverse of read_jsonl)."""
    fields = _check_format(fmt)
    p = Path(path)
    with p.open("w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({k: getattr(r, k) for k in fields}) + "\n")
    return p


# --------------------------------------------------------------------------- generators

Generator = Callable[[str, int, int], list[Record]]
GENERATORS: Registry[Generator] = Registry("data generator", key="data.generator", error=DataError)
"""Built-in generator name -> fn(format, num_records, seed) -> records."""


def register_generator(name: str) -> Callable[[Generator], Generator]:
    """Decorator: register a built-in data generator."""
    return GENERATORS.register(name)


def generate(name: str, fmt: str, num_records: int, seed: int) -> list[Record]:
    """Records from built-in generator `name`."""
    _check_format(fmt)
    fn = GENERATORS.get(name)
    if num_records < 1:
        raise DataError(f"data.num_records must be >= 1, got {num_records}")
    return fn(fmt, num_records, seed)


def _arithmetic_records(fmt: str, num_records: int, seed: int, *, max_value: int) -> list[Record]:
    """Sums and differences of two numbers below 10 whose value is at most `max_value`."""
    rng = random.Random(seed)
    out = []
    for i in range(num_records):
        while True:
            a, b = rng.randrange(10), rng.randrange(10)
            op = rng.choice("+-")
            if op == "-" and b > a:
                a, b = b, a
            value = a + b if op == "+" else a - b
            if value <= max_value:
                break
        prompt, answer = f"{a}{op}{b}=", str(value)
        if fmt == "preference":
            near = (value - 2, value - 1, value + 1, value + 2)
            wrong = rng.choice([v for v in near if v >= 0 and len(str(v)) <= len(str(max_value))])
            out.append(Record(index=i, prompt=prompt, chosen=answer, rejected=str(wrong),
                              columns={"chosen": answer, "rejected": str(wrong)}))
        else:
            out.append(Record(index=i, prompt=prompt, answer=answer, columns={"answer": answer}))
    return out


@register_generator("arithmetic")
def arithmetic(fmt: str, num_records: int, seed: int) -> list[Record]:
    """Sums and differences of two numbers below 10 ("3+4=" -> "7", "9+8=" -> "17")."""
    return _arithmetic_records(fmt, num_records, seed, max_value=18)


@register_generator("arithmetic_1digit")
def arithmetic_1digit(fmt: str, num_records: int, seed: int) -> list[Record]:
    """Like `arithmetic`, with one-digit answers only ("3+4=" -> "7"; "9+8=" never appears)."""
    return _arithmetic_records(fmt, num_records, seed, max_value=9)


def load_records(*, fmt: str, path: str | None, generator: str | None, num_records: int,
                 seed: int, prompt_key: str = "prompt") -> list[Record]:
    """The experiment's records: from `path` if given, else from `generator`."""
    if path is not None:
        return read_dataset(path, fmt, prompt_key=prompt_key)
    if generator is None:
        raise DataError("data: set data.path to a dataset file or data.generator to a built-in generator")
    return generate(generator, fmt, num_records, seed)


def epoch_order(num_records: int, seed: int, epoch: int) -> list[int]:
    """A reproducible shuffle of record indices for one epoch."""
    order = list(range(num_records))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def batch_at(num_records: int, batch_size: int, seed: int, step: int) -> list[int]:
    """Record indices of batch number `step` of the endless epoch-by-epoch stream `batches`
    yields (a pure function of step, so a resumed run needs no saved position)."""
    if batch_size > num_records:
        raise DataError(f"batch of {batch_size} records exceeds the {num_records} records of the dataset; "
                        "give more records or a smaller batch")
    per_epoch = num_records // batch_size
    epoch, pos = divmod(step, per_epoch)
    return epoch_order(num_records, seed, epoch)[pos * batch_size:(pos + 1) * batch_size]


def batches(num_records: int, batch_size: int, seed: int, start: int = 0) -> Iterator[list[int]]:
    """Index batches forever, epoch after epoch, from batch number `start` (for resume)."""
    if batch_size > num_records:
        raise DataError(f"graph.batch_size={batch_size} exceeds the {num_records} records of the dataset; "
                        "give more records (data.num_records) or a smaller graph.batch_size")
    per_epoch = num_records // batch_size
    step = start
    while True:
        epoch, pos = divmod(step, per_epoch)
        order = epoch_order(num_records, seed, epoch)
        yield order[pos * batch_size:(pos + 1) * batch_size]
        step += 1
