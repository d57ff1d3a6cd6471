"""Run directory: atomic writes, metrics lines, TensorBoard scalars and curves."""


import pytest

from runtime.rundir.directory import RunDir
from runtime.rundir.metrics import MetricsWriter, plot_curves, read_metrics


def test_metrics_round_trip_and_truncate(tmp_path):
    w = MetricsWriter(tmp_path / "metrics.jsonl")
    for i in range(1, 5):
        w.write({"iteration": i, "reward": i / 10, "kl": float("nan")})
    with (tmp_path / "metrics.jsonl").open("a") as fh:
        fh.write('{"iteration": 5, "rew')  # a torn line from a killed run
    recs = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["iteration"] for r in recs] == [1, 2, 3, 4]
    assert recs[0]["kl"] is None
    w.truncate_after(2)
    assert [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [1, 2]


def test_run_dir_refuses_to_clobber(tmp_path):
    run = RunDir(tmp_path / "run").create(resume=False)
    MetricsWriter(run.metrics).write({"iteration": 1})
    with pytest.raises(ValueError, match="already holds a run; pass resume=true"):
        RunDir(tmp_path / "run").create(resume=False)
    assert RunDir(tmp_path / "run").create(resume=True).logs.is_dir()


def test_plot_curves(tmp_path):
    recs = [{"iteration": i, "reward": i * 0.1, "kl": 0.01 * i} for i in range(1, 6)]
    out = plot_curves(recs, tmp_path / "curves.png", title="t")
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert plot_curves([{"iteration": 1}], tmp_path / "none.png") is None


def test_moving_average_hand_worked():
    from runtime.rundir.metrics import moving_average

    assert moving_average([1.0, 2.0, 3.0, 4.0, 5.0], 2) == [1.0, 1.5, 2.5, 3.5, 4.5]
    assert moving_average([3.0, 0.0, 3.0], 5) == [3.0, 1.5, 2.0]
    with pytest.raises(ValueError, match="window must be >= 1"):
        moving_average([1.0], 0)


def test_plot_curves_long_run_with_accuracy(tmp_path):
    recs = [{"iteration": i, "reward": (i % 7) * 0.1, "accuracy": i / 300} for i in range(1, 301)]
    out = plot_curves(recs, tmp_path / "curves.png", title="t")
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_curve_plotter_draws_the_newest_snapshot_off_the_calling_thread(tmp_path, monkeypatch, capsys):
    import threading

    import runtime.rundir.metrics as metrics

    drawn, release = [], threading.Event()

    def slow_plot(records, path, title=""):
        release.wait(5)  # the first redraw blocks until the test lets it go
        drawn.append((len(records), title, threading.current_thread().name))

    monkeypatch.setattr(metrics, "plot_curves", slow_plot)
    plotter = metrics.CurvePlotter(tmp_path / "curves.png", title="t")
    recs = [{"iteration": i, "reward": 0.1 * i} for i in range(1, 31)]
    plotter.request(recs[:5])
    plotter.request(recs[:10])  # both return at once while the redraw waits
    plotter.request(recs[:20])
    release.set()
    plotter.close()
    # the 5-record snapshot may have been taken before the later ones; 10 was replaced by 20
    assert drawn[-1] == (20, "t", "curves") and (10, "t", "curves") not in drawn and len(drawn) <= 2

    def broken(records, path, title=""):
        raise RuntimeError("no fonts")

    monkeypatch.setattr(metrics, "plot_curves", broken)
    plotter = metrics.CurvePlotter(tmp_path / "curves.png")
    plotter.request(recs)
    plotter.close()  # a failed redraw says it is a bug and does not stop the run
    err = capsys.readouterr().err
    assert "realloc: bug: redrawing" in err and "RuntimeError: no fonts" in err


def test_curve_plotter_writes_the_png(tmp_path):
    from runtime.rundir.metrics import CurvePlotter

    plotter = CurvePlotter(tmp_path / "curves.png", title="t")
    plotter.request([{"iteration": i, "reward": 0.1 * i} for i in range(1, 6)])
    plotter.close()
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_tensorboard_scalars_read_back(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from runtime.rundir.metrics import TensorBoardWriter

    records = [{"iteration": 1, "reward": 0.25, "call_time_s": {"actor_gen": 1.5}, "flag": True,
                "note": "x", "kl": float("nan")},
               {"iteration": 2, "reward": 0.75, "call_time_s": {"actor_gen": 1.25}, "kl": 0.1}]
    writer = TensorBoardWriter(tmp_path / "tensorboard")
    for r in records:
        writer.write(r)
    writer.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert sorted(events.Tags()["scalars"]) == ["call_time_s/actor_gen", "kl", "reward"]
    assert [(e.step, e.value) for e in events.Scalars("reward")] == [(1, 0.25), (2, 0.75)]
    assert [(e.step, e.value) for e in events.Scalars("call_time_s/actor_gen")] == [(1, 1.5), (2, 1.25)]
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("kl")] == [(2, 0.1)]  # NaN skipped


def test_serial_thread_writes_in_order_off_thread_and_raises_a_failed_write(tmp_path):
    import threading

    from runtime.rundir.metrics import SerialThread

    threads = set()

    def write_to(writer):
        def handle(record):
            threads.add(threading.current_thread().name)
            writer.write(record)
        return handle

    log = SerialThread(write_to(MetricsWriter(tmp_path / "metrics.jsonl")), name="metrics")
    for i in range(1, 21):
        log.submit({"iteration": i, "reward": i / 10})
    log.flush()  # on disk once flush returns (the worker flushes before a checkpoint)
    assert [r["iteration"] for r in read_metrics(tmp_path / "metrics.jsonl")] == list(range(1, 21))
    log.close()
    assert threads == {"metrics"}

    class Full(MetricsWriter):
        def write(self, record):
            if record["iteration"] == 2:
                raise OSError(28, "No space left on device")
            super().write(record)

    log = SerialThread(write_to(Full(tmp_path / "full.jsonl")), name="metrics")
    log.submit({"iteration": 1})
    log.submit({"iteration": 2})
    with pytest.raises(OSError, match="No space left"):
        log.flush()  # the run's thread sees the disk-full error, as with an inline write
    with pytest.raises(OSError, match="No space left"):
        log.submit({"iteration": 3})
    assert [r["iteration"] for r in read_metrics(tmp_path / "full.jsonl")] == [1]
