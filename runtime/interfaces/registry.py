"""The runtime's interface registry: name -> implementation (same names as graph.catalog).

The implementations register themselves when their modules are imported; the package
`runtime.interfaces` imports all of them, so importing anything from it fills the
registry (this module imports none of them: no import cycle).

An implementation is `fn(engine, batch, args, ctx) -> SeqBatch | dict[str, float]`:
generate and inference return a SeqBatch (the input plus new fields), train returns
scalar statistics. Call `run_interface` on EVERY rank of the engine's layout with the
same full batch: the interface splits it over data parallelism itself and every rank
returns the same, complete result.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from graph.catalog import INTERFACES, get_interface
from graph.registry import Registry

if TYPE_CHECKING:
    from runtime.engine.model_engine import ModelEngine

IMPLEMENTATIONS: Registry[Callable[..., Any]] = Registry("interface implementation")
"""Catalog name -> implementation; filled when `runtime.interfaces` is imported."""


@dataclass(frozen=True, kw_only=True)
class CallContext:
    """What an interface needs besides the engine, the batch and its typed args."""

    eos_ids: tuple[int, ...] = ()
    """Token ids that end a response (generate)."""
    decode: Callable[[list[int]], str] | None = None
    """Detokeniser, for stop strings and rule-based rewards."""
    rule: str | None = None
    """Rule name of a rule-based reward model (rule_reward)."""
    seed: int = 0
    """Base seed of sampling."""
    step: int = 0
    """Iteration number (varies the sampling seed; sets the LR schedule's horizon use)."""
    total_steps: int = 1000
    """Optimizer steps the LR schedule decays over (linear / cosine)."""
    micro_batches: int = 0
    """Micro-batches of this call; 0 takes the engine layout's (calls may share an engine)."""
    side_inputs: Mapping[str, Any] = field(default_factory=dict)
    """Sequence inputs after the first, by role (e.g. `ptx`): whole SeqBatches of their own."""
    on_finished: Callable[[Any], None] | None = None
    """generate: called with each chunk (a SeqBatch) of finished samples of this replica while
    generation goes on (inter-stage fusion, runtime.execution.streaming); None streams nothing."""
    stream_chunk: int = 0
    """generate: fewest finished samples per chunk passed to `on_finished`."""
    reward_functions: tuple[Any, ...] = ()
    """The reward model's functions, loaded (runtime.rewards.functions.LoadedFunction; rule_reward)."""
    reward_time_limit_s: float = 0.0
    """Longest one reward function may take on a batch (0: no limit)."""
    rows: Mapping[int, Any] = field(default_factory=dict)
    """Each sample's dataset record by sample id (their prompts and columns feed reward functions)."""


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register the implementation of catalog interface `name`."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if name not in INTERFACES:
            raise ValueError(f"bug: implementation of {name!r}, which is not in the catalog "
                             f"(graph.catalog); known: {', '.join(sorted(INTERFACES))}")
        return IMPLEMENTATIONS.add(name, fn)

    return deco


def implemented_interfaces() -> tuple[str, ...]:
    """Names with a runtime implementation, sorted."""
    return tuple(sorted(IMPLEMENTATIONS))


def get_impl(name: str) -> Callable[..., Any]:
    """The implementation of `name`; an unknown name names the closest and lists the known ones."""
    return IMPLEMENTATIONS.get(name)


def run_interface(name: str, engine: ModelEngine | None, batch: Any, args: Any = None,
                  ctx: CallContext | None = None) -> Any:
    """Run interface `name` (default args when None) on this rank's engine."""
    impl = get_impl(name)
    info = get_interface(name)
    if args is None:
        args = info.args_type()
    if not isinstance(args, info.args_type):
        raise ValueError(f"interface {name!r} takes {info.args_type.__name__}, got "
                         f"{type(args).__name__}")
    return impl(engine, batch, args, ctx or CallContext())
