"""Fixtures for the simulator tests: simulators and raw clients that are always cleaned up."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from sim_client import GatewayClient  # tests/sim is on sys.path: pytest's default (prepend) import mode

from sim import Simulator


@pytest.fixture
async def make_sim() -> AsyncIterator[Callable[..., Awaitable[Simulator]]]:
    sims: list[Simulator] = []

    async def make(**options: Any) -> Simulator:
        sim = Simulator(**options)
        await sim.start()
        sims.append(sim)
        return sim

    yield make
    for sim in sims:
        await sim.stop()


@pytest.fixture
async def sim(make_sim: Callable[..., Awaitable[Simulator]]) -> Simulator:
    return await make_sim()


@pytest.fixture
async def gw() -> AsyncIterator[Callable[..., Awaitable[GatewayClient]]]:
    """`await gw(url, compress=..., ...)` opens a raw gateway client (closed at teardown)."""
    clients: list[GatewayClient] = []

    async def open_client(url: str, **kw: Any) -> GatewayClient:
        client = await GatewayClient.open(url, **kw)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.ws.transport.abort()
