"""The augmented dataflow graph: calls, data edges and parameter-version edges.

Edges inside one iteration:
- data: a key's producer comes before each of its consumers;
- param: every call that reads model M's weights comes before M's train call.
Across iterations (`cross_edges`): every call on M waits for the previous iteration's
train of M. Those edges would close cycles inside one iteration, so they are kept
apart; the simulator unrolls iterations with them.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import networkx as nx

from graph.catalog import get_interface
from graph.errors import GraphError
from graph.roles import check_bindings
from graph.spec import Call, CallKind, ModelSpec


@dataclass(frozen=True)
class Edge:
    """A dependency from call `src` to call `dst`."""

    src: str
    dst: str
    kind: str  # "data" or "param"
    key: str = ""  # the data key, or the model role of a param edge


class DataflowGraph:
    """An immutable, validated graph of calls. Build it with `DataflowGraph(...)`."""

    def __init__(self, *, models: Iterable[ModelSpec], calls: Iterable[Call],
                 dataset_keys: Iterable[str] = ()) -> None:
        self._models: dict[str, ModelSpec] = {}
        for model in models:
            if model.role in self._models:
                raise GraphError(f"model role {model.role!r} is defined twice; give each model a distinct role")
            self._models[model.role] = model
        self._calls: dict[str, Call] = {}
        for call in calls:
            if call.name in self._calls:
                raise GraphError(f"duplicate call name {call.name!r}; give each call a distinct name")
            self._calls[call.name] = call
        if not self._calls:
            raise GraphError("the graph has no calls; use a template or list calls under graph.calls")
        self._dataset_keys = frozenset(dataset_keys)
        self._check_calls()
        self._producers = self._find_producers()
        self._edges = self._build_edges()
        self._nx = nx.DiGraph()
        self._nx.add_nodes_from(self._calls)
        for edge in self._edges:
            if self._nx.has_edge(edge.src, edge.dst):
                self._nx[edge.src][edge.dst]["edges"].append(edge)
            else:
                self._nx.add_edge(edge.src, edge.dst, edges=[edge])
        self._check_acyclic()
        self._order = tuple(nx.lexicographical_topological_sort(self._nx, key=self._position))

    # ------------------------------------------------------------------ validation

    def _position(self, name: str) -> int:
        return list(self._calls).index(name)

    def _check_calls(self) -> None:
        trained: dict[str, str] = {}
        for call in self._calls.values():
            if call.model not in self._models:
                close = difflib.get_close_matches(call.model, self._models, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise GraphError(
                    f"call {call.name!r}: unknown model role {call.model!r}{hint}; "
                    f"defined models: {', '.join(self._models) or 'none'}"
                )
            info = get_interface(call.interface)
            if info.kind != call.kind:
                raise GraphError(
                    f"call {call.name!r}: interface {call.interface!r} is a {info.kind.value} "
                    f"interface but the call's kind is {call.kind.value}; set kind: {info.kind.value} "
                    f"or pick a {call.kind.value} interface"
                )
            if call.args is not None and not isinstance(call.args, info.args_type):
                raise GraphError(
                    f"call {call.name!r}: args are {type(call.args).__name__}, interface "
                    f"{call.interface!r} takes {info.args_type.__name__}"
                )
            check_bindings(call.interface, call.inputs, call.outputs, where=f"call {call.name!r}")
            model = self._models[call.model]
            if model.is_rule and info.needs_weights:
                raise GraphError(
                    f"call {call.name!r}: model {call.model!r} is the rule-based reward "
                    f"{repr(model.rule) if model.rule else '(reward functions)'} and has no weights; "
                    "use interface 'rule_reward'"
                )
            if not model.is_rule and not info.needs_weights:
                raise GraphError(
                    f"call {call.name!r}: interface {call.interface!r} needs a rule-based model, "
                    f"but {call.model!r} is a neural model; set models.{call.model}.rule"
                )
            if call.kind is CallKind.TRAIN:
                if not model.trainable:
                    raise GraphError(
                        f"call {call.name!r} trains model {call.model!r}, which is not trainable; "
                        f"set models.{call.model}.trainable=true or drop the call"
                    )
                if call.model in trained:
                    raise GraphError(
                        f"model {call.model!r} is trained by two calls, {trained[call.model]!r} and "
                        f"{call.name!r}; merge them into one train call"
                    )
                trained[call.model] = call.name
            if call.kind is CallKind.GENERATE and model.value_head:
                raise GraphError(
                    f"call {call.name!r}: model {call.model!r} has a value head and cannot generate"
                )

    def _find_producers(self) -> dict[str, str]:
        producers: dict[str, str] = {}
        for call in self._calls.values():
            for key in call.outputs:
                if key in producers:
                    raise GraphError(
                        f"key {key!r} is produced by two calls, {producers[key]!r} and {call.name!r}; "
                        "rename one of the outputs"
                    )
                if key in self._dataset_keys:
                    raise GraphError(
                        f"call {call.name!r} produces key {key!r}, which the dataset already provides; "
                        "rename the output"
                    )
                producers[key] = call.name
        for call in self._calls.values():
            for key in call.inputs:
                if key not in producers and key not in self._dataset_keys:
                    known = sorted(set(producers) | self._dataset_keys)
                    close = difflib.get_close_matches(key, known, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    raise GraphError(
                        f"call {call.name!r} consumes key {key!r}{hint}, which no call produces and the "
                        f"dataset does not provide; available keys: {', '.join(known) or 'none'}"
                    )
        return producers

    def _build_edges(self) -> list[Edge]:
        edges = []
        for call in self._calls.values():
            for key in call.inputs:
                src = self._producers.get(key)
                if src is not None:
                    if src == call.name:
                        raise GraphError(f"call {call.name!r} consumes its own output {key!r}")
                    edges.append(Edge(src, call.name, "data", key))
        for trainer in self._calls.values():
            if trainer.kind is not CallKind.TRAIN:
                continue
            for reader in self._calls.values():
                if reader.model == trainer.model and reader.name != trainer.name:
                    edges.append(Edge(reader.name, trainer.name, "param", trainer.model))
        return edges

    def _check_acyclic(self) -> None:
        try:
            cycle = nx.find_cycle(self._nx)
        except nx.NetworkXNoCycle:
            return
        names = [u for u, _ in cycle] + [cycle[0][0]]
        reasons = []
        for u, v in cycle:
            for edge in self._nx[u][v]["edges"]:
                if edge.kind == "data":
                    reasons.append(f"{u} -> {v} (key {edge.key!r})")
                else:
                    reasons.append(f"{u} -> {v} ({edge.key!r} weights must be read before its train call)")
                break
        raise GraphError(
            f"the graph has a cycle {' -> '.join(names)}: {'; '.join(reasons)}; break it by "
            "removing one of those inputs"
        )

    # ------------------------------------------------------------------ queries

    @property
    def models(self) -> Mapping[str, ModelSpec]:
        """Models by role."""
        return dict(self._models)

    @property
    def calls(self) -> tuple[Call, ...]:
        """Calls in topological order (ties broken by declaration order)."""
        return tuple(self._calls[name] for name in self._order)

    @property
    def dataset_keys(self) -> frozenset[str]:
        """Keys provided by the dataset."""
        return self._dataset_keys

    def call(self, name: str) -> Call:
        """A call by name."""
        try:
            return self._calls[name]
        except KeyError:
            raise KeyError(f"no call named {name!r}; calls: {', '.join(self._calls)}") from None

    def topological_order(self) -> tuple[str, ...]:
        """Call names in a dependency-respecting order."""
        return self._order

    def producer(self, key: str) -> str | None:
        """Name of the call producing `key`, or None when the dataset provides it."""
        return self._producers.get(key)

    @property
    def edges(self) -> tuple[Edge, ...]:
        """Every intra-iteration edge (data and param)."""
        return tuple(self._edges)

    def data_edges(self) -> tuple[Edge, ...]:
        """Producer -> consumer edges, one per key."""
        return tuple(e for e in self._edges if e.kind == "data")

    def param_edges(self) -> tuple[Edge, ...]:
        """Reader -> trainer edges within an iteration."""
        return tuple(e for e in self._edges if e.kind == "param")

    @cached_property
    def cross_edges(self) -> tuple[Edge, ...]:
        """Edges from iteration i to iteration i+1: M's train call -> every call on M."""
        out = []
        for trainer in self._calls.values():
            if trainer.kind is CallKind.TRAIN:
                for call in self._calls.values():
                    if call.model == trainer.model:
                        out.append(Edge(trainer.name, call.name, "param", trainer.model))
        return tuple(out)

    def predecessors(self, name: str) -> tuple[str, ...]:
        """Calls `name` directly depends on within an iteration."""
        return tuple(sorted(self._nx.predecessors(name), key=self._position))

    def successors(self, name: str) -> tuple[str, ...]:
        """Calls that directly depend on `name` within an iteration."""
        return tuple(sorted(self._nx.successors(name), key=self._position))

    def calls_of(self, role: str) -> tuple[Call, ...]:
        """Calls on model `role`, in topological order."""
        return tuple(c for c in self.calls if c.model == role)

    def train_call(self, role: str) -> Call | None:
        """The train call of model `role`, if any."""
        return next((c for c in self.calls_of(role) if c.kind is CallKind.TRAIN), None)

    @cached_property
    def _ancestors(self) -> dict[str, frozenset[str]]:
        return {name: frozenset(nx.ancestors(self._nx, name)) for name in self._calls}

    def depends_on(self, later: str, earlier: str) -> bool:
        """Whether `later` transitively depends on `earlier` within an iteration."""
        return earlier in self._ancestors[later]

    def may_run_concurrently(self, a: str, b: str) -> bool:
        """True when neither call depends on the other within an iteration."""
        return a != b and not self.depends_on(a, b) and not self.depends_on(b, a)

    def concurrent_pairs(self) -> tuple[tuple[str, str], ...]:
        """Every unordered pair of calls that may run at the same time."""
        names = self._order
        return tuple((a, b) for i, a in enumerate(names) for b in names[i + 1:]
                     if self.may_run_concurrently(a, b))

    def to_networkx(self) -> nx.DiGraph:
        """A copy of the intra-iteration graph (node = call name, edge attr `edges`)."""
        return self._nx.copy()
