"""The bench's `engine` section: the Megatron engine against transformers at equal threads
(train step, generation, log-probs), each size run by `realloc.bench.engine_throughput` in a
fresh interpreter. Kept apart from that module so the suite renders reports without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from realloc.bench.suite import REPO_ROOT, _x, md_table

ENGINE_RUNS = {
    "tiny": ["--layers", "2", "--hidden", "64", "--vocab", "64", "--seq", "16", "--prompt", "8",
             "--new-tokens", "8", "--batch", "32", "--repeats", "5"],
    "smollm2-body": ["--model", "smollm2-body", "--batch", "4", "--seq", "64", "--prompt", "32",
                     "--new-tokens", "8", "--repeats", "1"],
}
"""engine_throughput's arguments per model size: the peer bench's two sizes."""


def run(quick: bool, note: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sizes = ["tiny"] if quick else list(ENGINE_RUNS)
    with tempfile.TemporaryDirectory(prefix="realloc-engine-") as tmp:
        for size in sizes:
            rounds = "2" if quick else "3" if size != "tiny" else "5"
            note(f"{size}: engine vs transformers, {rounds} alternations, all cores each")
            path = Path(tmp) / f"{size}.json"
            cmd = [sys.executable, "-m", "realloc.bench.engine_throughput", *ENGINE_RUNS[size], "--rounds", rounds,
                   "--json", str(path)]
            env = {**os.environ, "MASTER_PORT": str(29700 + len(out)),
                   "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()
                raise RuntimeError(f"engine_throughput ({size}) failed: {tail[-1] if tail else proc.returncode}")
            out[size] = json.loads(path.read_text())
    return {"sizes": out}


def render(data: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for size, r in data["sizes"].items():
        lines += [f"**{size}** ({r['params_m']}M parameters): batch {r['batch']} x {r['seq']} tokens (prompt "
                  f"{r['prompt']}, {r['new_tokens']} new), {r['threads']} thread(s) for both, median of "
                  f"{r['rounds']} alternations, {r['clock']} time.", ""]
        lines += md_table(["what", "engine tokens/s", "transformers tokens/s", "engine / transformers"],
                          [[row["what"], f"{row['engine_tok_s']:.0f}", f"{row['hf_tok_s']:.0f}", _x(row["ratio"])]
                           for row in r["rows"]])
        lines.append("")
    return lines


def readme_rows(d: Mapping[str, Any]) -> list[list[str]]:
    return [[f"engine vs transformers, {size} model, {r['threads']} thread(s) each",
             ", ".join(f"{row['what']} {_x(row['ratio'])}" for row in r["rows"]) + " of transformers' tokens/s"]
            for size, r in d["sizes"].items()]
