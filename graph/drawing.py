"""Rendering a dataflow graph: a text listing, Graphviz DOT, and a PNG picture."""

from __future__ import annotations

from pathlib import Path

from graph.dataflow import DataflowGraph
from graph.errors import UserError
from graph.spec import CallKind

_KIND_COLOUR = {CallKind.GENERATE: "#a6cee3", CallKind.INFERENCE: "#b2df8a", CallKind.TRAIN: "#fb9a99"}


def graph_text(graph: DataflowGraph) -> str:
    """A listing of calls in topological order, their data and the dependencies."""
    lines = ["models:"]
    for role, model in graph.models.items():
        if model.is_rule:
            desc = (f"rule-based reward {model.rule!r}" if model.rule is not None else
                    "reward functions " + ", ".join(f"{f.name} x{f.weight:g}" for f in model.functions))
        else:
            arch = model.arch
            assert arch is not None
            desc = (f"{arch.family} {arch.num_layers}L h{arch.hidden_size} "
                    f"{model.num_params / 1e6:.2f}M params")
            desc += ", trainable" if model.trainable else ""
            desc += ", value head" if model.value_head else ""
            desc += f", from {model.checkpoint}" if model.checkpoint else ", random init"
        lines.append(f"  {role:<10} {desc}")
    lines.append(f"dataset keys: {', '.join(sorted(graph.dataset_keys)) or 'none'}")
    lines.append("calls (topological order):")
    for call in graph.calls:
        lines.append(
            f"  {call.name:<14} {call.kind.value:<9} {call.model:<8} {call.interface:<12} "
            f"batch={call.batch_size} mb={call.micro_batches} "
            f"len={call.prompt_len}+{call.response_len}"
        )
        lines.append(f"  {'':<14} in: {', '.join(call.inputs) or '-'}   out: {', '.join(call.outputs) or '-'}")
    lines.append("dependencies:")
    for edge in graph.edges:
        what = f"key {edge.key}" if edge.kind == "data" else f"{edge.key} weights read before train"
        lines.append(f"  {edge.src} -> {edge.dst}  ({what})")
    for edge in graph.cross_edges:
        lines.append(f"  {edge.src} -> next iteration's {edge.dst}  ({edge.key} weights updated)")
    return "\n".join(lines)


def graph_dot(graph: DataflowGraph) -> str:
    """Graphviz DOT: calls as boxes coloured by kind, dataset keys as ellipses."""
    out = ["digraph realloc {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for key in sorted(graph.dataset_keys):
        out.append(f'  "data:{key}" [label="{key}", shape=ellipse, style=dashed];')
    for call in graph.calls:
        label = f"{call.name}\\n{call.kind.value} · {call.model}\\n{call.interface}"
        colour = _KIND_COLOUR[call.kind]
        out.append(f'  "{call.name}" [label="{label}", shape=box, style=filled, fillcolor="{colour}"];')
    for call in graph.calls:
        for key in call.inputs:
            if graph.producer(key) is None:
                out.append(f'  "data:{key}" -> "{call.name}" [label="{key}", style=dashed];')
    for edge in graph.edges:
        if edge.kind == "data":
            out.append(f'  "{edge.src}" -> "{edge.dst}" [label="{edge.key}"];')
        else:
            out.append(f'  "{edge.src}" -> "{edge.dst}" [style=dotted, color=gray40, label="{edge.key} v"];')
    for edge in graph.cross_edges:
        out.append(f'  "{edge.src}" -> "{edge.dst}" [style=dotted, color=red, constraint=false, '
                   f'label="next iter"];')
    out.append("}")
    return "\n".join(out) + "\n"


def write_graph(graph: DataflowGraph, path: str | Path) -> Path:
    """Write the graph to `path`: .dot (DOT text), .png or .svg (drawn with matplotlib)."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".dot", ".gv", ".png", ".svg", ".pdf"):
        raise UserError(f"cannot write a graph to {str(p)!r}: use a .dot, .png, .svg or .pdf file name")
    if not p.parent.exists():
        raise UserError(f"cannot write {str(p)!r}: directory {str(p.parent)!r} does not exist")
    if suffix in (".dot", ".gv"):
        p.write_text(graph_dot(graph))
        return p
    _draw(graph, p)
    return p


def _draw(graph: DataflowGraph, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        raise UserError("drawing a picture needs matplotlib; pip install matplotlib, or write a .dot file") from None
    import networkx as nx

    g = graph.to_networkx()
    for layer, names in enumerate(nx.topological_generations(g)):
        for name in names:
            g.nodes[name]["layer"] = layer
    pos = nx.multipartite_layout(g, subset_key="layer")
    width = 3 + 2.6 * (1 + max(g.nodes[n]["layer"] for n in g))
    fig, ax = plt.subplots(figsize=(width, 4.5))
    colours = [_KIND_COLOUR[graph.call(n).kind] for n in g]
    labels = {n: f"{n}\n{graph.call(n).model}·{graph.call(n).interface}" for n in g}
    data = [(e.src, e.dst) for e in graph.data_edges()]
    param = [(e.src, e.dst) for e in graph.param_edges() if (e.src, e.dst) not in set(data)]
    nx.draw_networkx_nodes(g, pos, ax=ax, node_color=colours, node_shape="s", node_size=3600)
    nx.draw_networkx_labels(g, pos, labels=labels, ax=ax, font_size=7)
    nx.draw_networkx_edges(g, pos, edgelist=data, ax=ax, node_size=3600, arrowsize=14)
    nx.draw_networkx_edges(g, pos, edgelist=param, ax=ax, node_size=3600, style="dotted",
                           edge_color="gray", arrowsize=12, connectionstyle="arc3,rad=0.25")
    keys: dict[tuple[str, str], list[str]] = {}
    for e in graph.data_edges():
        keys.setdefault((e.src, e.dst), []).append(e.key)
    nx.draw_networkx_edge_labels(g, pos, edge_labels={k: ",".join(v) for k, v in keys.items()},
                                 ax=ax, font_size=6)
    handles = [plt.Line2D([], [], marker="s", ls="", color=c, markersize=10, label=k.value)
               for k, c in _KIND_COLOUR.items()]
    handles.append(plt.Line2D([], [], ls=":", color="gray", label="weights read before train"))
    ax.legend(handles=handles, loc="lower center", ncol=4, fontsize=7, frameon=False,
              bbox_to_anchor=(0.5, -0.12))
    ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)
