"""Cost model: hardware specs, time and memory per call, reallocation and data-transfer cost.

Owns the prices of the plain data model (`graph`, `graph.placement`): how long a call
takes in a layout, how much memory it needs, what a reallocation or a data transfer
costs, and the calibration that fits those prices to a measured profile.

May import: `graph`, numpy and the standard library (never torch, megatron or
transformers). The planner depends on `CostProvider` (`cost_model.provider`);
`AnalyticCostModel` implements it.
"""

from cost_model.estimate_text import format_estimate, print_estimate
from cost_model.estimator import AnalyticCostModel, EstimatorOptions, mfu
from cost_model.hardware import PRESETS, HardwareSpec, preset
from cost_model.profile import Profile, load_hardware, load_profile, save_profile
from cost_model.provider import CallEstimate, CostProvider, MoveEstimate
from cost_model.transfer_cost import price_flows, price_transfer

__all__ = [
    "PRESETS", "AnalyticCostModel", "CallEstimate", "CostProvider", "EstimatorOptions", "HardwareSpec",
    "MoveEstimate", "Profile", "format_estimate", "load_hardware", "load_profile", "mfu", "preset",
    "price_flows", "price_transfer", "print_estimate", "save_profile",
]
