"""Fixtures for the shard tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from shard import Config, InMemoryQueue, Intents, Shard, ShardId


@pytest.fixture
async def shards() -> AsyncIterator[Callable[..., Shard]]:
    """Factory for shards pointed at a simulator; closes them all at the end."""
    made: list[Shard] = []

    def factory(sim: Any, number: int = 0, total: int = 1, intents: int = Intents.GUILDS | Intents.GUILD_MESSAGES,
                **options: Any) -> Shard:
        options.setdefault("gateway_url", sim.url)
        options.setdefault("queue", InMemoryQueue(max_concurrency=sim.config.max_concurrency,
                                                  interval=sim.config.identify_window + 0.05))
        options.setdefault("backoff_base", 0.05)
        options.setdefault("backoff_max", 0.5)
        options.setdefault("close_timeout", 1.0)
        options.setdefault("invalid_session_delay", (0.05, 0.15))
        options.setdefault("metrics", False)
        shard = Shard.with_config(ShardId(number, total), Config(sim.token, intents, **options))
        made.append(shard)
        return shard

    yield factory
    failures = []
    for shard in made:  # close them all, then report every close that raised or hung
        try:
            await asyncio.wait_for(shard.close(), 3)
        except Exception as exc:  # noqa: BLE001 - reported below
            what = "hung for 3 s" if isinstance(exc, TimeoutError) else "raised"
            failures.append(f"shard {shard.id}: close() {what}: {exc!r}")
    if failures:
        pytest.fail("\n".join(failures))

