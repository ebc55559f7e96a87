"""Identify coordination behind an interface: :mod:`.base` (the contract), :mod:`.local` (in-process)."""

from cluster.coordination.base import (Coordination, CoordinationFactory, CoordinationSetup, CoordinationStats,
                                       Decision, Defer, Grant, IdentifyEvent, Refuse)
from cluster.coordination.local import BudgetDecision, IdentifyCoordinator, SessionBudget, local_coordination

__all__ = ["BudgetDecision", "Coordination", "CoordinationFactory", "CoordinationSetup", "CoordinationStats",
           "Decision", "Defer", "Grant", "IdentifyCoordinator", "IdentifyEvent", "Refuse", "SessionBudget",
           "local_coordination"]
