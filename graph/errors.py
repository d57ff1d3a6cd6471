"""Errors a user can cause through the graph."""


class GraphError(ValueError):
    """An invalid dataflow graph: names the call and key at fault and the fix."""
