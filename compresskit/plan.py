"""The pre-flight plan, kept importable from here; the code is :mod:`compresskit.run.plan`."""

from __future__ import annotations

from compresskit.run.plan import (CHECKS, Plan, check_budget, check_checkpoints, check_data, check_groups,
                                  check_latency_budget, check_models, check_rates, plan, reachable_params,
                                  require_budget)

__all__ = ["CHECKS", "Plan", "check_budget", "check_checkpoints", "check_data", "check_groups",
           "check_latency_budget", "check_models", "check_rates", "plan", "reachable_params", "require_budget"]
