"""Per-iteration metrics of a run: metrics.jsonl, TensorBoard scalars and the curves plot."""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from graph.files import atomic_write


def _clean(value: Any) -> Any:
    """JSON-safe numbers: NaN and infinities become null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class MetricsWriter:
    """Appends one JSON line per iteration to metrics.jsonl (flushed and fsynced)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: Mapping[str, Any]) -> None:
        line = json.dumps(_clean(dict(record)), sort_keys=True)
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def truncate_after(self, iteration: int) -> None:
        """Drop records past `iteration` (used when resuming from an earlier checkpoint)."""
        kept = [r for r in read_metrics(self.path) if int(r.get("iteration", 0)) <= iteration]
        atomic_write(self.path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))


def scalars(record: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """The finite numbers of a metrics record by tag; nested dicts become `outer/inner` tags."""
    out: dict[str, float] = {}
    for key, value in record.items():
        tag = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(scalars(value, tag + "/"))
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            out[tag] = float(value)
    return out


class TensorBoardWriter:
    """Every metrics record as TensorBoard scalars in `root` (step = the record's iteration),
    flushed after each record so a killed run keeps what it logged.

    `purge_step` (a resumed run's first iteration) hides the events a previous attempt
    logged from that step on, as metrics.jsonl's `truncate_after` drops them.
    """

    def __init__(self, root: str | Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # needs the `tensorboard` package

        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(log_dir=str(self.root), purge_step=purge_step)

    def write(self, record: Mapping[str, Any]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        # one event of all the record's scalars: an add_scalar per tag (an event each) took
        # 4.3 ms for 60 tags on rank 0's metrics thread, this 0.4 ms (the same scalars read back)
        step = int(record["iteration"])
        values = [Summary.Value(tag=tag, simple_value=float(value)) for tag, value in scalars(record).items()
                  if tag != "iteration"]
        self._writer.file_writer.add_summary(Summary(value=values), global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a metrics.jsonl (a torn last line is skipped)."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


CURVE_KEYS = ("reward", "accuracy", "kl", "actor_loss", "critic_loss", "loss")
"""Metrics drawn by `plot_curves`, when present."""
_TITLES = {"accuracy": "accuracy (exact match)"}


def moving_average(values: list[float], window: int) -> list[float]:
    """Trailing mean of the last `window` values at each position (fewer at the start)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_curves(records: Iterable[Mapping[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Draw the curves of the keys in CURVE_KEYS over iterations; None when nothing to draw.

    Each panel shows the per-iteration values and, from 20 iterations on, their trailing
    mean over a twentieth of the run, which is what shows a noisy reward rising.
    """
    records = list(records)
    series = {k: [(r["iteration"], r[k]) for r in records if r.get(k) is not None] for k in CURVE_KEYS}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    from matplotlib.figure import Figure  # no pyplot: no global state, so any one thread may draw

    fig = Figure(figsize=(3.6 * len(series), 3.0))
    axes = fig.subplots(1, len(series), squeeze=False)
    for ax, (key, points) in zip(axes[0], series.items()):
        xs, ys = zip(*points)
        if len(xs) < 20:
            ax.plot(xs, ys, marker=".")
        else:
            window = max(2, len(xs) // 20)
            ax.plot(xs, ys, color="tab:blue", alpha=0.3, linewidth=0.8, label="per iteration")
            ax.plot(xs, moving_average(list(ys), window), color="tab:blue", linewidth=2.0,
                    label=f"mean of last {window}")
            ax.legend(fontsize=7, loc="best")
        ax.set_title(_TITLES.get(key, key))
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = Path(path).with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    os.replace(tmp, path)
    return Path(path)


class SerialThread:
    """Runs `handle(item)` for each submitted item, in order, on one background thread.

    `submit` queues an item and returns; `flush` returns once every queued item is handled;
    `close` handles what is queued and stops the thread. The first exception `handle` raises
    stops the handling (later items are dropped), and the next `submit`, `flush` or `close`
    raises it in the caller's thread, as a call made inline would have (e.g. OSError: disk full).
    """

    def __init__(self, handle: Callable[[Any], None], name: str) -> None:
        self._handle = handle
        self._queue: queue.Queue[tuple[Any] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> None:
        self._raise()
        self._queue.put((item,))

    def _loop(self) -> None:
        while True:
            box = self._queue.get()
            try:
                if box is None:
                    return
                if self._error is None:
                    self._handle(box[0])
            except BaseException as exc:  # noqa: BLE001 -- raised in the caller's thread (see _raise)
                self._error = exc
            finally:
                self._queue.task_done()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def flush(self) -> None:
        """Block until every submitted item is handled; raises what handling one raised."""
        self._queue.join()
        self._raise()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        self._raise()


class CurvePlotter:
    """Redraws curves.png on a background thread, so the run does not wait for matplotlib.

    A redraw costs ~0.5 s of one core; drawn inline on rank 0 it stalled every rank at the
    next iteration's first collective. `request` hands over a snapshot of the records and
    returns at once; a request made while a redraw is running replaces any waiting one (only
    the newest snapshot is drawn). `close` draws the last request and waits for it.
    """

    def __init__(self, path: str | Path, title: str = "") -> None:
        self.path, self.title = Path(path), title
        self._pending: list[Mapping[str, Any]] | None = None
        self._closing = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name="curves", daemon=True)
        self._thread.start()

    def request(self, records: Iterable[Mapping[str, Any]]) -> None:
        with self._cond:
            self._pending = list(records)
            self._cond.notify()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._closing:
                    self._cond.wait()
                records, self._pending = self._pending, None
                if records is None:  # closing, nothing left to draw
                    return
            try:
                plot_curves(records, self.path, title=self.title)
            except Exception as exc:  # a bug, not the run's: the run goes on without its picture
                print(f"realloc: bug: redrawing {self.path} failed ({type(exc).__name__}: {exc}); "
                      "training goes on", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Draw the newest requested snapshot (if any) and stop."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()
