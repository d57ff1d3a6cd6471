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


def _rank_file(rank: int) -> str:
    return f"__{rank}_0.distcp"  # what DCP's FileSystemWriter names a rank's file


def _write_file(tmp: Path, name: str, data: bytes) -> rc.FileEntry:
    (tmp / name).write_bytes(data)
    return rc.file_entry(tmp / name)


def _write(root: Path, iteration: int, payloads: list[bytes], *, keep: int = 10) -> Path:
    """What the ranks and rank 0 do, in order, for one checkpoint."""
    tmp = rc.begin(root, iteration)
    entries = {_rank_file(r): _write_file(tmp, _rank_file(r), data) for r, data in enumerate(payloads)}
    entries[rc.DCP_METADATA] = _write_file(tmp, rc.DCP_METADATA, b"dcp metadata")
    meta = rc.CheckpointMeta(iteration=iteration, world_size=len(payloads), data_position=iteration,
                             fingerprint=FINGERPRINT, layouts=LAYOUTS, files=entries)
    return rc.commit(root, meta, keep=keep)


def test_commit_renames_a_complete_directory_whose_meta_names_every_file(tmp_path):
    path = _write(tmp_path, 3, [b"rank zero", b"rank one!!"])
    assert path == tmp_path / "iter_000003"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000003"]  # no temporary left
    meta = json.loads((path / "meta.json").read_text())
    assert meta["files"]["__1_0.distcp"] == {"size": 10, "sha256": hashlib.sha256(b"rank one!!").hexdigest()}
    assert meta["iteration"] == 3 and meta["world_size"] == 2 and meta["layouts"] == LAYOUTS
    assert rc.verify(path) == rc.CheckpointMeta.from_json((path / "meta.json").read_text())


def test_an_interrupted_write_leaves_the_previous_checkpoint_in_charge(tmp_path):
    _write(tmp_path, 2, [b"a", b"b"])
    tmp = rc.begin(tmp_path, 4)  # killed after the rank files, before meta.json and the rename
    _write_file(tmp, _rank_file(0), b"new a")
    _write_file(tmp, _rank_file(1), b"new b")
    point = rc.find_resume_point(tmp_path)
    assert point.path.name == "iter_000002" and point.warnings == ()
    # the next save clears the stale temporary directory
    _write(tmp_path, 6, [b"c", b"d"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000002", "iter_000006"]


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one_saying_so(tmp_path):
    _write(tmp_path, 2, [b"aaaa", b"bbbb"])
    newest = _write(tmp_path, 4, [b"cccc", b"dddd"])
    (newest / "__1_0.distcp").write_bytes(b"dxdd")  # same size, other bytes
    point = rc.find_resume_point(tmp_path)
    assert point.path.name == "iter_000002" and point.meta.iteration == 2
    assert point.warnings == ("checkpoint iter_000004 is unusable (corrupt: __1_0.distcp fails its SHA-256 "
                              "check); falling back to iter_000002 (the unusable one is moved aside, not "
                              "deleted, when the run resumes)",)
    _write(tmp_path, 1, [b"eeee", b"ffff"])  # an older, complete one stays
    [aside] = rc.set_aside_newer(tmp_path, point)
    assert not newest.exists() and aside.name.startswith("iter_000004.unusable-")
    assert (aside / "__1_0.distcp").read_bytes() == b"dxdd"  # kept, bytes untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000001", "iter_000002", aside.name]
    assert rc.find_resume_point(tmp_path).path.name == "iter_000002"  # the aside one is not a candidate


@pytest.mark.parametrize("damage, why", [
    (lambda d: (d / "__0_0.distcp").write_bytes(b"cc"), "corrupt: __0_0.distcp has 2 bytes, meta.json says 4"),
    (lambda d: (d / "__1_0.distcp").unlink(), "partial: __1_0.distcp is missing"),
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
    (only / "__0_0.distcp").write_bytes(b"")
    with pytest.raises(rc.CheckpointError, match=r"no checkpoint .* is usable \(iter_000002: corrupt: __0_0\.distcp "
                                                 r"has 0 bytes.*start a fresh run"):
        rc.find_resume_point(tmp_path)


def test_keep_prunes_the_oldest_and_a_rewrite_replaces_the_same_iteration(tmp_path):
    for it in (1, 2, 3, 4):
        _write(tmp_path, it, [f"x{it}".encode()], keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iter_000003", "iter_000004"]
    (tmp_path / "iter_000004" / "__0_0.distcp").write_bytes(b"zz")  # corrupt, then written again
    _write(tmp_path, 4, [b"again"], keep=2)
    assert rc.find_resume_point(tmp_path).path.name == "iter_000004"
    assert (tmp_path / "iter_000004" / "__0_0.distcp").read_bytes() == b"again"
    with pytest.raises(ValueError, match="keep_checkpoints must be >= 1"):
        rc.prune(tmp_path, keep=0)


def test_meta_must_list_the_dcp_metadata():
    entry = rc.FileEntry(size=1, sha256="0" * 64)
    with pytest.raises(ValueError, match="lists no .metadata"):
        rc.CheckpointMeta(iteration=1, world_size=2, data_position=1, fingerprint={}, layouts={},
                          files={"__0_0.distcp": entry})


def test_a_checkpoint_of_the_old_format_is_skipped_with_its_version(tmp_path):
    _write(tmp_path, 1, [b"aaaa"])
    old = _write(tmp_path, 2, [b"bbbb"])
    data = json.loads((old / "meta.json").read_text())
    data["format_version"] = 1
    (old / "meta.json").write_text(json.dumps(data))
    point = rc.find_resume_point(tmp_path)
    assert point.path.name == "iter_000001" and "format version 1, this realloc reads 2" in point.warnings[0]


def test_listing_shows_every_directory_with_its_status(tmp_path):
    _write(tmp_path, 1, [b"aaaa", b"bb"])
    bad = _write(tmp_path, 2, [b"cccc", b"dd"])
    (bad / "__1_0.distcp").unlink()
    _write(tmp_path, 3, [b"eeee", b"ff"])
    rc.move_aside(tmp_path / "iter_000003", "unusable")
    rc.begin(tmp_path, 4)
    rows = rc.list_checkpoints(tmp_path)
    assert [(r.iteration, r.status) for r in rows] == [
        (1, "ok"), (2, "partial: __1_0.distcp is missing"), (3, "moved aside"),
        (4, "being written (or abandoned)")]
    assert rows[0].size == 4 + 2 + len(b"dcp metadata") + (tmp_path / "iter_000001" / "meta.json").stat().st_size
    assert rows[0].world_size == 2 and rows[0].layouts == LAYOUTS and rows[3].world_size is None
    assert rc.list_checkpoints(tmp_path / "none") == []


def test_fingerprint_flattens_and_ignores_what_may_change_on_resume():
    config = {"train": {"iterations": 20, "run_dir": "runs/a", "resume": False, "save_every": 5, "dtype": "auto"},
              "graph": {"batch_size": 8, "train": {}, "generate": {"max_new_tokens": 6}}, "seed": 1}
    fp = rc.experiment_fingerprint(config)
    assert fp == {"graph.batch_size": 8, "graph.generate.max_new_tokens": 6, "graph.train": {},
                  "seed": 1, "train.dtype": "auto"}
    assert rc.first_difference(fp, {**fp, "graph.batch_size": 16}) == "graph.batch_size is 8 there, 16 now"
    assert rc.first_difference(fp, dict(fp)) is None
    assert rc.first_difference({"a": 1}, {"a": 1, "b": 2}) == 'b is "<unset>" there, 2 now'


def test_compatibility_names_the_experiment_difference_but_allows_another_plan_or_world():
    files = {rc.DCP_METADATA: rc.FileEntry(size=1, sha256="0")}
    meta = rc.CheckpointMeta(iteration=4, world_size=2, data_position=4, fingerprint=FINGERPRINT,
                             layouts=LAYOUTS, files=files)
    rc.check_compatible(meta, name="iter_000004", fingerprint=FINGERPRINT)
    with pytest.raises(rc.CheckpointError, match=r"different experiment \(seed is 1 there, 2 now\); resume "
                                                 "with the same config, or set train.run_dir"):
        rc.check_compatible(meta, name="iter_000004", fingerprint={**FINGERPRINT, "seed": 2})


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
    # the cluster's size and the plan may change on resume: the checkpoint reshards
    assert base == fingerprint(load_experiment("ppo_tiny", ["train.iterations=3", "cluster.devices_per_node=4",
                                                            "plan.mode=heuristic:symmetric"]))
