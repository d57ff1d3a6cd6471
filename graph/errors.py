"""Errors: what a user can cause, as one type every layer raises and the CLI catches.

`UserError` is the base of every error a user can cause and fix (bad YAML, an unknown key,
an impossible layout, a missing checkpoint, a broken dataset). Its message is one line
naming the key or value and the fix. The CLI prints it and exits 2. Anything else that
escapes is a bug in realloc: the CLI says so, with the log of the traceback, and exits 1.

It subclasses ValueError so that code (and tests) catching ValueError around validation
keep working; the CLI catches `UserError` only, so a ValueError raised inside torch is not
mistaken for a user's mistake.
"""


class UserError(ValueError):
    """A mistake in the user's input; the message names the key or value and the fix."""


class GraphError(UserError):
    """An invalid dataflow graph: names the call and key at fault and the fix."""


class UnknownNameError(UserError):
    """A name missing from a registry; the message lists the known names and the closest one."""
