"""Moved to :mod:`cluster.coordination.local` (kept so that old imports work)."""

from cluster.coordination.local import BudgetDecision, SessionBudget

__all__ = ["BudgetDecision", "SessionBudget"]
