"""A real ``redis-server`` on a free port, owned by one test: it can be killed and restarted.

Tests that need Redis use the ``redis_server`` fixture (tests/conftest.py). Where the
``redis-server`` binary is missing they skip with the reason; CI (``SHARDSTACK_NO_SKIP=1``)
turns that skip into a failure.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

BINARY = shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` on 127.0.0.1:``port`` with nothing saved to disk unless a test asks (``SAVE``: a restart
    then loads that snapshot, as a Redis restored from an older one); ``url`` is its address."""

    def __init__(self, directory: Path, *, password: str | None = None, port: int | None = None) -> None:
        assert BINARY is not None
        self.directory, self.password = directory, password
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start it and return once it accepts connections (again on the same port after a kill)."""
        args = [BINARY, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(self.directory), "--logfile", str(self.directory / "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:  # polling a port another process opens: there is no event to await
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}; see {self.directory}/redis.log")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    reply = s.recv(64)
                if reply.startswith((b"+PONG", b"-NOAUTH")):
                    return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: every connection drops at once and, with nothing saved, every key is gone (with a ``SAVE``, every
        key written since)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.kill()
