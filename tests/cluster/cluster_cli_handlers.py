"""Handlers for tests/cluster/test_cluster_cli_errors.py (imported by worker processes)."""

import os
import threading
import time
from typing import Any


class SetupFailsSlowExit:
    """Its setup raises, and its worker process takes a moment to exit afterwards (a non-daemon thread still
    runs) while its IPC socket stays open (its descriptors are duplicated until the exit): the supervisor sees
    a live worker, asks it to drain and must then wait for its exit, not for a Drained that never comes."""

    async def setup(self, ctx: Any) -> None:
        for fd in os.listdir("/proc/self/fd"):
            try:
                os.dup(int(fd))
            except OSError:
                pass
        threading.Thread(target=time.sleep, args=(1.5,)).start()
        raise RuntimeError("database unreachable")
