"""Atomic writes: a reader sees the old file or the new one, never a torn or half one."""

import pytest

from graph.files import atomic_target, atomic_write


def test_atomic_write_replaces_the_whole_file(tmp_path):
    p = tmp_path / "a" / "f.txt"
    atomic_write(p, "old")
    atomic_write(p, b"new")
    assert p.read_text() == "new" and [x.name for x in p.parent.iterdir()] == ["f.txt"]


def test_atomic_target_renames_on_success_and_leaves_the_old_file_on_failure(tmp_path):
    p = tmp_path / "w.bin"
    with atomic_target(p) as tmp:
        tmp.write_bytes(b"one")
        assert not p.exists()
    assert p.read_bytes() == b"one"
    with pytest.raises(RuntimeError), atomic_target(p) as tmp:
        tmp.write_bytes(b"tw")
        raise RuntimeError("writer died")
    assert p.read_bytes() == b"one" and [x.name for x in tmp_path.iterdir()] == ["w.bin"]
