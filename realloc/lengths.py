"""`plan.response_lengths`: the per-sample response-length distribution each generate call is priced with.

- `fixed` (default): every response has data.response_len tokens (max_new_tokens when unset);
- `longtail`: `graph.lengths.LengthDist.longtail(max_new_tokens)`, RLHFuse-like;
- `data`: the dataset's answers (prompts_with_answers), tokenized, plus the EOS token;
- a path to a previous run's metrics.jsonl: the response lengths it logged per generate call
  (`CALL/response_len_hist`), pooled over its iterations.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from graph.errors import UserError
from graph.lengths import LENGTH_SOURCES, LengthDist
from graph.spec import Call, CallKind


class LengthsError(UserError):
    """A `plan.response_lengths` value that names no usable distribution."""


def with_response_lengths(calls: list[Call], source: str, *, exp_dir: Path, data: object) -> list[Call]:
    """`calls` with every generate call's `response_lengths` set from `source` (unchanged for fixed)."""
    if source == "fixed":
        return calls
    out = []
    hist_cache: dict[str, dict[int, int]] | None = None
    for call in calls:
        if call.kind is not CallKind.GENERATE:
            out.append(call)
            continue
        max_new = call.max_new_tokens or call.response_len
        if source == "longtail":
            dist = LengthDist.longtail(max_new)
        elif source == "data":
            dist = LengthDist.from_counts(_answer_lengths(data), max_new, "data")
        else:
            if hist_cache is None:
                hist_cache = _metrics_hist(source, exp_dir)
            if call.name not in hist_cache:
                raise LengthsError(f"plan.response_lengths={source!r}: the run logged no response lengths of call "
                                   f"{call.name!r} (logged: {', '.join(sorted(hist_cache)) or 'none'}); "
                                   "point to a run of the same graph")
            dist = LengthDist.from_counts(hist_cache[call.name], max_new, f"metrics:{call.name}")
        out.append(dataclasses.replace(call, response_lengths=dist))
    return out


def _metrics_hist(source: str, exp_dir: Path) -> dict[str, dict[int, int]]:
    import json

    path = next((p for p in (Path(source), exp_dir / source) if p.is_file()), None)
    if path is None:
        raise LengthsError(f"plan.response_lengths={source!r} is neither one of {', '.join(LENGTH_SOURCES)} nor an "
                           "existing metrics.jsonl; give a previous run's RUN_DIR/metrics.jsonl")
    out: dict[str, dict[int, int]] = {}
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line
        for key, value in record.items():
            if key.endswith("/response_len_hist") and isinstance(value, list):
                hist = out.setdefault(key.rsplit("/", 1)[0], {})
                for length, count in value:
                    hist[int(length)] = hist.get(int(length), 0) + int(count)
    return out


def _answer_lengths(data: object) -> dict[int, int]:
    from runtime.data.records import load_records
    from runtime.data.tokenizer import load_tokenizer

    d = data
    fmt = getattr(d, "format", "")
    if fmt != "prompts_with_answers":
        raise LengthsError(f"plan.response_lengths=data needs answers in the data (data.format=prompts_with_answers, "
                           f"got {fmt!r}); use longtail or a previous run's metrics.jsonl")
    records = load_records(fmt=fmt, path=d.path, generator=d.generator,  # type: ignore[attr-defined]
                           num_records=d.num_records, seed=d.seed)  # type: ignore[attr-defined]
    tok = load_tokenizer(d.tokenizer)  # type: ignore[attr-defined]
    counts: dict[int, int] = {}
    for r in records:
        length = len(tok.encode(str(r.answer))) + 1  # the answer, then EOS
        counts[length] = counts.get(length, 0) + 1
    return counts
