"""Cost model: hardware specs, time and memory per call, reallocation and data-transfer cost.

Pure: numpy and the standard library only. The planner depends on `CostProvider`
(`cost_model.api`); `AnalyticCostModel` implements it.
"""

from cost_model.api import CallEstimate, CostProvider, MoveEstimate
from cost_model.estimator import AnalyticCostModel, EstimatorOptions, mfu
from cost_model.hardware import PRESETS, HardwareSpec, preset
from cost_model.layout import Cluster, DeviceMesh, Layout
from cost_model.params import ParamInfo, param_manifest
from cost_model.profile import Profile, load_hardware, load_profile, save_profile
from cost_model.report import format_estimate, print_estimate
from cost_model.transfer import TransferOp, TransferPlan, plan_transfer, price_transfer

__all__ = [
    "PRESETS", "AnalyticCostModel", "CallEstimate", "Cluster", "CostProvider", "DeviceMesh",
    "EstimatorOptions", "HardwareSpec", "Layout", "MoveEstimate", "ParamInfo", "Profile",
    "TransferOp", "TransferPlan", "format_estimate", "load_hardware", "load_profile", "mfu",
    "param_manifest", "plan_transfer", "preset", "price_transfer", "print_estimate", "save_profile",
]
