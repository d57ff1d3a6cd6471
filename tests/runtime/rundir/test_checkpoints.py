"""Checkpoint directories without processes: atomic commit, verification, fallback, pruning
and the experiment fingerprint."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from runtime.rundir import checkpoints as rc

FINGERPRINT = {"graph.batch_size": 8, "models.actor.trainable": True, "seed": 1}
LAYOUTS = {"actor_gen": "[0-1] dp1 tp2 pp1 mb1", "actor_train": "[0-1] dp2 tp1 pp1 mb1"}


def _write(root: Path, iteration: int, payloads: list[bytes], *, keep: int = 10) -> Path:
    """What the ranks and rank 0 do, in order, for one checkpoint."""
    tmp = rc.begin(root, iteration)
    entries = {rc.rank_file(r): rc.write_rank_file(tmp, r, data) for r, data in enumerate(payloads)}
    meta = rc.CheckpointMeta(iteration=iteration, world_size=len(payloads), data_position=iteration,
                             fingerprint=FINGERPRINT, layouts=LAYOUTS, files=entries)
    return rc.commit(root, meta, keep=keep)


def test_commit_renames_a_complete_directory_whose_meta_names_every_file(tmp_path):
    path = _write(tmp_path, 3, [b"rank zero", b"rank one!!"])
    assert path == tmp_path / "iter_000003"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000003"]  # no temporary left
    meta = json.loads((path / "meta.json").read_text())
    assert meta["files"]["rank1.pt"] == {"size": 10, "sha256": hashlib.sha256(b"rank one!!").hexdigest()}
    assert meta["iteration"] == 3 and meta["world_size"] == 2 and meta["layouts"] == LAYOUTS
    assert rc.verify(path) == rc.CheckpointMeta.from_json((path / "meta.json").read_text())


def test_an_interrupted_write_leaves_the_previous_checkpoint_in_charge(tmp_path):
    _write(tmp_path, 2, [b"a", b"b"])
    tmp = rc.begin(tmp_path, 4)  # killed after the rank files, before meta.json and the rename
    rc.write_rank_file(tmp, 0, b"new a")
    rc.write_rank_file(tmp, 1, b"new b")
    point = rc.find_resume_point(tmp_path)
    assert point.path.name == "iter_000002" and point.warnings == ()
    # the next save clears the stale temporary directory
    _write(tmp_path, 6, [b"c", b"d"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000002", "iter_000006"]


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_saying_so(tmp_path):
    _write(tmp_path, 2, [b"aaaa", b"bbbb"])
    newest = _write(tmp_path, 4, [b"cccc", b"dddd"])
    (newest / "rank1.pt").write_bytes(b"dxdd")  # same size, other bytes
    point = rc.find_resume_point(tmp_path)
    assert point.path.name == "iter_000002" and point.meta.iteration == 2
    assert point.warnings == ("checkpoint iter_000004 is unusable (corrupt: rank1.pt fails its SHA-256 "
                              "check); falling back to iter_000002 (the unusable one is moved aside, not "
                              "deleted, when the run resumes)",)
    _write(tmp_path, 1, [b"eeee", b"ffff"])  # an older, complete one stays
    [aside] = rc.set_aside_newer(tmp_path, point)
    assert not newest.exists() and aside.name.startswith("iter_000004.unusable-")
    assert (aside / "rank1.pt").read_bytes() == b"dxdd"  # kept, bytes untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000001", "iter_000002", aside.name]
    assert rc.find_resume_point(tmp_path).path.name == "iter_000002"  # the aside one is not a candidate


@pytest.mark.parametrize("damage, why", [
    (lambda d: (d / "rank0.pt").write_bytes(b"cc"), "corrupt: rank0.pt has 2 bytes, meta.json says 4"),
    (lambda d: (d / "rank1.pt").unlink(), "partial: rank1.pt is missing"),
    (lambda d: (d / "meta.json").unlink(), "partial: no meta.json"),
    (lambda d: (d / "meta.json").write_text('{"iteration": 4, "files"'), "corrupt meta.json"),
])
def test_truncated_missing_or_partial_files_are_skipped(tmp_path, damage, why):
    _write(tmp_path, 1, [b"aaaa", b"bbbb"])
    damage(_write(tmp_path, 4, [b"cccc", b"dddd"]))
    point = rc.find_resume_point(tmp_path)
    assert point.path.name == "iter_000001"
    assert len(point.warnings) == 1 and why in point.warnings[0] and "iter_000004" in point.warnings[0]


def test_no_usable_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(rc.CheckpointError, match="holds no checkpoint; set train.save_every"):
        rc.find_resume_point(tmp_path / "checkpoints")
    only = _write(tmp_path, 2, [b"aaaa"])
    (only / "rank0.pt").write_bytes(b"")
    with pytest.raises(rc.CheckpointError, match=r"no checkpoint .* is usable \(iter_000002: corrupt: rank0.pt "
                                                 r"has 0 bytes.*start a fresh run"):
        rc.find_resume_point(tmp_path)


def test_keep_prunes_the_oldest_and_a_rewrite_replaces_the_same_iteration(tmp_path):
    for it in (1, 2, 3, 4):
        _write(tmp_path, it, [f"x{it}".encode()], keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000003", "iter_000004"]
    (tmp_path / "iter_000004" / "rank0.pt").write_bytes(b"zz")  # corrupt, then written again
    _write(tmp_path, 4, [b"again"], keep=2)
    assert rc.find_resume_point(tmp_path).path.name == "iter_000004"
    assert (tmp_path / "iter_000004" / "rank0.pt").read_bytes() == b"again"
    with pytest.raises(ValueError, match="keep_checkpoints must be >= 1"):
        rc.prune(tmp_path, keep=0)


def test_meta_must_list_a_file_per_rank():
    entry = rc.FileEntry(size=1, sha256="0" * 64)
    with pytest.raises(ValueError, match="lists no rank1.pt"):
        rc.CheckpointMeta(iteration=1, world_size=2, data_position=1, fingerprint={}, layouts={},
                          files={"rank0.pt": entry})


def test_fingerprint_flattens_and_ignores_what_may_change_on_resume():
    config = {"train": {"iterations": 20, "run_dir": "runs/a", "resume": False, "save_every": 5, "dtype": "auto"},
              "graph": {"batch_size": 8, "train": {}, "generate": {"max_new_tokens": 6}}, "seed": 1}
    fp = rc.experiment_fingerprint(config)
    assert fp == {"graph.batch_size": 8, "graph.generate.max_new_tokens": 6, "graph.train": {},
                  "seed": 1, "train.dtype": "auto"}
    assert rc.first_difference(fp, {**fp, "graph.batch_size": 16}) == "graph.batch_size is 8 there, 16 now"
    assert rc.first_difference(fp, dict(fp)) is None
    assert rc.first_difference({"a": 1}, {"a": 1, "b": 2}) == 'b is "<unset>" there, 2 now'


def _meta(**changes) -> rc.CheckpointMeta:
    fields = {"iteration": 4, "world_size": 2, "data_position": 4, "fingerprint": FINGERPRINT,
              "layouts": LAYOUTS, "files": {rc.rank_file(r): rc.FileEntry(size=1, sha256="0") for r in range(2)}}
    return rc.CheckpointMeta(**{**fields, **changes})


def test_compatibility_names_world_size_experiment_and_plan_differences():
    meta = _meta()
    rc.check_compatible(meta, name="iter_000004", world_size=2, fingerprint=FINGERPRINT, layouts=LAYOUTS)
    with pytest.raises(rc.CheckpointError, match="written by 2 workers, this run has 4; resharding a "
                                                 "checkpoint is not supported"):
        rc.check_compatible(meta, name="iter_000004", world_size=4, fingerprint=FINGERPRINT, layouts=None)
    with pytest.raises(rc.CheckpointError, match=r"different experiment \(seed is 1 there, 2 now\); resume "
                                                 "with the same config, or set train.run_dir"):
        rc.check_compatible(meta, name="iter_000004", world_size=2, fingerprint={**FINGERPRINT, "seed": 2},
                            layouts=None)
    other = {**LAYOUTS, "actor_train": "[0-1] dp1 tp1 pp2 mb1"}
    with pytest.raises(rc.CheckpointError, match=r"another plan \(call 'actor_train': \[0-1\] dp2 tp1 pp1 mb1 "
                                                 r"there, \[0-1\] dp1 tp1 pp2 mb1 now\)"):
        rc.check_compatible(meta, name="iter_000004", world_size=2, fingerprint=FINGERPRINT, layouts=other)


def test_the_fingerprint_of_an_experiment_ignores_iterations_but_not_the_batch():
    from realloc.experiment import load_experiment
    from realloc.run import fingerprint

    experiment = load_experiment("ppo_tiny", ["train.iterations=3"])
    base = fingerprint(experiment)
    assert base == fingerprint(load_experiment("ppo_tiny", ["train.iterations=9", "train.save_every=2"]))
    changed = fingerprint(load_experiment("ppo_tiny", ["graph.batch_size=4"]))
    batch = experiment.config.graph.batch_size
    assert rc.first_difference(base, changed) == f"graph.batch_size is {batch} there, 4 now"
    assert "train.iterations" not in base and base["models.actor.trainable"] is True
