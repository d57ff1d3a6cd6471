"""Training data: JSONL datasets and the built-in generated tasks. Pure Python.

Record formats (one JSON object per line; graph.dataset_keys owns them and the keys each feeds):

| format | fields |
|---|---|
| prompts | prompt |
| prompts_with_answers | prompt, answer |
| prompt_answer | prompt, answer |
| preference | prompt, chosen, rejected |

The built-in generator `arithmetic` makes small verifiable problems ("12+7=" -> "19"):
prompts with answers for RL, prompt/answer pairs for SFT, and chosen/rejected pairs
(the right answer against a near miss) for reward modelling and DPO.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

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
    prompt: str
    """The prompt text."""
    answer: str = ""
    """Reference answer (verifiable tasks, SFT targets)."""
    chosen: str = ""
    """Preferred response (preference data)."""
    rejected: str = ""
    """Dispreferred response (preference data)."""


def _check_format(fmt: str) -> tuple[str, ...]:
    """The string fields records of format `fmt` need (graph.dataset_keys owns the formats)."""
    return dataset_format(fmt).fields


def read_jsonl(path: str | Path, fmt: str) -> list[Record]:
    """Read a JSONL dataset, naming the line and field of any bad record."""
    fields = _check_format(fmt)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"dataset {str(p)!r} does not exist; set data.path to a JSONL file")
    records = []
    with p.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{p}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            for name in fields:
                if name not in obj:
                    raise DataError(f"{p}:{lineno}: missing field {name!r} (format {fmt!r} needs {', '.join(fields)})")
                if not isinstance(obj[name], str):
                    raise DataError(f"{p}:{lineno}: field {name!r} must be a string, got {type(obj[name]).__name__}")
            records.append(Record(index=len(records), **{k: obj[k] for k in fields}))
    if not records:
        raise DataError(f"dataset {str(p)!r} has no records")
    return records


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
            out.append(Record(index=i, prompt=prompt, chosen=answer, rejected=str(wrong)))
        else:
            out.append(Record(index=i, prompt=prompt, answer=answer))
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
                 seed: int) -> list[Record]:
    """The experiment's records: from `path` if given, else from `generator`."""
    if path is not None:
        return read_jsonl(path, fmt)
    if generator is None:
        raise DataError("data: set data.path to a JSONL file or data.generator to a built-in generator")
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
