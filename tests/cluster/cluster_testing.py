"""Helpers for the cluster tests: run a Supervisor in-process against the simulator."""

import asyncio
import contextlib
import time
import urllib.error
import urllib.parse
import urllib.request

from cluster import ClusterConfig, Supervisor
from sim import Simulator

FAST = dict(identify_window=1.0, report_interval=0.2, ipc_heartbeat_interval=0.25, http_port=0,
            restart_backoff_base=0.2, restart_backoff_cap=1.0, shutdown_timeout=5.0)


@contextlib.asynccontextmanager
async def running(sim: Simulator, handler=None, tmp_path=None, supervisor_handler=None, shard_options=None,
                  **options):
    """A Supervisor (in this process, workers in real processes) against ``sim``."""
    cfg = ClusterConfig(**{**FAST, "gateway_url": sim.url, "api_url": sim.api_url,
                           "state_file": str(tmp_path / "state.json"), **options})
    sup = Supervisor(cfg, token=sim.token, handler=handler, handle_signals=False,
                     supervisor_handler=supervisor_handler, shard_options=shard_options)
    task = asyncio.get_running_loop().create_task(sup.run())
    try:
        yield sup, task
    finally:
        sup.stop()
        await asyncio.wait_for(task, 30)


async def until(predicate, timeout=20.0, what="condition"):
    """Poll a supervisor-side condition (the simulator has its own wait_until)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def http_get(url):
    """(status, body text) of a GET, error statuses included (blocking: call it via asyncio.to_thread)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


class RestGate:
    """A relay in front of the simulator's REST API that holds each request while it is closed, so that a test can
    keep a ``GET /gateway/bot`` pending (say, an ``--auto-reshard`` check) while something else happens. Give the
    cluster :attr:`url` as its ``api_url``; open (the default), it relays at once."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.url = ""
        self.held = 0
        """Requests waiting at the gate now."""
        self._open = asyncio.Event()
        self._open.set()
        self._changed = asyncio.Condition()
        self._relays: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> "RestGate":
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        api = urllib.parse.urlsplit(self.sim.api_url)
        self._target = (api.hostname, api.port)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}{api.path}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._open.set()
        self._server.close()
        for task in list(self._relays):
            task.cancel()

    def close(self) -> None:
        """Hold every request from now on."""
        self._open.clear()

    def open(self) -> None:
        """Relay the held requests, and every later one at once."""
        self._open.set()

    async def wait_held(self, count: int = 1, timeout: float = 30.0) -> None:
        """Until ``count`` requests wait at the (closed) gate."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.held >= count)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._relays.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")  # a GET (urllib's, Connection: close): no body
            if not self._open.is_set():
                async with self._changed:
                    self.held += 1
                    self._changed.notify_all()
                await self._open.wait()
                self.held -= 1
            up_reader, up_writer = await asyncio.open_connection(*self._target)
            up_writer.write(head)
            writer.write(await up_reader.read())  # the simulator closes after answering
            up_writer.close()
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._relays.discard(asyncio.current_task())  # type: ignore[arg-type]
