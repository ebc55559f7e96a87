"""A relay in front of a Redis that cancels a chosen task the moment a chosen command reaches it.

It runs in the test's event loop and cancels from its protocol's ``data_received``, in the loop turn in which the
command's bytes arrive: the client's write finished in the turn before, and the client task has not yet resumed.
That is when Python 3.11's ``asyncio.wait_for`` (under which redis-py sends every command) swallows a cancel: it
returns the finished write's result instead of raising (cpython gh-86296). Everything else is relayed as it is.
"""

from __future__ import annotations

import asyncio


class _Upstream(asyncio.Protocol):
    def __init__(self, client: asyncio.Transport) -> None:
        self.client = client

    def data_received(self, data: bytes) -> None:
        self.client.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.close()


class CancelRelay:
    """Listens on :attr:`url`; relays to the Redis on ``port``. :meth:`cancel_on` arms it once."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.fired = 0
        self._armed: tuple[bytes, asyncio.Task[object]] | None = None
        self._server: asyncio.Server | None = None

    def cancel_on(self, marker: bytes, task: asyncio.Task[object]) -> None:
        """Cancel ``task`` when the next command that holds ``marker`` reaches the relay (once)."""
        self._armed = (marker, task)

    async def __aenter__(self) -> CancelRelay:
        loop = asyncio.get_running_loop()
        relay = self

        class Downstream(asyncio.Protocol):
            upstream: asyncio.Transport | None = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                assert isinstance(transport, asyncio.Transport)
                self.transport = transport
                transport.pause_reading()  # until the upstream connection is made
                self.linking = loop.create_task(self._link())

            async def _link(self) -> None:
                try:
                    upstream, _ = await loop.create_connection(lambda: _Upstream(self.transport), "127.0.0.1",
                                                               relay.port)
                except OSError:
                    self.transport.close()
                    return
                self.upstream = upstream
                self.transport.resume_reading()

            def data_received(self, data: bytes) -> None:
                if relay._armed is not None and relay._armed[0] in data:
                    relay._armed[1].cancel()
                    relay._armed = None
                    relay.fired += 1
                assert self.upstream is not None
                self.upstream.write(data)

            def connection_lost(self, exc: Exception | None) -> None:
                if self.upstream is not None:
                    self.upstream.close()

        self._server = await loop.create_server(Downstream, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"
