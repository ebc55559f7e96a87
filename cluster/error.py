"""The cluster package's errors.

The hierarchy::

    ClusterError                root of every error the package defines
    ├── ConfigError             the configuration is invalid (also a ValueError); the message names the key
    ├── HandlerImportError      the ``module:attribute`` handler cannot be imported or created (also an ImportError)
    ├── ClusterExit             stop the cluster with an exit code (``code``, an ``ExitCode``) and a message
    ├── CoordinatorUnavailable  the coordinator (Redis) cannot be reached right now: retry with backoff
    ├── ReshardRefused          a live reshard must not start now (also a ValueError); the message says why
    └── LayoutMoved             internal: a block claim refused, the cluster's layout is not the claimer's any more

All but ``LayoutMoved`` (internal to the lease planning, :mod:`cluster.leases`) are public and exported from
``cluster``; the stdlib bases stay so that code catching ``ValueError`` or ``ImportError`` keeps catching them.
This module imports nothing of the package, so any module may raise these without an import cycle.
"""

from __future__ import annotations

__all__ = ["ClusterError", "ClusterExit", "ConfigError", "CoordinatorUnavailable", "HandlerImportError",
           "LayoutMoved", "ReshardRefused"]


class ClusterError(Exception):
    """The root of the cluster package's errors (see the tree above)."""


class ConfigError(ClusterError, ValueError):
    """The configuration is invalid; the message names the key and where it came from."""


class HandlerImportError(ClusterError, ImportError):
    """The ``module:attribute`` handler could not be imported or created."""


class ClusterExit(ClusterError):
    """Stop the cluster with ``code``; ``str(exc)`` is the message for the operator.

    ``code`` is a ``cluster.exitcodes.ExitCode`` (an ``int``); it is typed ``int`` here so that this module
    imports nothing of the package (``exitcodes`` re-exports this class)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class CoordinatorUnavailable(ClusterError, ConnectionError):
    """The coordinator (Redis) cannot be reached or answered too late; the message never holds a password.

    Transient by nature: running shards go on (a resume needs no slot), identifies wait, and the caller
    retries with backoff. A coordinator that answers wrongly (bad password, not Redis) is a ``ConfigError``."""


class ReshardRefused(ClusterError, ValueError):
    """A live reshard that must not start (the session budget, one already running, a count that does not grow the
    cluster, a coordinator); the message says why in one line. Nothing was started."""


class LayoutMoved(ClusterError):
    """A claim refused: the cluster's layout (``<ns>layout``) is not the store's any more (a reshard switched)."""

    def __init__(self, layout: str) -> None:
        super().__init__(f"the cluster's layout is {layout!r} (shards,max_concurrency) now")
        self.layout = layout
