"""A real supervisor trusts a saved state file only as far as it fits (the checks themselves: test_state_trust.py)."""

import asyncio
import json
import logging

import pytest

from cluster_testing import running
from sim.config import BOT_ID
from test_state_trust import warnings


@pytest.fixture
def sim_options():
    return dict(shards=4, max_concurrency=4, identify_window=1.0, events_per_second=5.0)


async def test_supervisor_resumes_only_the_sessions_that_fit(sim, tmp_path, caplog):
    """A real cluster saves a file bound to the bot; edited (one resume URL to another server, one seq
    over 2^64), the next cluster starts anyway, resumes the two good sessions, identifies the other two,
    and never connects to that server (it would get the token in Resume)."""
    path = tmp_path / "state.json"
    connections = []

    async def record(reader, writer):
        connections.append(await reader.read(4096))
        writer.close()

    evil = await asyncio.start_server(record, "127.0.0.1", 0)
    evil_url = f"ws://127.0.0.1:{evil.sockets[0].getsockname()[1]}/"
    active = lambda s: sum(r["state"] == "active" for r in s["sessions"].values()) == 4  # noqa: E731
    try:
        async with running(sim, None, tmp_path, workers=1) as (sup, task):
            await sim.wait_until(active, 20)
        assert task.result() == 0
        state = json.loads(path.read_text())
        assert state["user_id"] == BOT_ID and len(state["sessions"]) == 4
        state["sessions"][0]["resume_url"] = evil_url
        state["sessions"][1]["seq"] = 2**64
        path.write_text(json.dumps(state))

        caplog.clear()
        caplog.set_level(logging.INFO)
        async with running(sim, None, tmp_path, workers=1) as (sup, task):
            snap = await sim.wait_until(lambda s: active(s) and s["total"]["resumes"] == 2, 20)
            assert snap["total"]["identifies"] == 4 + 2
        assert task.result() == 0
    finally:
        evil.close()
        await evil.wait_closed()
    assert connections == []
    (warning,) = warnings(caplog)
    assert "resuming 2 sessions" in warning.getMessage() and "shard 0: resume_url" in warning.getMessage()
    assert "shard 1: Expected int <= 9223372036854775807" in warning.getMessage()
    assert sim.token not in caplog.text
