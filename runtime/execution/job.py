"""The job: everything a worker needs to run a plan, as plain data pickled to every rank."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graph.dataflow import DataflowGraph
from graph.placement.layout import Layout
from runtime.data.settings import DataConfig


@dataclass(frozen=True, kw_only=True)
class Job:
    """One run of a plan: the graph, a layout per call, the data and the training loop."""

    name: str
    """Experiment name (plot titles)."""
    graph: DataflowGraph
    """The dataflow graph."""
    layouts: Mapping[str, Layout]
    """Call name -> layout (the plan)."""
    data: DataConfig
    """The experiment's data section."""
    iterations: int
    """Iterations the run ends at."""
    seed: int
    """Global seed (model init, sampling)."""
    run_dir: str
    """Absolute path of the run directory."""
    log_every: int = 1
    """Print a metrics line every N iterations."""
    plot_every: int = 5
    """Redraw curves.png at least every N iterations (and about 20 times a run)."""
    free_replicas: bool = True
    """Free a trained model's replicas between uses."""
    save_every: int = 0
    """Checkpoint every N iterations (0: only after the last); see runtime.rundir.rank_state."""
    keep_checkpoints: int = 2
    """Complete checkpoints kept under RUN_DIR/checkpoints."""
    resume_from: str | None = None
    """A verified checkpoint directory to restore before the first iteration."""
    fingerprint: Mapping[str, Any] = field(default_factory=dict)
    """The experiment's fingerprint, recorded in every checkpoint's meta.json."""
    ema_decay: float = 0.0
    """EMA decay of the models in `ema_models` (0: no EMA)."""
    ema_models: tuple[str, ...] = ()
    """Roles whose home engine keeps an EMA of its weights."""
    off_policy_steps: int = 0
    """1: generate calls run one batch ahead with weights one version old (graph.overlap)."""
    streamed: tuple[tuple[str, str], ...] = ()
    """(generate call, inference call) edges whose samples stream in chunks (Plan.streamed)."""
    fused: tuple[tuple[str, str], ...] = ()
    """(train call, train call) pairs that run as one fused pipeline step (Plan.fused)."""
    threads_per_worker: int = 0
    """Torch threads of every worker, from the plan (0: leave the launcher's equal share)."""
    eval_every: int = 0
    """Score data.eval_path's prompts every N iterations (0: never); see runtime.execution.evaluation."""
