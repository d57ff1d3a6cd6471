"""Response-length distributions, checked by hand and by brute force."""

import itertools
import math

import pytest

from graph.lengths import LengthDist


def test_expected_max_by_hand():
    two = LengthDist(probs=(0.5, 0.5))
    # max of two draws from {1, 2}: 1 only if both are 1 (1/4)
    assert two.expected_max(2) == pytest.approx(1 * 0.25 + 2 * 0.75)
    assert two.expected_max(1) == pytest.approx(two.mean()) == pytest.approx(1.5)
    assert LengthDist.fixed(7).expected_max(64) == pytest.approx(7.0)


def test_expected_max_by_brute_force():
    dist = LengthDist(probs=(0.6, 0.1, 0.0, 0.2, 0.1))
    for n in (1, 2, 3):
        brute = sum(max(ls) * math.prod(dist.probs[length - 1] for length in ls)
                    for ls in itertools.product(range(1, 6), repeat=n))
        assert dist.expected_max(n) == pytest.approx(brute)


def test_longtail_is_mostly_short_with_a_tail_at_the_cap():
    dist = LengthDist.longtail(64)
    assert sum(dist.probs) == pytest.approx(1.0)
    assert dist.cdf(8) == pytest.approx(0.5, abs=0.06)  # median ~ 64 / 8
    assert dist.probs[-1] > 0.01  # truncated responses pile up at max_new_tokens
    assert dist.expected_max(32) > 3 * dist.mean()  # a static batch of 32 waits for its tail


def test_from_counts_and_finished_by():
    dist = LengthDist.from_counts({1: 3, 4: 1, 100: 0}, 4, "t")
    assert dist.probs == (0.75, 0.0, 0.0, 0.25)
    assert dist.finished_by(1) == pytest.approx(0.75) and dist.finished_by(4) == pytest.approx(1.0)
    assert dist.finished_by(3.5) == pytest.approx(0.875)
    with pytest.raises(ValueError, match="no response lengths"):
        LengthDist.from_counts({}, 4, "empty")
    with pytest.raises(ValueError, match="sum to 1"):
        LengthDist(probs=(0.5, 0.4))
