"""The SmolLM2 word-problem curves bench: its summary of a run's metrics, by hand."""

from __future__ import annotations

import json

from realloc.bench.smollm2_words import load_range, read_run, table


def test_a_runs_summary_by_hand(tmp_path):
    rows = [{"reward": r, "iter_time_s": 30.0, "actor_gen/response_len": n} for r, n in
            [(0.0, 30), (0.1, 28), (0.2, 26), (0.3, 20), (0.5, 12), (0.7, 10)]]
    rows[0].update({"eval/reward": 0.2, "eval/reward_correct": 0.2, "eval/reward_answer_format": 0.0})
    rows[4].update({"eval/reward": 0.6, "eval/reward_correct": 0.4, "eval/reward_answer_format": 0.4})
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"eval_only": 1}\n')
    r = read_run(tmp_path, window=2)
    assert (r["iterations"], r["minutes"], r["window"]) == (6, 3.0, 2)  # 6 x 30 s
    assert abs(r["reward_first"] - 0.05) < 1e-12 and abs(r["reward_last"] - 0.6) < 1e-12
    assert (r["eval_first"], r["eval_last"], r["eval_correct_last"]) == (0.2, 0.6, 0.4)
    assert (r["response_len_first"], r["response_len_last"]) == (29.0, 11.0)
    assert r["curves"]["eval"][1][0] == 2.5  # minutes at the end of the fifth iteration
    assert read_run(tmp_path, window=10)["window"] == 3  # never more than half the run
    (tmp_path / "x.load").write_text("1 2.5 1 1\n2 0.5 1 1\n")
    assert load_range(tmp_path / "x.load") == [0.5, 2.5] and load_range(tmp_path / "none") == []
    text = table({"seed1": {**r, "lr": 1e-5, "load": [0.5, 2.5]}})
    assert "| seed1 | 1e-05 | 6 | 3.0 | 0.050 -> 0.600 (first/last 2) | 0.200 -> 0.600 | 29.0 -> 11.0 | 0.5-2.5 |" in text
