"""The validation's statistics: Spearman ranks worked by hand, relative errors, the summary."""

from __future__ import annotations

import pytest

from realloc.bench.validate_cost_model import (
    compare,
    measured_times,
    ranks,
    relative_error,
    spearman,
)


def test_ranks_share_ties() -> None:
    assert ranks([0.3, 0.1, 0.2]) == [3.0, 1.0, 2.0]
    # the two 0.2s take positions 2 and 3: both get 2.5
    assert ranks([0.2, 0.1, 0.2, 0.9]) == [2.5, 1.0, 2.5, 4.0]


def test_spearman_by_hand() -> None:
    assert spearman([1, 2, 3, 4, 5], [10, 20, 30, 40, 50]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    # ranks (1,2,3,4,5) vs (2,1,4,3,5): sum d^2 = 4, rho = 1 - 6*4 / (5*24) = 0.8
    assert spearman([0.1, 0.2, 0.3, 0.4, 0.5], [0.25, 0.1, 0.9, 0.5, 1.0]) == pytest.approx(0.8)
    # with a tie: ranks x (1, 2.5, 2.5, 4), y (1, 2, 3, 4); Pearson of the ranks = 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / (4.5 * 5) ** 0.5)
    with pytest.raises(ValueError, match="same length"):
        spearman([1, 2], [1])


def test_medians_skip_warmup_and_errors_per_kind() -> None:
    from realloc.experiment import load_experiment

    history = [{"call_time_s": {"actor_gen": 9.0, "actor_train": 9.0}, "realloc_time_s": 9.0, "iter_time_s": 9.0}]
    history += [{"call_time_s": {"actor_gen": g, "actor_train": 0.2}, "realloc_time_s": 0.0, "iter_time_s": t}
                for g, t in ((0.1, 1.0), (0.3, 3.0), (0.2, 2.0))]
    measured = measured_times(history, warmup=1)
    assert measured == {"calls": {"actor_gen": 0.2, "actor_train": 0.2}, "realloc": 0.0, "iteration": 2.0}
    assert relative_error(0.3, 0.2) == pytest.approx(0.5)
    graph = load_experiment("grpo_tiny", []).graph
    results = [{"experiment": "grpo_tiny", "plan": p, "measured": measured,
                "predicted": {"calls": {"actor_gen": pg, "actor_train": 0.25, "ref_inf": 0.0, "reward_inf": 0.0},
                              "realloc": 0.0, "iteration": it}}
               for p, pg, it in (("a", 0.1, 1.0), ("b", 0.3, 4.0))]
    for r in results:
        r["measured"] = {**r["measured"], "iteration": {"a": 1.5, "b": 3.0}[r["plan"]]}
    summary = compare(results, {"grpo_tiny": graph})
    assert summary["per_kind"]["generate"] == {"count": 2, "median": pytest.approx(0.5), "worst": pytest.approx(0.5)}
    assert summary["per_kind"]["train"]["worst"] == pytest.approx(0.25)
    assert summary["per_kind"]["realloc"]["count"] == 0  # no plan moved weights
    assert summary["spearman"] == pytest.approx(1.0)
    # iteration errors: |1 - 1.5| / 1.5 and |4 - 3| / 3
    assert summary["iteration"]["worst"] == pytest.approx(1 / 3)
