"""Helpers for the multi-host tests: `python -m cluster run` host processes of one cluster, sharing a Redis.

Each host is the leader of its own process group (a machine: ``killpg`` reaches its supervisor and its workers).
Its stderr is read all the time into :attr:`Host.err`, so a host that logs a lot never blocks on a full pipe,
and a test can await a line (:meth:`Host.wait_for`) instead of reading the pipe itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent.parent


def active(snap):
    """How many sessions the simulator sees active."""
    return sum(1 for r in snap["sessions"].values() if r["state"] == "active")


async def sessions_saved(redis_url: str, ns: str, shards: int, timeout: float = 30) -> None:
    """Until the coordinator holds a session for every one of ``shards`` shards. The hosts write them at their
    report interval, after the simulator counts a shard active: a host killed in between leaves shards that its
    successor must identify. Another process's writes: polled."""
    from cluster.coordination.redis_conn import connect  # noqa: PLC0415

    client = await connect(redis_url)
    try:
        async with asyncio.timeout(timeout):
            while await client.exists(  # noqa: ASYNC110 - another process's writes to Redis: polled
                    *(f"{ns}session:{s}" for s in range(shards))) < shards:
                await asyncio.sleep(0.1)
    finally:
        await client.aclose()


def identified_again(snap):
    """The shards the simulator saw identify more than once, with their resumes, closes and violations: why."""
    return {n: {k: r[k] for k in ("identifies", "resumes", "closes", "violations")}
            for n, r in snap["shards"].items() if r["identifies"] > 1}


def host_env(sim, env=None):
    """The environment of a host process: the simulator's token, and this tree's code first on the path (the
    handlers of tests/cluster and bench/ are importable, and the hosts run the code under test, not an installed
    copy)."""
    path = os.pathsep.join(p for p in (str(ROOT), str(HERE), str(ROOT / "bench"), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "DISCORD_TOKEN": sim.token, "PYTHONPATH": path, **(env or {})}


@dataclass(eq=False)
class Host:
    """One host process and everything it wrote on stderr so far."""

    name: str
    proc: asyncio.subprocess.Process
    err: bytearray = field(default_factory=bytearray)
    _grew: asyncio.Condition = field(default_factory=asyncio.Condition)
    _reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def id_prefix(self) -> str:
        """How its registry id starts (cluster.hosts.host_id: short host name, pid, random suffix)."""
        return f"machine-{self.name}-{self.proc.pid}-"

    @property
    def returncode(self) -> int | None:
        return self.proc.returncode

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            async with self._grew:
                self.err += chunk
                self._grew.notify_all()
        async with self._grew:
            self._grew.notify_all()  # end of stream: waiters see it

    async def wait_for(self, text: str, timeout: float) -> None:
        """Until the host writes ``text`` on stderr; AssertionError if it exits first."""
        needle = text.encode()
        async with asyncio.timeout(timeout), self._grew:
            while needle not in self.err:
                assert self._reader is not None and not self._reader.done(), \
                    f"host {self.name} exited (code {self.proc.returncode}) before writing {text!r}: {self.text()}"
                await self._grew.wait()

    async def wait(self, timeout: float = 30) -> tuple[int, str]:
        """Until it has exited and its stderr is read: (exit code, stderr)."""
        async with asyncio.timeout(timeout):
            await self.proc.wait()
            if self._reader is not None:
                await self._reader
        assert self.proc.returncode is not None
        return self.proc.returncode, self.text()

    def text(self) -> str:
        return self.err.decode(errors="replace")

    def killpg(self, sig: int) -> None:
        """Signal the host's whole process group (supervisor and workers), as a machine going down or freezing."""
        os.killpg(self.proc.pid, sig)


class Hosts:
    """The host processes of one cluster, by name. Every host gets ``common`` after the connection options
    (``--gateway-url``, ``--api-url``, ``--coordinator``, a state file of its own, ``--http-port 0``); a
    host named ``n`` runs with ``HOSTNAME=machine-n`` (its registry id starts with it)."""

    def __init__(self, sim, redis_url: str, tmp_path: Path, *common: str,
                 handler: str = "cluster.example:ExampleHandler") -> None:
        self.sim, self.redis_url, self.tmp, self.common, self.handler = sim, redis_url, tmp_path, common, handler
        self.procs: dict[str, Host] = {}

    def args(self, name: str, *extra: str) -> list[str]:
        return ["-m", "cluster", "run", "--handler", self.handler, "--gateway-url", self.sim.url,
                "--api-url", self.sim.api_url, "--identify-window", "1", "--coordinator", self.redis_url,
                "--state-file", str(self.tmp / f"{name}.json"), "--http-port", "0", "--report-interval", "0.2",
                "--no-status-line", "--log-level", "WARNING", *self.common, *extra]

    async def start(self, name: str, *extra: str, env: dict[str, str] | None = None) -> Host:
        env = host_env(self.sim, {"HOSTNAME": f"machine-{name}", **(env or {})})
        proc = await asyncio.create_subprocess_exec(sys.executable, *self.args(name, *extra), env=env,
                                                    stderr=asyncio.subprocess.PIPE, start_new_session=True)
        host = self.procs[name] = Host(name, proc)
        host._reader = asyncio.ensure_future(host._read())
        return host

    async def run_to_end(self, name: str, *extra: str, timeout: float = 30,
                         env: dict[str, str] | None = None) -> tuple[int, str]:
        """Start a host that is expected to exit by itself: (exit code, stderr)."""
        await self.start(name, *extra, env=env)
        return await self.procs.pop(name).wait(timeout)

    async def stop(self, name: str, timeout: float = 30) -> tuple[int, str]:
        """SIGTERM (a clean stop) and wait for the exit: (exit code, stderr)."""
        host = self.procs.pop(name)
        if host.returncode is None:
            host.proc.send_signal(signal.SIGTERM)
        return await host.wait(timeout)

    async def stop_all(self) -> dict[str, tuple[int, str]]:
        """Stop every host, one after the other: name -> (exit code, stderr)."""
        return {name: await self.stop(name) for name in list(self.procs)}

    def killpg(self, name: str, sig: int) -> None:
        self.procs[name].killpg(sig)

    async def kill_all(self) -> None:
        """SIGKILL what is left of every host (its whole process group) and reap it; print what each wrote on
        stderr (pytest shows it when the test failed)."""
        for host in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                host.killpg(signal.SIGKILL)
            with contextlib.suppress(TimeoutError):
                await host.wait(10)
            print(f"--- host {host.name} (pid {host.pid}, exit code {host.returncode}) stderr:\n{host.text()}")


@contextlib.asynccontextmanager
async def hosts_of(sim, redis_url: str, tmp_path: Path, *common: str, **options: str) -> AsyncIterator[Hosts]:
    """A :class:`Hosts` whose leftover processes are killed at the end (a test's ``hosts`` fixture)."""
    hosts = Hosts(sim, redis_url, tmp_path, *common, **options)
    try:
        yield hosts
    finally:
        await hosts.kill_all()
