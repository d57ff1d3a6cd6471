"""Interface implementations (generate, inference, train) keyed by catalog name."""

from runtime.interfaces.registry import (
    CallContext,
    get_impl,
    implemented_interfaces,
    register,
    run_interface,
)

__all__ = ["CallContext", "get_impl", "implemented_interfaces", "register", "run_interface"]
