"""Typed planner options: how `make_plan` gets its plan.

In an experiment's YAML (`plan:` section), read with `PlanOptions.from_dict`:

    plan:
      mode: search              # search | heuristic | manual | file
      heuristic: symmetric      # mode heuristic: symmetric | colocated-dp | disaggregated
      file: plans/ppo7b.yaml    # mode file
      time_budget_s: 20
      seed: 0
      layouts:                  # mode manual: one entry per call
        gen: {devices: [0, 1, 2, 3], dp: 1, tp: 4, pp: 1, micro_batches: 1}
        actor_train: {start: 0, size: 8, dp: 2, tp: 4, pp: 1}

`mode: heuristic:NAME` is accepted as shorthand for `mode: heuristic, heuristic: NAME`.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from graph.placement.layout import DeviceMesh, Layout
from planner.errors import PlanError
from planner.search import SearchOptions
from planner.space import SpaceOptions


class PlanMode(enum.StrEnum):
    """Where the plan comes from."""

    SEARCH = "search"
    HEURISTIC = "heuristic"
    MANUAL = "manual"
    FILE = "file"


@dataclass(kw_only=True)
class ManualLayout:
    """A hand-written layout of one call (plan.mode=manual): a mesh (devices, or start and
    size) and a strategy.

    The one type for this concept: the experiment schema (`plan.layouts.NAME`) and the
    planner both use it. It is a plain (not frozen) dataclass because OmegaConf merges YAML
    into it; nothing mutates it after loading. `check` validates it, naming the call.
    """

    devices: list[int] | None = None
    """Global device ids of the mesh; or give start and size."""
    start: int | None = None
    """First device of a contiguous mesh."""
    size: int | None = None
    """Devices in a contiguous mesh."""
    dp: int = 1
    """Data-parallel degree."""
    tp: int = 1
    """Tensor-parallel degree."""
    pp: int = 1
    """Pipeline-parallel degree."""
    micro_batches: int = 1
    """Micro-batches per data-parallel rank."""

    def check(self, call: str) -> None:
        """ValueError naming the call when the mesh is given both ways or half-given."""
        given = bool(self.devices)
        if given == (self.start is not None or self.size is not None):
            raise PlanError(f"plan.layouts.{call}: a manual layout needs either devices: [...] or start "
                             "and size, not both")
        if not given and (self.start is None or self.size is None):
            raise PlanError(f"plan.layouts.{call}: a manual layout with start needs size too (and vice versa)")

    def to_layout(self, call: str) -> Layout:
        """The Layout; ValueError naming the call and the fix."""
        self.check(call)
        try:
            mesh = (DeviceMesh(devices=tuple(self.devices)) if self.devices
                    else DeviceMesh.span(int(self.start or 0), int(self.size or 0)))
            return Layout(mesh=mesh, dp=self.dp, tp=self.tp, pp=self.pp,
                          micro_batches=self.micro_batches)
        except ValueError as exc:
            raise PlanError(f"plan.layouts.{call}: {exc}; make dp x tp x pp equal the mesh size") from None


@dataclass(frozen=True, kw_only=True)
class PlanOptions:
    """How to plan: the mode and its settings."""

    mode: PlanMode = PlanMode.SEARCH
    """search | heuristic | manual | file."""
    heuristic: str = "symmetric"
    """Heuristic name for mode heuristic."""
    layouts: Mapping[str, ManualLayout] = field(default_factory=dict)
    """Per-call layouts for mode manual."""
    file: str | None = None
    """Plan file (YAML or JSON) for mode file."""
    time_budget_s: float = 20.0
    """Nominal search time (deterministic: see planner.search)."""
    seed: int = 0
    """Search seed: the same seed and budget give the same plan."""
    allow_pp_generate: bool = False
    """Let generate calls use pipeline parallelism."""
    micro_batch_choices: int = 3
    """Micro-batch counts tried per strategy."""
    num_iterations: int = 4
    """Iterations the simulator unrolls (>= 3)."""
    compare_heuristics: bool = True
    """Also price every heuristic for comparison."""
    off_policy_steps: int = 0
    """train.off_policy_steps: 1 plans generation of the next batch beside training (graph.overlap)."""
    fusion: str = "off"
    """off | inter (stream every generate -> inference edge on disjoint devices) | intra (fuse every
    train pair on one placement with pp > 1 into one pipeline) | all (inter + intra) | auto (decide
    per edge and per pair)."""

    def __post_init__(self) -> None:
        if not isinstance(self.mode, PlanMode):
            raise PlanError(f"plan.mode {self.mode!r} is not one of {', '.join(m.value for m in PlanMode)}")
        if self.mode is PlanMode.MANUAL and not self.layouts:
            raise PlanError("plan.mode is manual but plan.layouts is empty; give a layout per call")
        if self.mode is PlanMode.FILE and not self.file:
            raise PlanError("plan.mode is file but plan.file is not set; give the plan file's path")
        if self.num_iterations < 3:
            raise PlanError(f"plan.num_iterations must be >= 3, got {self.num_iterations}")
        # the typed sub-options validate the rest
        self.search_options()
        self.space_options()

    def search_options(self) -> SearchOptions:
        """The annealing settings."""
        return SearchOptions(time_budget_s=self.time_budget_s, seed=self.seed)

    def space_options(self) -> SpaceOptions:
        """The plan-space settings."""
        return SpaceOptions(allow_pp_generate=self.allow_pp_generate,
                            micro_batch_choices=self.micro_batch_choices)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> PlanOptions:
        """Build from YAML-like data; unknown keys raise ValueError with the closest match."""
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise PlanError(f"unknown plan option {key!r}{hint}; known: {', '.join(sorted(names))}")
        mode = str(data.get("mode", "search"))
        if mode.startswith("heuristic:"):
            mode, data["heuristic"] = "heuristic", mode.split(":", 1)[1]
        try:
            data["mode"] = PlanMode(mode)
        except ValueError:
            raise PlanError(
                f"plan.mode {mode!r} is not one of {', '.join(m.value for m in PlanMode)}"
            ) from None
        data["layouts"] = {str(k): _manual(str(k), v) for k, v in dict(data.get("layouts") or {}).items()}
        return cls(**data)


def _manual(call: str, value: Any) -> ManualLayout:
    if isinstance(value, ManualLayout):
        value.check(call)
        return value
    if not isinstance(value, Mapping):
        raise PlanError(f"plan.layouts.{call}: expected a mapping with devices or start/size and dp, tp, pp")
    names = {f.name for f in dataclasses.fields(ManualLayout)}
    for key in value:
        if key not in names:
            raise PlanError(f"plan.layouts.{call}: unknown field {key!r}; known: {', '.join(sorted(names))}")
    kwargs = dict(value)
    if kwargs.get("devices") is not None:
        kwargs["devices"] = [int(d) for d in kwargs["devices"]]
    try:
        layout = ManualLayout(**kwargs)
    except TypeError as exc:
        raise PlanError(f"plan.layouts.{call}: {exc}") from None
    layout.check(call)
    return layout
