"""What the CLI shows: a progress bar and one line per iteration while a run trains.

The workers write metrics.jsonl; the launching process follows that file and prints,
so the console never interleaves output from several ranks.

`make_console` is the one way the CLI builds a rich Console: on a terminal it wraps to the
terminal's width; when output goes to a file, a pipe, CI or `nohup`, rich would wrap every
line at 80 columns, so there text lines do not wrap at all (one record stays one line for
grep) and tables get `LOG_WIDTH` columns.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from runtime.rundir.metrics import read_metrics

LOG_WIDTH = 160
"""Width of tables and rules when the output is not a terminal (text lines never wrap there)."""


def make_console(*, stderr: bool = False) -> Console:
    """A Console that wraps on a terminal and never wraps anywhere else (logs, pipes, CI)."""
    console = Console(highlight=False, stderr=stderr)
    if console.is_terminal:
        return console
    return Console(highlight=False, stderr=stderr, width=LOG_WIDTH, soft_wrap=True)


def format_line(record: Mapping[str, Any]) -> str:
    """One console line: reward, KL, losses, per-call time and reallocation time."""
    parts = [f"it {record.get('iteration', '?'):>4}"]
    for key, label, fmt in (("reward", "reward", "{:+.3f}"), ("accuracy", "acc", "{:.3f}"), ("kl", "kl", "{:.4f}"),
                            ("actor_loss", "actor", "{:+.4f}"), ("critic_loss", "critic", "{:.4f}"),
                            ("loss", "loss", "{:.4f}")):
        value = record.get(key)
        if value is not None:
            parts.append(f"{label} {fmt.format(value)}")
    calls = record.get("call_time_s") or {}
    if calls:
        parts.append("calls " + " ".join(f"{name}={t * 1e3:.0f}ms" for name, t in calls.items()))
    realloc = record.get("realloc_time_s")
    if realloc is not None:
        parts.append(f"realloc {realloc * 1e3:.0f}ms/{record.get('realloc_bytes', 0) / 2**20:.1f}MiB")
    if record.get("iter_time_s") is not None:
        parts.append(f"iter {record['iter_time_s']:.2f}s")
    return " | ".join(parts)


class MetricsFollower:
    """Follows metrics.jsonl in a thread, printing each new record under a progress bar."""

    def __init__(self, path: str | Path, total: int, *, start: int = 0, interval_s: float = 0.25,
                 console: Console | None = None) -> None:
        self.path = Path(path)
        self.console = console
        self.total = total
        self.start_at = start
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.seen: list[dict[str, Any]] = []

    def __enter__(self) -> MetricsFollower:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        console = self.console or make_console()
        columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("starting workers and building engines", total=self.total,
                                     completed=self.start_at)
            while True:
                stopping = self._stop.wait(self.interval_s)
                records = read_metrics(self.path)
                for record in records[len(self.seen):]:
                    if int(record.get("iteration", 0)) <= self.start_at:
                        continue
                    progress.console.print(format_line(record), markup=False)
                    progress.update(task, completed=int(record.get("iteration", 0)), description="training")
                self.seen = records
                if stopping:
                    break
