"""Printing an estimate with its breakdown by term."""

from __future__ import annotations

import pytest

from cost_model.estimate_text import estimate_rows, format_estimate, format_move, print_estimate
from cost_model.hardware import GiB
from cost_model.provider import CallEstimate, MoveEstimate


def test_rows_carry_every_term_with_its_share(capsys: pytest.CaptureFixture[str]) -> None:
    est = CallEstimate(time_s=2.0, peak_bytes=4 * GiB, resident_bytes=3 * GiB,
                       breakdown={"compute_s": 1.5, "tp_comm_s": 0.5,
                                  "weights_bytes": 3 * GiB, "activations_bytes": 1 * GiB})
    rows = {r[0]: r for r in estimate_rows(est)}
    assert rows["compute"][1:] == ("1.500 s", " 75.0%")
    assert rows["tp_comm"][1:] == ("500.000 ms", " 25.0%")
    assert rows["weights"][1:] == ("3.00 GiB", " 75.0%")
    assert rows["= peak / device"][1] == "4.00 GiB" and rows["resident / device"][1] == "3.00 GiB"
    text = format_estimate(est, "my call")
    assert text.splitlines()[0] == "my call" and text.endswith("feasible")
    print_estimate(est, "my call")
    assert capsys.readouterr().out.strip() == text.strip()
    print_estimate(est, "my call", rich=True)
    assert "compute" in capsys.readouterr().out
    move = MoveEstimate(time_s=0.25, bytes_total=2 * GiB, bytes_inter_node=GiB, busiest_rank_bytes=GiB / 2)
    assert format_move(move, "actor") == ("actor: 250.000 ms, 2.000 GiB sent (1.000 GiB inter-node), "
                                          "busiest rank 0.500 GiB")
