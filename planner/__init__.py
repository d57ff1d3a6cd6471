"""The planner: plan space, simulator, search, heuristic baselines, Plan IO (pure: no torch)."""

from planner.heuristics import known_heuristics, register_heuristic, run_heuristic
from planner.make import PlanResult, make_plan
from planner.options import ManualLayout, PlanMode, PlanOptions
from planner.plan import CallPlan, Plan, load_plan

__all__ = ["CallPlan", "ManualLayout", "Plan", "PlanMode", "PlanOptions", "PlanResult",
           "known_heuristics", "load_plan", "make_plan", "register_heuristic", "run_heuristic"]
