"""A multiprocess sharding supervisor with a per-worker handler API.

Run it with ``python -m cluster run --handler mybot:Handler`` or from Python::

    from cluster import ClusterConfig, Supervisor
    code = await Supervisor(ClusterConfig(workers=4), handler=MyHandler).run()

- :class:`Supervisor`: spawns workers, coordinates identifies, restarts, metrics.
- :class:`Handler` / :class:`WorkerContext`: what a per-worker handler implements and gets.
- :class:`ClusterConfig` / :func:`load_config`: flags, ``CLUSTER_*`` env, TOML file.
- :class:`Coordination` (the interface), :class:`IdentifyCoordinator`, :class:`SessionBudget`, :class:`IpcQueue`:
  identify coordination.
- :class:`ClusterSnapshot`: what ``Supervisor.snapshot()``, ``/status`` and ``/metrics`` show.
- :class:`RestartPolicy`, :func:`split`, :func:`round_up`, :func:`save_sessions` /
  :func:`load_sessions`: the pure parts, usable on their own.
- :class:`ClusterError`: the root of the package's errors (:class:`ConfigError`, :class:`HandlerImportError`,
  :class:`ClusterExit`, :class:`ReshardRefused`); the tree is in :mod:`cluster.error`.
- :meth:`Supervisor.reshard`: grow the shard count live (:mod:`cluster.reshard`, :mod:`cluster.resharder`).
"""

__version__ = "0.1.0"  # the release, as in pyproject.toml (tests/test_packaging.py checks)

from cluster.config import ClusterConfig, load_config
from cluster.coordination import Coordination, IdentifyCoordinator, SessionBudget
from cluster.error import (ClusterError, ClusterExit, ConfigError, CoordinatorUnavailable, HandlerImportError,
                           ReshardRefused)
from cluster.exitcodes import ExitCode
from cluster.handler import ClusterStatus, Handler, WorkerContext
from cluster.layout import round_up, split
from cluster.queue import IpcQueue
from cluster.restart import Backoff, RestartPolicy
from cluster.snapshot import ClusterSnapshot
from cluster.state import load_sessions, save_sessions
from cluster.supervisor import Supervisor

__all__ = [
    "Backoff", "ClusterConfig", "ClusterError", "ClusterExit", "ClusterSnapshot", "ClusterStatus", "ConfigError",
    "Coordination", "CoordinatorUnavailable", "ExitCode", "Handler", "HandlerImportError", "IdentifyCoordinator",
    "IpcQueue", "ReshardRefused", "RestartPolicy",
    "SessionBudget", "Supervisor", "WorkerContext", "load_config", "load_sessions", "round_up", "save_sessions",
    "split",
]
