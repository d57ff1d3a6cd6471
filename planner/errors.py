"""Errors the planner raises for input a user can fix."""

from graph.errors import UserError


class PlanError(UserError):
    """No plan can be made, read or run as asked: names the call or key at fault and the fix."""
