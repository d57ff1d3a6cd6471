"""Per-sample response lengths of a generate call, as a distribution the cost model prices (pure).

A static batch decodes until its longest response ends, so a generate call's time follows
the *expected longest* response of each batch a device decodes, not the mean. With a
long-tailed distribution (most answers short, a few running to max_new_tokens, as RLHFuse
measured) the two differ several-fold, and that gap is what streaming finished samples
to the next calls recovers.

`LengthDist` holds P(length = l) for l = 1 .. max_new_tokens. Sources:
- `fixed(n)`: every response has n tokens (the default: today's pricing);
- `longtail(max_new)`: a discretised log-normal (median max_new / 8, sigma 1), the mass past
  max_new_tokens piled on it (truncated responses);
- `from_counts({length: count})`: measured lengths: a previous run's metrics.jsonl
  (`{call}/response_len_hist`) or the dataset's answers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LENGTH_SOURCES = ("fixed", "longtail", "data")
"""Named sources of `plan.response_lengths` (or a path to a previous run's metrics.jsonl)."""


@dataclass(frozen=True, kw_only=True)
class LengthDist:
    """Distribution of a generate call's response lengths in tokens."""

    probs: tuple[float, ...]
    """probs[l - 1] = P(length = l), for l = 1 .. len(probs) (= max_new_tokens); sums to 1."""
    source: str = ""
    """Where the distribution came from (shown with the plan)."""

    def __post_init__(self) -> None:
        if not self.probs:
            raise ValueError("a length distribution needs at least one length")
        if any(p < 0 for p in self.probs) or abs(sum(self.probs) - 1.0) > 1e-6:
            raise ValueError(f"length probabilities must be >= 0 and sum to 1, got sum {sum(self.probs):.6g}")

    @property
    def max_len(self) -> int:
        """The longest possible response."""
        return len(self.probs)

    def mean(self) -> float:
        """Expected response length."""
        return sum((i + 1) * p for i, p in enumerate(self.probs))

    def cdf(self, length: int) -> float:
        """P(response length <= length)."""
        if length <= 0:
            return 0.0
        return min(1.0, sum(self.probs[:length]))

    def expected_max(self, n: float) -> float:
        """Expected longest response of a static batch of n samples: sum over l of P(max >= l)."""
        if n <= 0:
            return 0.0
        total, acc = 0.0, 0.0
        for p in self.probs:
            total += 1.0 - min(1.0, acc) ** n
            acc += p
        return total

    def finished_by(self, length: float) -> float:
        """Fraction of samples whose response has at most `length` tokens (linear between lengths)."""
        lo = math.floor(length)
        frac = length - lo
        return self.cdf(lo) + frac * (self.cdf(lo + 1) - self.cdf(lo))

    @classmethod
    def fixed(cls, length: int, source: str = "fixed") -> LengthDist:
        """Every response has `length` tokens."""
        if length < 1:
            raise ValueError(f"a fixed response length must be >= 1, got {length}")
        return cls(probs=(0.0,) * (length - 1) + (1.0,), source=source)

    @classmethod
    def longtail(cls, max_new_tokens: int, *, median_frac: float = 0.125, sigma: float = 1.0) -> LengthDist:
        """A discretised log-normal with median `median_frac` x max_new_tokens; lengths past
        max_new_tokens are truncated to it (RLHFuse's long tail: most short, a few at the cap)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        mu = math.log(max(median_frac * max_new_tokens, 1.0))

        def cdf(x: float) -> float:
            return 0.5 * (1.0 + math.erf((math.log(x) - mu) / (sigma * math.sqrt(2.0)))) if x > 0 else 0.0

        probs = [cdf(length + 0.5) - cdf(length - 0.5) for length in range(1, max_new_tokens + 1)]
        probs[0] += cdf(0.5)
        probs[-1] += 1.0 - cdf(max_new_tokens + 0.5)
        total = sum(probs)
        return cls(probs=tuple(p / total for p in probs), source="longtail")

    @classmethod
    def from_counts(cls, counts: Mapping[int, int] | Iterable[tuple[int, int]], max_new_tokens: int,
                    source: str) -> LengthDist:
        """Measured lengths ({length: count}); lengths are clipped to 1 .. max_new_tokens."""
        items = counts.items() if isinstance(counts, Mapping) else counts
        hist = [0.0] * max_new_tokens
        for length, count in items:
            hist[min(max(int(length), 1), max_new_tokens) - 1] += float(count)
        total = sum(hist)
        if total <= 0:
            raise ValueError(f"{source}: no response lengths to build a distribution from")
        return cls(probs=tuple(h / total for h in hist), source=source)
