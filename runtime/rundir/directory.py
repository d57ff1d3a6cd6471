"""The run directory: resolved config, plan, per-rank logs, metrics and plots.

    RUN_DIR/
      config.yaml        the resolved experiment
      plan.yaml          the plan that ran (plan.json for tools)
      logs/              per-rank stdout/stderr of the workers
      metrics.jsonl      one JSON object per iteration (see `MetricsWriter`)
      tensorboard/       the same metrics as TensorBoard scalars (see `TensorBoardWriter`)
      curves.png         reward / KL / loss curves, redrawn as the run goes
      checkpoints/       iter_NNNNNN/ training checkpoints (see runtime.rundir.checkpoints)
      models/            HF checkpoints of the trained models (and ROLE_ema) at the end

Files are written atomically (a temporary file renamed into place), so a run killed at
any moment leaves complete files behind.
"""

from __future__ import annotations

from pathlib import Path

from graph.errors import UserError


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def plan(self) -> Path:
        return self.root / "plan.yaml"

    @property
    def curves(self) -> Path:
        return self.root / "curves.png"

    @property
    def checkpoints(self) -> Path:
        """Training checkpoints: `checkpoints/iter_NNNNNN/`."""
        return self.root / "checkpoints"

    @property
    def models(self) -> Path:
        """Final HF checkpoints of the trained models: `models/ROLE/`."""
        return self.root / "models"

    def create(self, *, resume: bool) -> RunDir:
        """Make the directory; a fresh run refuses to overwrite an earlier run's metrics."""
        if self.metrics.exists() and not resume:
            raise UserError(
                f"run directory {str(self.root)!r} already holds a run; pass resume=true to continue it "
                "or set train.run_dir to a new directory"
            )
        self.logs.mkdir(parents=True, exist_ok=True)
        return self
