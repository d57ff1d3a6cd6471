"""Print an estimate with its breakdown by term (plain text; rich renders the same rows)."""

from __future__ import annotations

from cost_model.hardware import GiB
from cost_model.provider import CallEstimate, MoveEstimate


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.3f} s"
    return f"{seconds * 1e3:.3f} ms"


def estimate_rows(estimate: CallEstimate) -> list[tuple[str, str, str]]:
    """(term, value, share of its total) rows: time terms, then memory terms."""
    rows = []
    for key, value in estimate.breakdown.items():
        if key.endswith("_s"):
            share = value / estimate.time_s if estimate.time_s > 0 else 0.0
            rows.append((key[:-2], _fmt_time(value), f"{share:6.1%}"))
    rows.append(("= time", _fmt_time(estimate.time_s), ""))
    for key, value in estimate.breakdown.items():
        if key.endswith("_bytes"):
            share = value / estimate.peak_bytes if estimate.peak_bytes > 0 else 0.0
            rows.append((key[:-6], f"{value / GiB:.2f} GiB", f"{share:6.1%}"))
    rows.append(("= peak / device", f"{estimate.peak_bytes / GiB:.2f} GiB", ""))
    rows.append(("resident / device", f"{estimate.resident_bytes / GiB:.2f} GiB", ""))
    return rows


def format_estimate(estimate: CallEstimate, title: str = "") -> str:
    """Plain-text table of an estimate's terms, with the verdict."""
    rows = estimate_rows(estimate)
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = [title] if title else []
    for term, value, share in rows:
        lines.append(f"  {term:<{w0}}  {value:>{w1}}  {share}".rstrip())
    verdict = "feasible" if estimate.feasible else f"INFEASIBLE: {estimate.reason}"
    lines.append(f"  {verdict}")
    return "\n".join(lines)


def format_move(move: MoveEstimate, title: str = "") -> str:
    """One-line summary of a reallocation or data move."""
    head = f"{title}: " if title else ""
    return (f"{head}{_fmt_time(move.time_s)}, {move.bytes_total / GiB:.3f} GiB sent "
            f"({move.bytes_inter_node / GiB:.3f} GiB inter-node), busiest rank "
            f"{move.busiest_rank_bytes / GiB:.3f} GiB")


def print_estimate(estimate: CallEstimate, title: str = "", *, rich: bool = False) -> None:
    """Print the breakdown, as a rich table when `rich` is True and rich is installed."""
    if rich:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:  # pragma: no cover - rich is a dependency, but stay usable without it
            rich = False
        else:
            table = Table(title=title or None)
            for col in ("term", "value", "share"):
                table.add_column(col, justify="left" if col == "term" else "right")
            for row in estimate_rows(estimate):
                table.add_row(*row)
            Console().print(table)
            Console().print("feasible" if estimate.feasible else f"INFEASIBLE: {estimate.reason}")
            return
    print(format_estimate(estimate, title))
