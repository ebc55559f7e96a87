"""The worker's side of block fencing (``--assign auto``): never send a frame past the lease deadline.

The supervisor tells each worker how long its block's lease is safely held (:class:`ipc.protocol.LeaseDeadline`,
a ``time.monotonic()`` value: one clock for every process of the machine, and one that keeps running while a
process is stopped). :class:`Fence` kills the worker with SIGKILL once the deadline passes without an extension:
no close frame, no heartbeat, nothing more on any gateway connection (the kernel's FIN is not a WebSocket frame),
and the sessions stay resumable for the block's next owner.

Two watchers, so that neither a silent supervisor nor a pause can let a late frame out:

* a daemon thread that sleeps until the deadline (at most :data:`CHECK_EVERY` at a time) and checks it;
* a SIGCONT handler: after a SIGSTOP of the whole process group (or a stalled VM resumed with it) the handler
  runs in the main thread at its first bytecode, before the event loop runs any timer (a heartbeat) that
  became due while it was stopped, and kills the worker if the deadline passed meanwhile.

The shard's hot receive path is untouched: the check costs nothing per event.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

__all__ = ["CHECK_EVERY", "Fence"]

CHECK_EVERY = 0.05
"""Seconds between two checks of the watcher thread, at most."""


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class Fence:
    """Kills this process (``expire``, SIGKILL by default) once ``clock()`` passes the deadline last given to
    :meth:`extend`. Inactive until the first :meth:`extend` (static assignment never sends one)."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, expire: Callable[[], None] = _die) -> None:
        self.clock, self.expire = clock, expire
        self.deadline: float | None = None
        self._changed = threading.Event()
        self._thread: threading.Thread | None = None

    def extend(self, deadline: float) -> None:
        """Run until ``deadline`` (never moves it back: a late, reordered packet cannot shorten it wrongly,
        and the supervisor only ever extends)."""
        if self.deadline is None or deadline > self.deadline:
            self.deadline = deadline
        if self._thread is None:
            self._start()
        self._changed.set()

    def expired(self) -> bool:
        return self.deadline is not None and self.clock() >= self.deadline

    def check(self) -> None:
        """Expire now if the deadline has passed."""
        if self.expired():
            self.expire()

    def _start(self) -> None:
        try:
            signal.signal(signal.SIGCONT, lambda *_: self.check())
        except ValueError:  # not the main thread (tests): the thread alone watches
            pass
        self._thread = threading.Thread(target=self._watch, name="lease-fence", daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while True:
            deadline = self.deadline
            assert deadline is not None
            left = deadline - self.clock()
            if left <= 0:
                self.expire()
                return
            self._changed.wait(min(left, CHECK_EVERY))
            self._changed.clear()
