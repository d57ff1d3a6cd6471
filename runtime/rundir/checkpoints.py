"""Training checkpoints on disk: layout, atomic commit, verification and fallback.

    RUN_DIR/checkpoints/
      iter_000004/          a complete checkpoint (iteration 4 done)
        __0_0.distcp ...    torch.distributed.checkpoint files, one per rank, tensors by
        .metadata           global name (see `runtime.rundir.rank_state`)
        meta.json           written last: fingerprint, plan, world size, sizes, checksums,
                            plain state (LR step, interface state)
      .iter_000006.tmp/     a checkpoint being written (ignored, removed on the next save)
      iter_000002.unusable-20260101T120000/   a corrupt one, moved aside (never deleted)

A checkpoint is written into a temporary directory; every rank fsyncs and hashes its own
file, rank 0 writes `meta.json` (which names every file with its size and SHA-256), fsyncs
the directory and renames it into place. A directory named `iter_*` without a valid
`meta.json`, or whose files do not match it, is partial or corrupt: `find_resume_point`
skips it with a one-line warning and falls back to the previous complete one. Any plan
and world size can resume any checkpoint (the tensors are resharded by name on load).

This module is plain file handling (no torch), so it is unit-tested without processes.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.errors import UserError
from graph.files import atomic_write

FORMAT_VERSION = 2
"""Bumped when the files change incompatibly (1: one torch.save per rank; 2: DCP)."""

META = "meta.json"
_DIR_RE = re.compile(r"^iter_(\d{6,})$")

FINGERPRINT_EXCLUDED = ("train.iterations", "train.run_dir", "train.resume", "train.save_every",
                        "train.keep_checkpoints", "train.log_every", "cluster.port", "cluster.nodes",
                        "cluster.devices_per_node")
"""Config keys that may change between a run and its resumption (they do not change the math;
`train.iterations` changes an LR schedule that decays over the run, see the README; the
cluster's size and the plan change the order of reductions only, see the README)."""

FINGERPRINT_EXCLUDED_PREFIXES = ("plan.",)
"""Config sections that may change between a run and its resumption (the plan)."""

DCP_METADATA = ".metadata"


class CheckpointError(UserError):
    """No usable checkpoint, or one that belongs to another experiment; the message says the fix."""


class CheckpointWriteError(UserError):
    """A checkpoint could not be written (e.g. a full disk); the previous ones are intact."""


# --------------------------------------------------------------------------- fingerprints


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as {dotted.key: leaf}; lists stay leaves."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def experiment_fingerprint(config: Mapping[str, Any]) -> dict[str, Any]:
    """The resolved config, flattened and JSON-normalised, minus `FINGERPRINT_EXCLUDED`."""
    flat = flatten(config)
    kept = {k: v for k, v in sorted(flat.items())
            if k not in FINGERPRINT_EXCLUDED and not k.startswith(FINGERPRINT_EXCLUDED_PREFIXES)}
    return json.loads(json.dumps(kept, default=str))


def differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'key is A there, B now' for every (sorted) key whose values differ."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<unset>"), current.get(key, "<unset>")
        if a != b:
            out.append(f"{key} is {json.dumps(a)} there, {json.dumps(b)} now")
    return out


def first_difference(saved: Mapping[str, Any], current: Mapping[str, Any]) -> str | None:
    """'key is A there, B now' for the first (sorted) key whose values differ; None if equal."""
    diffs = differences(saved, current)
    return diffs[0] if diffs else None


def plan_layouts(layouts: Mapping[str, Any]) -> dict[str, str]:
    """A plan as plain strings (call -> 'mesh dp tp pp mb'), for meta.json and comparison."""
    return {name: str(layout) for name, layout in sorted(layouts.items())}


# --------------------------------------------------------------------------- meta


@dataclass(frozen=True, kw_only=True)
class FileEntry:
    """One file of a checkpoint as meta.json records it."""

    size: int
    """Bytes."""
    sha256: str
    """Hex digest of the content."""


@dataclass(frozen=True, kw_only=True)
class CheckpointMeta:
    """What meta.json holds; its presence (valid) marks the checkpoint complete."""

    iteration: int
    """Iterations completed when it was written."""
    world_size: int
    """Ranks that wrote it."""
    data_position: int
    """Dataset batches consumed (the next batch index)."""
    fingerprint: dict[str, Any]
    """`experiment_fingerprint` of the resolved config."""
    layouts: dict[str, str]
    """`plan_layouts` of the plan that ran."""
    files: dict[str, FileEntry]
    """File name -> size and checksum (every file of the checkpoint but meta.json)."""
    format_version: int = FORMAT_VERSION
    """Layout of the files."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Plain state beside the tensors (`runtime.rundir.rank_state.describe`): per trained
    model its layout, trainer step and optimizer scalars; every engine's interface state."""

    def __post_init__(self) -> None:
        if self.iteration < 0 or self.world_size < 1:
            raise ValueError(f"checkpoint meta: iteration {self.iteration} / world size "
                             f"{self.world_size} out of range")
        if self.format_version == FORMAT_VERSION and DCP_METADATA not in self.files:
            raise ValueError(f"checkpoint meta lists no {DCP_METADATA}")

    def to_json(self) -> str:
        data = {k: getattr(self, k) for k in ("format_version", "iteration", "world_size", "data_position",
                                              "fingerprint", "layouts", "extra")}
        data["files"] = {n: {"size": e.size, "sha256": e.sha256} for n, e in sorted(self.files.items())}
        return json.dumps(data, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> CheckpointMeta:
        data = json.loads(text)
        files = {n: FileEntry(size=int(e["size"]), sha256=str(e["sha256"])) for n, e in data["files"].items()}
        return cls(iteration=int(data["iteration"]), world_size=int(data["world_size"]),
                   data_position=int(data["data_position"]), fingerprint=dict(data["fingerprint"]),
                   layouts=dict(data["layouts"]), files=files,
                   format_version=int(data.get("format_version", 0)), extra=dict(data.get("extra", {})))


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:06d}"


def file_entry(path: str | Path) -> FileEntry:
    """Size and SHA-256 of a file (streamed)."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return FileEntry(size=size, sha256=digest.hexdigest())


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (creates, renames) durable."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- writing


def temp_dir(root: str | Path, iteration: int) -> Path:
    """Where the checkpoint of `iteration` is assembled before its rename."""
    return Path(root) / f".{checkpoint_name(iteration)}.tmp"


def begin(root: str | Path, iteration: int) -> Path:
    """Create a fresh, empty temporary directory for `iteration` (rank 0, before the others write)."""
    tmp = temp_dir(root, iteration)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def discard(tmp: Path) -> None:
    """Remove a temporary checkpoint directory that will not be committed."""
    shutil.rmtree(tmp, ignore_errors=True)


def commit(root: str | Path, meta: CheckpointMeta, *, keep: int) -> Path:
    """Write meta.json last, rename the temporary directory into place, prune; returns the path.

    A checkpoint of the same iteration already there is moved aside (`move_aside`), not
    deleted.
    """
    root = Path(root)
    tmp = temp_dir(root, meta.iteration)
    for name, entry in meta.files.items():
        size = (tmp / name).stat().st_size
        if size != entry.size:
            raise RuntimeError(f"checkpoint file {tmp / name} has {size} bytes, expected {entry.size}")
    atomic_write(tmp / META, meta.to_json())
    fsync_dir(tmp)
    final = root / checkpoint_name(meta.iteration)
    if final.exists():  # e.g. an unusable one nobody set aside: keep it, under another name
        move_aside(final, "replaced")
    os.replace(tmp, final)
    fsync_dir(root)
    prune(root, keep=keep)
    return final


def prune(root: str | Path, *, keep: int) -> list[Path]:
    """Delete all but the newest `keep` complete checkpoints, and stale temporary dirs."""
    if keep < 1:
        raise ValueError(f"train.keep_checkpoints must be >= 1, got {keep}")
    root = Path(root)
    removed = [p for p in root.glob(".iter_*") if p.is_dir()]
    complete = [p for _, p in _numbered(root) if (p / META).is_file()]
    removed += complete[keep:]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


# --------------------------------------------------------------------------- reading


def _numbered(root: Path) -> list[tuple[int, Path]]:
    """Checkpoint directories, newest first."""
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _DIR_RE.match(p.name)
        if m and p.is_dir():
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def verify(path: str | Path) -> CheckpointMeta:
    """The meta of a complete checkpoint; ValueError saying what is wrong otherwise."""
    path = Path(path)
    meta_file = path / META
    if not meta_file.is_file():
        raise ValueError("partial: no meta.json")
    try:
        meta = CheckpointMeta.from_json(meta_file.read_text())
    except (ValueError, KeyError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"corrupt meta.json ({' '.join(str(exc).split())})") from None
    if meta.format_version != FORMAT_VERSION:
        raise ValueError(f"format version {meta.format_version}, this realloc reads {FORMAT_VERSION}")
    for name, entry in sorted(meta.files.items()):
        f = path / name
        if not f.is_file():
            raise ValueError(f"partial: {name} is missing")
        size = f.stat().st_size
        if size != entry.size:
            raise ValueError(f"corrupt: {name} has {size} bytes, meta.json says {entry.size}")
        if file_entry(f).sha256 != entry.sha256:
            raise ValueError(f"corrupt: {name} fails its SHA-256 check")
    return meta


@dataclass(frozen=True, kw_only=True)
class ResumePoint:
    """The checkpoint a resumed run starts from, and what was skipped on the way."""

    path: Path
    meta: CheckpointMeta
    warnings: tuple[str, ...] = ()
    """One line per newer checkpoint skipped as partial or corrupt."""


def find_resume_point(root: str | Path) -> ResumePoint:
    """The newest complete checkpoint under `root`; CheckpointError when none is usable."""
    root = Path(root)
    candidates = _numbered(root)
    if not candidates:
        raise CheckpointError(
            f"train.resume=true but {str(root)!r} holds no checkpoint; set train.save_every=N to write "
            "them, or drop train.resume to start a fresh run")
    skipped: list[tuple[str, str]] = []
    for _, path in candidates:
        try:
            meta = verify(path)
        except ValueError as exc:
            skipped.append((path.name, str(exc)))
            continue
        warnings = tuple(f"checkpoint {name} is unusable ({why}); falling back to {path.name} "
                         "(the unusable one is moved aside, not deleted, when the run resumes)" for name, why in skipped)
        return ResumePoint(path=path, meta=meta, warnings=warnings)
    reasons = "; ".join(f"{name}: {why}" for name, why in skipped)
    raise CheckpointError(f"train.resume=true but no checkpoint in {str(root)!r} is usable ({reasons}); "
                          "start a fresh run with a new train.run_dir")


def move_aside(path: str | Path, why: str) -> Path:
    """Rename a checkpoint directory nobody will resume from to `NAME.WHY-YYYYMMDDTHHMMSS`
    beside it (a name `find_resume_point` ignores), so that nothing a user might want to
    inspect is deleted; returns the new path."""
    path = Path(path)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    target = path.with_name(f"{path.name}.{why}-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.{why}-{stamp}-{n}")
    os.replace(path, target)
    return target


def set_aside_newer(root: str | Path, point: ResumePoint) -> list[Path]:
    """Move the checkpoint directories newer than `point` (all unusable, or it would not
    have been chosen) aside before a resumed run writes its own; returns their new paths."""
    return [move_aside(p, "unusable") for it, p in _numbered(Path(root)) if it > point.meta.iteration]


def check_compatible(meta: CheckpointMeta, *, name: str, fingerprint: Mapping[str, Any]) -> None:
    """CheckpointError when `meta` belongs to another experiment (the plan and the world
    size may differ: checkpoints reshard)."""
    diff = first_difference(meta.fingerprint, fingerprint)
    if diff is not None:
        raise CheckpointError(
            f"train.resume: the run directory holds a different experiment ({diff}); resume with the "
            "same config, or set train.run_dir to a new directory for a new run")


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True, kw_only=True)
class Listed:
    """One checkpoint directory as `realloc checkpoints` shows it."""

    name: str
    iteration: int
    size: int
    """Bytes of every file in it."""
    world_size: int | None
    layouts: dict[str, str]
    status: str
    """'ok', or what is wrong ('partial: ...', 'corrupt: ...', 'moved aside', 'being written')."""


def list_checkpoints(root: str | Path, *, verify_hashes: bool = True) -> list[Listed]:
    """Every checkpoint directory under `root` (complete, broken, moved aside, in progress),
    oldest first, each checked like a resume would (`verify`)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = re.match(r"^\.?iter_(\d{6,})", p.name)
        if not m or not p.is_dir():
            continue
        size = sum(f.stat().st_size for f in p.iterdir() if f.is_file())
        meta = None
        if p.name.startswith("."):
            status = "being written (or abandoned)"
        elif not _DIR_RE.match(p.name):
            status = "moved aside"
        else:
            try:
                meta = verify(p) if verify_hashes else CheckpointMeta.from_json((p / META).read_text())
                status = "ok"
            except (ValueError, KeyError, OSError) as exc:
                status = str(exc)
        if meta is None and (p / META).is_file():
            try:
                meta = CheckpointMeta.from_json((p / META).read_text())
            except (ValueError, KeyError, TypeError):
                meta = None
        out.append(Listed(name=p.name, iteration=int(m.group(1)), size=size,
                          world_size=meta.world_size if meta else None, layouts=meta.layouts if meta else {},
                          status=status))
    return sorted(out, key=lambda c: (c.iteration, c.name))
