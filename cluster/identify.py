"""Moved to :mod:`cluster.coordination` (kept so that old imports work)."""

from cluster.coordination.base import Defer, Grant, Refuse
from cluster.coordination.local import IdentifyCoordinator

__all__ = ["Defer", "Grant", "IdentifyCoordinator", "Refuse"]
