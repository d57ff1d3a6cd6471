"""Text listing, DOT and PNG rendering of a graph."""

import re

import pytest

from graph.drawing import graph_dot, graph_text, write_graph
from tests.graph.test_templates import RULE, build


@pytest.fixture(scope="module")
def ppo():
    return build("ppo", RULE, "prompts_with_answers")


def test_text_lists_every_call_and_edge(ppo):
    text = graph_text(ppo)
    for c in ppo.calls:
        assert re.search(rf"^  {c.name}\s+{c.kind.value}", text, re.M)
    assert text.count(" -> ") == len(ppo.edges) + len(ppo.cross_edges)
    assert "rule-based reward 'arithmetic_exact'" in text


def test_dot_has_nodes_and_edges(ppo):
    dot = graph_dot(ppo)
    assert dot.startswith("digraph realloc {") and dot.rstrip().endswith("}")
    boxes = re.findall(r'^  "(\w+)" \[label=', dot, re.M)
    assert set(boxes) == {c.name for c in ppo.calls}
    arrows = re.findall(r'^  "([\w:]+)" -> "(\w+)"', dot, re.M)
    internal = [(a, b) for a, b in arrows if not a.startswith("data:")]
    assert len(internal) == len(ppo.edges) + len(ppo.cross_edges)
    assert ("data:prompts", "actor_gen") in arrows


def test_write_files(ppo, tmp_path):
    dot = write_graph(ppo, tmp_path / "g.dot")
    assert dot.read_text() == graph_dot(ppo)
    png = write_graph(ppo, tmp_path / "g.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    with pytest.raises(ValueError, match="use a .dot, .png, .svg or .pdf"):
        write_graph(ppo, tmp_path / "g.txt")
    with pytest.raises(ValueError, match="does not exist"):
        write_graph(ppo, tmp_path / "nope" / "g.dot")
