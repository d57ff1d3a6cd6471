"""The Plan: a layout for every call, what follows from it, and its file format.

A plan file (YAML or JSON, chosen by the suffix) holds:

    version: 1
    source: search            # search | heuristic:NAME | manual | file:PATH
    cluster: {num_nodes: 1, devices_per_node: 8}
    device_memory_bytes: 8.5e10
    iteration_time_s: 12.3    # estimate, informative
    calls:
      - {name: gen, model: actor, devices: [0, 1, 2, 3], dp: 1, tp: 4, pp: 1,
         micro_batches: 1, time_s: 3.1, peak_bytes: 2.0e10, resident_bytes: 1.4e10}
    reallocations: [{model, before_call, src, dst, time_s, bytes_total, every_iteration}]
    transfers: [{key, producer, consumer, src, dst, time_s, bytes_total}]
    device_peak_bytes: [...]

Only `cluster` and the per-call `name, model, devices, dp, tp, pp, micro_batches` are
read back as the plan; `load_plan` keeps the estimates for display, and `make_plan`
re-prices a loaded plan against the current cost model. The timeline is not saved
(re-simulate to get it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from graph.dataflow import DataflowGraph
from graph.files import atomic_write
from graph.placement.layout import Cluster, DeviceMesh, Layout
from planner.errors import PlanError
from planner.simulator import DataTransfer, ReallocStep, TimelineEntry

PLAN_FILE_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class CallPlan:
    """One call's layout and estimates."""

    name: str
    model: str
    layout: Layout
    time_s: float = 0.0
    peak_bytes: float = 0.0
    resident_bytes: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Plan:
    """Call -> Layout for every call, plus derived moves, timeline and memory."""

    cluster: Cluster
    calls: tuple[CallPlan, ...]
    """One entry per call, in the graph's topological order."""
    source: str = ""
    """Where the plan came from: search, heuristic:NAME, manual or file:PATH."""
    device_memory_bytes: float = 0.0
    iteration_time_s: float | None = None
    """Estimated steady-state seconds per iteration (None when not priced)."""
    feasible: bool = True
    reasons: tuple[str, ...] = ()
    reallocations: tuple[ReallocStep, ...] = ()
    transfers: tuple[DataTransfer, ...] = ()
    device_peak_bytes: tuple[float, ...] = ()
    timeline: tuple[TimelineEntry, ...] = field(default=(), repr=False)
    streamed: tuple[tuple[str, str], ...] = ()
    """(generate call, inference call) edges whose samples stream in chunks (plan.fusion)."""
    fused: tuple[tuple[str, str], ...] = ()
    """(train call, train call) pairs that run as one fused pipeline step (plan.fusion: intra)."""
    threads_per_worker: int = 0
    """Torch threads each worker runs with (CPU workers sharing cores: the search chooses it);
    0 leaves it to the launcher (an equal share of the machine's cores)."""

    def __post_init__(self) -> None:
        if not isinstance(self.threads_per_worker, int) or self.threads_per_worker < 0:
            raise PlanError(f"plan: threads_per_worker must be an integer >= 0, got {self.threads_per_worker!r}")
        names = [c.name for c in self.calls]
        if len(set(names)) != len(names):
            raise PlanError(f"plan lists a call twice: {names}")
        for c in self.calls:
            if c.layout.mesh.devices[-1] >= self.cluster.num_devices:
                raise PlanError(
                    f"call {c.name!r}: mesh {c.layout.mesh} uses devices beyond the cluster's "
                    f"{self.cluster.num_devices}; use device ids below {self.cluster.num_devices}"
                )

    @property
    def layouts(self) -> Mapping[str, Layout]:
        """Layout per call name."""
        return {c.name: c.layout for c in self.calls}

    def layout(self, call: str) -> Layout:
        """The layout of one call."""
        for c in self.calls:
            if c.name == call:
                return c.layout
        raise KeyError(f"plan has no call {call!r}; calls: {', '.join(c.name for c in self.calls)}")

    # ------------------------------------------------------------------ validation

    def check_matches(self, graph: DataflowGraph, cluster: Cluster) -> None:
        """ValueError naming the first difference between this plan and the experiment."""
        prefix = "plan file does not match the experiment"
        if self.cluster != cluster:
            raise PlanError(
                f"{prefix}: the plan is for {self.cluster.num_nodes} x "
                f"{self.cluster.devices_per_node} devices, the experiment has "
                f"{cluster.num_nodes} x {cluster.devices_per_node}; re-plan for this cluster"
            )
        planned = {c.name: c for c in self.calls}
        for call in graph.calls:
            if call.name not in planned:
                raise PlanError(f"{prefix}: call {call.name!r} has no layout in the plan; re-plan or add it")
            if planned[call.name].model != call.model:
                raise PlanError(
                    f"{prefix}: call {call.name!r} runs model {call.model!r} but the plan says "
                    f"{planned[call.name].model!r}; re-plan"
                )
        extra = sorted(set(planned) - {c.name for c in graph.calls})
        if extra:
            raise PlanError(f"{prefix}: the plan has call(s) {', '.join(extra)} the experiment lacks; re-plan")

    # ------------------------------------------------------------------ dict / file

    def to_dict(self) -> dict[str, Any]:
        """Plain data (see the module docstring)."""
        return {
            "version": PLAN_FILE_VERSION,
            "source": self.source,
            "cluster": {"num_nodes": self.cluster.num_nodes,
                        "devices_per_node": self.cluster.devices_per_node},
            "device_memory_bytes": self.device_memory_bytes,
            "iteration_time_s": self.iteration_time_s,
            "threads_per_worker": self.threads_per_worker,
            "feasible": self.feasible,
            "reasons": list(self.reasons),
            "calls": [{"name": c.name, "model": c.model, **layout_to_dict(c.layout),
                       "time_s": c.time_s, "peak_bytes": c.peak_bytes,
                       "resident_bytes": c.resident_bytes} for c in self.calls],
            "reallocations": [{"model": r.model, "before_call": r.before_call,
                               "src": layout_to_dict(r.src), "dst": layout_to_dict(r.dst),
                               "time_s": r.time_s, "bytes_total": r.bytes_total,
                               "every_iteration": r.every_iteration} for r in self.reallocations],
            "transfers": [{"key": t.key, "producer": t.producer, "consumer": t.consumer,
                           "src": layout_to_dict(t.src), "dst": layout_to_dict(t.dst),
                           "time_s": t.time_s, "bytes_total": t.bytes_total}
                          for t in self.transfers],
            "device_peak_bytes": list(self.device_peak_bytes),
            **({"streamed": [list(e) for e in self.streamed]} if self.streamed else {}),
            **({"fused": [list(e) for e in self.fused]} if self.fused else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, where: str = "plan") -> Plan:
        """Read `to_dict` output back; ValueError naming the bad field."""
        if not isinstance(data, Mapping):
            raise PlanError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
        version = data.get("version")
        if version != PLAN_FILE_VERSION:
            raise PlanError(f"{where}: version {version!r} is not supported; expected {PLAN_FILE_VERSION}")
        try:
            cl = data["cluster"]
            cluster = Cluster(num_nodes=int(cl["num_nodes"]), devices_per_node=int(cl["devices_per_node"]))
            calls = tuple(_call_from_dict(c, where) for c in data["calls"])
            reallocs = tuple(ReallocStep(model=r["model"], before_call=r["before_call"],
                                         src=layout_from_dict(r["src"], f"{where}: reallocation"),
                                         dst=layout_from_dict(r["dst"], f"{where}: reallocation"),
                                         time_s=float(r["time_s"]), bytes_total=float(r["bytes_total"]),
                                         every_iteration=bool(r["every_iteration"]))
                             for r in data.get("reallocations", ()))
            transfers = tuple(DataTransfer(key=t["key"], producer=t["producer"], consumer=t["consumer"],
                                           src=layout_from_dict(t["src"], f"{where}: transfer"),
                                           dst=layout_from_dict(t["dst"], f"{where}: transfer"),
                                           time_s=float(t["time_s"]), bytes_total=float(t["bytes_total"]))
                              for t in data.get("transfers", ()))
        except KeyError as exc:
            raise PlanError(f"{where}: missing field {exc.args[0]!r}") from None
        except TypeError as exc:
            raise PlanError(f"{where}: malformed entry ({exc})") from None
        it = data.get("iteration_time_s")
        return cls(cluster=cluster, calls=calls, source=str(data.get("source", "")),
                   device_memory_bytes=float(data.get("device_memory_bytes", 0.0)),
                   iteration_time_s=None if it is None else float(it),
                   feasible=bool(data.get("feasible", True)),
                   reasons=tuple(data.get("reasons", ())), reallocations=reallocs,
                   transfers=transfers,
                   device_peak_bytes=tuple(float(x) for x in data.get("device_peak_bytes", ())),
                   streamed=_streamed_from(data.get("streamed", ()), where),
                   fused=_streamed_from(data.get("fused", ()), where, "fused", "[train call, train call]"),
                   threads_per_worker=_threads(data.get("threads_per_worker", 0), where))

    def save(self, path: str | Path) -> Path:
        """Write YAML (.yaml/.yml) or JSON (.json), atomically (a reader never sees a torn file)."""
        p = Path(path)
        data = self.to_dict()
        if p.suffix in (".yaml", ".yml"):
            import yaml

            atomic_write(p, yaml.safe_dump(data, sort_keys=False, default_flow_style=None))
        elif p.suffix == ".json":
            atomic_write(p, json.dumps(data, indent=2) + "\n")
        else:
            raise PlanError(f"plan file {str(p)!r}: use a .yaml, .yml or .json suffix")
        return p


def _threads(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PlanError(f"{where}: threads_per_worker must be an integer >= 0 (0: the launcher's share), "
                        f"got {value!r}")
    return value


def load_plan(path: str | Path) -> Plan:
    """Read a plan file written by `Plan.save`."""
    p = Path(path)
    if not p.is_file():
        raise PlanError(f"plan file {str(p)!r} does not exist; write one with `realloc plan --out`")
    text = p.read_text()
    try:
        if p.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise different types
        raise PlanError(f"plan file {str(p)!r} is not valid {p.suffix[1:] or 'YAML'}: {exc}") from None
    return Plan.from_dict(data, where=f"plan file {str(p)!r}")


def layout_to_dict(layout: Layout) -> dict[str, Any]:
    """devices, dp, tp, pp, micro_batches."""
    return {"devices": list(layout.mesh.devices), "dp": layout.dp, "tp": layout.tp,
            "pp": layout.pp, "micro_batches": layout.micro_batches}


def layout_from_dict(d: Mapping[str, Any], where: str) -> Layout:
    """Inverse of `layout_to_dict`; ValueError naming `where`."""
    try:
        mesh = DeviceMesh(devices=tuple(int(x) for x in d["devices"]))
        return Layout(mesh=mesh, dp=int(d["dp"]), tp=int(d["tp"]), pp=int(d["pp"]),
                      micro_batches=int(d.get("micro_batches", 1)))
    except KeyError as exc:
        raise PlanError(f"{where}: layout is missing {exc.args[0]!r}") from None
    except ValueError as exc:
        raise PlanError(f"{where}: {exc}") from None


def _call_from_dict(c: Mapping[str, Any], where: str) -> CallPlan:
    name = c["name"]
    return CallPlan(name=str(name), model=str(c["model"]),
                    layout=layout_from_dict(c, f"{where}: call {name!r}"),
                    time_s=float(c.get("time_s", 0.0)), peak_bytes=float(c.get("peak_bytes", 0.0)),
                    resident_bytes=float(c.get("resident_bytes", 0.0)))


def _streamed_from(value: Any, where: str, field_name: str = "streamed",
                   pair: str = "[generate call, inference call]") -> tuple[tuple[str, str], ...]:
    try:
        edges = tuple((str(g), str(c)) for g, c in value)
    except (TypeError, ValueError):
        raise PlanError(f"{where}: {field_name} must be a list of {pair} pairs") from None
    return edges
