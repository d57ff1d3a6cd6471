"""Static checks of the house rules on imports (read from the source with `ast`, nothing imported).

1. `graph/`, `cost_model/` and `planner/` never import torch, megatron or transformers, at any
   depth (function-level imports included): planning must answer on a laptop without them.
2. Imports flow down the layers: realloc -> runtime -> planner -> cost_model -> graph, with the
   runtime never importing the planner (plans reach it as plain data) nor the front door.
3. Inside the runtime, each room imports only the rooms its package docstring allows.
4. No import cycle among module-level imports (what runs when a module is imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("realloc", "graph", "planner", "cost_model", "runtime")
HEAVY = ("torch", "megatron", "transformers")
PURE = ("graph", "cost_model", "planner")

LAYER_MAY_IMPORT = {
    "graph": {"graph"},
    "cost_model": {"cost_model", "graph"},
    "planner": {"planner", "cost_model", "graph"},
    "runtime": {"runtime", "cost_model", "graph"},
    "realloc": set(PACKAGES),
}
ROOM_MAY_IMPORT = {
    "runtime.engine": {"runtime.engine", "runtime.data"},
    "runtime.data": {"runtime.data"},
    "runtime.rewards": {"runtime.rewards"},
    "runtime.interfaces": {"runtime.interfaces", "runtime.engine", "runtime.data", "runtime.rewards"},
    "runtime.rundir": {"runtime.rundir", "runtime.engine"},
    "runtime.profiling": {"runtime.profiling", "runtime.engine", "runtime.interfaces", "runtime.data",
                          "runtime.execution"},
    "runtime.execution": {"runtime.execution", "runtime.engine", "runtime.interfaces", "runtime.data",
                          "runtime.rewards", "runtime.rundir"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            out[_module_name(path)] = path
    return out


MODULES = _modules()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(path: Path, *, module_level_only: bool) -> list[str]:
    """Names of the modules `path` imports (a `from X import y` that names a module is X.y)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                found.extend(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append(node.module)
                found.extend(f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES)
            elif isinstance(node, ast.If) and _is_type_checking(node):
                if not module_level_only:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for field in ("body", "orelse", "finalbody", "handlers"):
                    for child in getattr(node, field, []):
                        visit(child.body if isinstance(child, ast.ExceptHandler) else [child])
            elif not module_level_only:
                visit([n for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)])

    visit(tree.body)
    return found


def _room(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "runtime" and len(parts) > 2 else parts[0]


@pytest.mark.parametrize("module", [m for m in MODULES if m.split(".")[0] in PURE])
def test_pure_layers_import_no_torch_megatron_or_transformers(module):
    heavy = [name for name in _imports(MODULES[module], module_level_only=False) if name.split(".")[0] in HEAVY]
    assert heavy == [], f"{module} imports {heavy[0]}"


def test_layers_import_only_downwards():
    wrong = []
    for module, path in MODULES.items():
        layer = module.split(".")[0]
        for name in _imports(path, module_level_only=False):
            top = name.split(".")[0]
            if top in PACKAGES and top not in LAYER_MAY_IMPORT[layer]:
                wrong.append(f"{module} -> {name}")
    assert wrong == []


def test_runtime_rooms_import_only_what_their_docstrings_allow():
    wrong = []
    for module, path in MODULES.items():
        room = _room(module)
        if room not in ROOM_MAY_IMPORT:
            continue
        for name in _imports(path, module_level_only=False):
            target = _room(name)
            if name.startswith("runtime.") and target != "runtime" and target not in ROOM_MAY_IMPORT[room]:
                wrong.append(f"{module} -> {name}")
    assert wrong == []


def test_no_import_cycles_at_module_level():
    graph = nx.DiGraph()
    for module, path in MODULES.items():
        graph.add_node(module)
        for name in _imports(path, module_level_only=True):
            # importing a.b.c runs a/__init__, a.b/__init__ and a.b.c
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                target = ".".join(parts[:i])
                if target in MODULES and target != module and not module.startswith(target + "."):
                    graph.add_edge(module, target)
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert cycles == []


def test_every_runtime_room_documents_what_it_owns_and_may_import():
    for room in ROOM_MAY_IMPORT:
        doc = ast.get_docstring(ast.parse((ROOT / room.replace(".", "/") / "__init__.py").read_text())) or ""
        assert "May import" in doc, room
