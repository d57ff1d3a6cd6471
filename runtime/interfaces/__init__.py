"""What a call does: the implementations of the interface catalog (`graph.catalog`), and
the RL math they use.

Owns: the implementation registry and `run_interface` (`registry`), data parallelism
inside an interface (`dp`), generation (`generate`), inference (`inference`: log-probs,
values, rewards), training losses (`train`), the pure RL math (`rl_math`: GAE, PPO/GRPO
losses, KL estimators, LR schedules) and GRPOVI's reward-variance increase
(`reward_variance`), the policy-gradient family's math (`pg_math`) and its
`pg_actor` (`pg_train`: RLOO, REINFORCE++, GSPO, Dr. GRPO, DAPO).

May import: `graph`, `runtime.engine`, `runtime.data`, `runtime.rewards`, torch, numpy.
"""

# importing the implementations registers them (see registry)
from runtime.interfaces import generate, inference, pg_train, train  # noqa: E402, F401, I001
from runtime.interfaces.registry import (
    CallContext,
    get_impl,
    implemented_interfaces,
    register,
    run_interface,
)

__all__ = ["CallContext", "get_impl", "implemented_interfaces", "register", "run_interface"]
