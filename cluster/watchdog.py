"""Reports a blocked event loop: a thread notices when the loop stops ticking and logs
where the main thread is stuck (usually a handler doing blocking work)."""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

__all__ = ["LoopWatchdog"]

log = logging.getLogger(__name__)


class LoopWatchdog:
    """Counts and logs episodes of the loop being blocked for more than ``threshold`` seconds.

    ``current`` may be set by the caller to say what is running: a string, or an (event type, shard id)
    pair for a handler's on_event (set per event, so it is formatted only when a block is reported).
    """

    def __init__(self, threshold: float = 0.5, tick: float = 0.1) -> None:
        self.threshold = threshold
        self.tick = tick
        self.blocked = 0
        self.max_lag = 0.0
        self.current: str | tuple[str, int] | None = None
        self._last_tick = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._main = threading.main_thread().ident

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._ticker())
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()

    def take_lag(self) -> float:
        """The worst lag since the last call (for periodic reports)."""
        lag, self.max_lag = self.max_lag, 0.0
        return lag

    async def _ticker(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.tick)
            now = time.monotonic()
            self.max_lag = max(self.max_lag, now - before - self.tick)
            self._last_tick = now

    def _watch(self) -> None:
        reported = False
        while not self._stop.wait(self.tick):
            stalled = time.monotonic() - self._last_tick
            if stalled < self.threshold:
                reported = False
                continue
            if reported:
                continue
            reported = True
            self.blocked += 1
            frame = sys._current_frames().get(self._main) if self._main is not None else None
            where = "".join(traceback.format_stack(frame)[-8:]) if frame else "?"
            current = self.current
            if current:
                what = (f"handler on_event({current[0]}) for shard {current[1]}" if isinstance(current, tuple)
                        else current)
                log.warning("event loop blocked for %.1f s in %s; a handler must not block "
                            "(use await or run_in_executor). Main thread at:\n%s", stalled, what, where)
            else:
                log.warning("event loop blocked for %.1f s (not in a handler). Main thread at:\n%s", stalled, where)
