"""Packaging: pyproject lists every product package and shipped data folder; the built wheel
holds the product and the shipped experiments (as `realloc.shipped`), no tests and no
benchmark entry points, and works installed into a fresh venv, run outside the checkout
(`realloc plan`, `realloc run`, `realloc bench`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("realloc", "graph", "planner", "cost_model", "runtime")
"""Top-level folders whose packages ship."""
SHIPPED = "realloc.shipped"
"""The package the experiments/ folder installs as."""
DATA_SUFFIXES = (".yaml", ".json", ".jsonl")


def _setuptools_config() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["setuptools"]


def _ignored(path: Path) -> bool:
    return "__pycache__" in path.parts


def _product_packages() -> set[str]:
    """Dotted names of every folder under the product folders that holds Python files."""
    found = {p.parent.relative_to(ROOT) for top in PRODUCT for p in (ROOT / top).rglob("*.py") if not _ignored(p)}
    return {".".join(d.parts) for d in found}


def _shipped_files() -> set[Path]:
    """Data files of experiments/ that ship, relative to it (benchmark entry points do not)."""
    exp = ROOT / "experiments"
    return {p.relative_to(exp) for p in exp.rglob("*")
            if p.suffix in DATA_SUFFIXES and not _ignored(p) and p.relative_to(exp).parts[0] != "bench"}


def test_pyproject_lists_every_package_and_data_folder() -> None:
    config = _setuptools_config()
    assert config["package-dir"] == {SHIPPED: "experiments"}
    data_packages = {".".join((SHIPPED, *f.parent.parts)) for f in _shipped_files()}
    listed = set(config["packages"])
    missing = (_product_packages() | data_packages | {SHIPPED}) - listed
    assert not missing, f"add {sorted(missing)} to [tool.setuptools] packages in pyproject.toml"
    extra = listed - _product_packages() - data_packages - {SHIPPED}
    assert not extra, f"pyproject.toml lists {sorted(extra)}, which hold nothing"


def _run(cmd: list[str | Path], *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{out[-4000:]}"
    return out


def _build_wheel(tmp_path: Path, env: dict[str, str]) -> Path:
    """The wheel of a copy of the source tree (a build inside the checkout would leave build/
    there, and stale files in build/lib end up in the next wheel). Offline: pip uses the
    setuptools of this interpreter (no build isolation) and no index."""
    from importlib.metadata import version

    have = version("setuptools")
    assert int(have.split(".")[0]) >= 77, f"setuptools {have} cannot build this wheel; install the dev extra"
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in (*PRODUCT, "experiments", "tests"):  # tests too, or "no tests in the wheel" proves nothing
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", src, "--no-deps", "--no-build-isolation", "--no-index", "-q",
          "-w", dist], cwd=tmp_path, env=env, timeout=300)
    (wheel,) = dist.glob("realloc-*.whl")
    return wheel


def _check_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == set(PRODUCT), f"top-level entries besides the product: {sorted(tops - set(PRODUCT))}"
    sources = {str(p.relative_to(ROOT)) for top in PRODUCT for p in (ROOT / top).rglob("*.py") if not _ignored(p)}
    assert not sources - names, f"product modules missing from the wheel: {sorted(sources - names)[:5]}"
    shipped = {f"realloc/shipped/{f}" for f in _shipped_files()}
    assert not shipped - names, f"shipped files missing from the wheel: {sorted(shipped - names)[:5]}"
    assert {"realloc/shipped/ppo_tiny.yaml", "realloc/shipped/common/tiny.yaml",
            "realloc/shipped/profiles/cpu-2core-4proc.json", "realloc/shipped/pipelines/dschat_tiny.yaml",
            "realloc/bench/suite.py"} <= names
    stray = sorted(n for n in names if n.startswith(("tests/", "experiments/", "realloc/shipped/bench/")))
    assert not stray, f"tests or benchmark entry points in the wheel: {stray[:5]}"


def _fresh_venv(tmp_path: Path, wheel: Path, env: dict[str, str]) -> Path:
    """A venv holding only the wheel. Its dependencies (torch, megatron-core, ...) are this
    interpreter's, made visible by a .pth line naming their site-packages: installing them
    would need the network and minutes. A plain path line in a .pth does not run that
    folder's own .pth files, so an editable realloc installed there (its import finder)
    stays out; the test checks that realloc is imported from the venv. pip sees the realloc
    installed there and leaves it alone: it uninstalls only inside the target venv."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, env=env, timeout=120)
    python = venv / "bin" / "python"
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path, env=env, timeout=60).strip())
    deps = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (site / "_realloc_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel],
         cwd=tmp_path, env=env, timeout=300)
    assert not (site / "tests").exists() and not (site / "experiments").exists()
    return venv


@pytest.mark.slow
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    wheel = _build_wheel(tmp_path, env)
    _check_wheel_contents(wheel)
    venv = _fresh_venv(tmp_path, wheel, env)

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = _run([venv / "bin" / "python", "-c",
                  "import realloc; from realloc.experiment import EXPERIMENTS_DIR; "
                  "print(realloc.__file__); print(EXPERIMENTS_DIR)"], cwd=outside, env=env, timeout=120)
    module, shipped = (Path(line) for line in probe.strip().splitlines()[-2:])
    assert module.is_relative_to(venv) and shipped.is_relative_to(venv), probe

    realloc = venv / "bin" / "realloc"
    plan = _run([realloc, "plan", "ppo_tiny", "--dry-run"], cwd=outside, env=env, timeout=300)
    assert "actor_gen" in plan
    run_dir = tmp_path / "run"
    _run([realloc, "run", "ppo_tiny", "train.iterations=2", f"train.run_dir={run_dir}"], cwd=outside, env=env,
         timeout=600)
    assert len((run_dir / "metrics.jsonl").read_text().splitlines()) == 2
    # `realloc bench` runs from the wheel too: two cheap sections (search once imported tests/)
    _run([realloc, "bench", "--quick", "--only", "search,paper", "--out", tmp_path / "bench"], cwd=outside, env=env,
         timeout=300)
    report = json.loads((tmp_path / "bench" / "report.json").read_text())
    assert {k: v["status"] for k, v in report["sections"].items()} == {"search": "ok", "paper": "ok"}
