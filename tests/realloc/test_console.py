"""The CLI's console: the per-iteration line, the metrics follower, no wrapping in logs."""

import time

from realloc.console import MetricsFollower, format_line
from runtime.rundir.metrics import MetricsWriter


def test_format_line():
    line = format_line({"iteration": 3, "reward": 0.25, "kl": 0.0123, "actor_loss": -0.5,
                        "call_time_s": {"actor_gen": 0.12, "actor_train": 0.3},
                        "realloc_time_s": 0.02, "realloc_bytes": 3 * 2**20, "iter_time_s": 0.9})
    assert line == ("it    3 | reward +0.250 | kl 0.0123 | actor -0.5000 | calls actor_gen=120ms "
                    "actor_train=300ms | realloc 20ms/3.0MiB | iter 0.90s")


def test_follower_prints_new_records(tmp_path, capsys):
    w = MetricsWriter(tmp_path / "m.jsonl")
    with MetricsFollower(tmp_path / "m.jsonl", total=2, interval_s=0.02) as follower:
        w.write({"iteration": 1, "reward": 0.5})
        time.sleep(0.1)
        w.write({"iteration": 2, "reward": 0.75})
    out = capsys.readouterr().out
    assert "reward +0.500" in out and "reward +0.750" in out
    assert len(follower.seen) == 2


def test_console_lines_do_not_wrap_when_output_is_not_a_terminal(capsys):
    from realloc.console import make_console

    console = make_console()  # pytest captures stdout: not a terminal
    assert not console.is_terminal
    line = format_line({"iteration": 7, "reward": 0.5, "call_time_s": {f"call_{i}": 0.01 for i in range(20)},
                        "realloc_time_s": 0.004, "realloc_bytes": 2**20, "iter_time_s": 0.2})
    assert len(line) > 200
    console.print(line, markup=False)
    assert capsys.readouterr().out == line + "\n"

