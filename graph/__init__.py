"""The augmented dataflow graph of an RLHF algorithm (pure: no torch)."""

from graph.dataflow import DataflowGraph, Edge
from graph.errors import GraphError
from graph.spec import Call, CallKind, DatasetSpec, ModelArch, ModelSpec

__all__ = ["Call", "CallKind", "DataflowGraph", "DatasetSpec", "Edge", "GraphError", "ModelArch", "ModelSpec"]
