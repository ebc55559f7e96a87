"""The state file is checked before it is trusted with the token: its time, shard total and bot, and per
session every field and the resume URL a Resume (token included) would be sent to."""

import asyncio
import json
import logging

import pytest

from cluster.state import load_sessions, resume_url_problem, save_sessions, token_user_id
from cluster_testing import running
from ipc.protocol import SessionInfo
from sim.config import BOT_ID, DEFAULT_TOKEN

GATEWAY = "ws://127.0.0.1:8123/"
DISCORD_RESUME = "wss://gateway-us-east1-b.discord.gg"
OTHER_BOT = 987654321098765432


@pytest.fixture
def sim_options():
    return dict(shards=4, max_concurrency=4, identify_window=1.0, events_per_second=5.0)


def warnings(caplog):
    return [r for r in caplog.records if r.name == "cluster.state" and r.levelno >= logging.WARNING]


def write(path, **fields):
    state = {"version": 2, "saved_at": 1000.0, "shard_total": 4, "user_id": BOT_ID,
             "sessions": [{"shard_id": 0, "session_id": "a" * 32, "seq": 3, "resume_url": DISCORD_RESUME}], **fields}
    path.write_text(json.dumps({k: v for k, v in state.items() if v is not ...}))


def load(path, **kw):
    return load_sessions(path, 4, ttl=120, **{"user_id": BOT_ID, "gateway_url": GATEWAY, "now": 1010.0, **kw})


# --- the bot the file is for ---------------------------------------------------------------


def test_token_user_id():
    assert token_user_id(DEFAULT_TOKEN) == BOT_ID  # the simulator's token is Discord-shaped
    assert token_user_id("Bot " + DEFAULT_TOKEN) == BOT_ID
    assert token_user_id("OTg3NjU0MzIxMDk4NzY1NDMy.x.y") == OTHER_BOT
    for token in ("tok", "", "aGVsbG8.x.y", "MA.x.y", "!!!.x.y", "MTIzNDU2Nzg5MDEyMzQ1Njc4OTAxMjM0NTY3ODkw.x.y"):
        assert token_user_id(token) is None, token  # not base64, not digits, zero, over 2^63


def test_file_is_bound_to_the_bot_and_another_bots_is_ignored(tmp_path, caplog):
    path = tmp_path / "state.json"
    save_sessions(path, 4, [SessionInfo(0, "a" * 32, 3, DISCORD_RESUME)], user_id=BOT_ID, now=1000.0)
    assert json.loads(path.read_text())["user_id"] == BOT_ID
    assert list(load(path)[0]) == [0]
    assert warnings(caplog) == []
    loaded, note = load(path, user_id=OTHER_BOT)
    assert loaded == {}
    assert f"it is for bot user {BOT_ID}, this token is for bot user {OTHER_BOT}" in note
    loaded, note = load(path, user_id=None)  # a token that does not say which bot it is: cannot check
    assert loaded == {} and "not a Discord bot token" in note
    other = f"ignoring state file {path}: it is for bot user {BOT_ID}, this token is for bot user {OTHER_BOT}"
    assert [r.getMessage() for r in warnings(caplog)] == [f"{other}; identifying every shard", note]


def test_version_1_file_without_a_user_id_is_used_and_explained(tmp_path, caplog):
    path = tmp_path / "state.json"
    write(path, version=1, user_id=...)
    caplog.set_level(logging.INFO)
    loaded, note = load(path)
    assert list(loaded) == [0]
    assert "names no bot user (an older version wrote it)" in note and warnings(caplog) == []
    save_sessions(path, 4, [SessionInfo(0, "a" * 32, 3)], user_id=token_user_id("not-a-discord-token"), now=1000.0)
    loaded, note = load(path)
    assert list(loaded) == [0] and "(the token that wrote it does not show one)" in note


# --- file-level fields ---------------------------------------------------------------------


@pytest.mark.parametrize("fields,expect", [
    ({"saved_at": 1e12}, "saved_at 1000000000000.0 is in the future"),
    ({"saved_at": 1e999}, "unreadable"),  # JSON's inf: out of range
    ({"saved_at": "1000"}, "unreadable"),
    ({"version": 3}, "version 3, expected 2"),
    ({"shard_total": 0}, "unreadable"),
    ({"user_id": 0}, "unreadable"),
    ({"user_id": 2**64}, "unreadable"),
    ({"sessions": {"0": {}}}, "unreadable"),
])
def test_file_fields_that_do_not_fit_ignore_the_file_with_one_warning(tmp_path, caplog, fields, expect):
    path = tmp_path / "state.json"
    write(path, **fields)
    loaded, note = load(path)
    assert loaded == {} and expect in note
    assert [r.getMessage() for r in warnings(caplog)] == [note]


def test_future_file_does_not_pass_the_ttl_forever(tmp_path):
    path = tmp_path / "state.json"
    save_sessions(path, 4, [SessionInfo(0, "a" * 32, 3)], user_id=BOT_ID, now=1000.0 + 3600)
    assert load(path)[0] == {}
    save_sessions(path, 4, [SessionInfo(0, "a" * 32, 3)], user_id=BOT_ID, now=1000.0 + 30)  # a clock step back
    assert list(load(path)[0]) == [0]


# --- per-session fields --------------------------------------------------------------------


@pytest.mark.parametrize("session,expect", [
    ({"seq": 2**64}, "shard 1: Expected `int` <= 9223372036854775807".replace("`", "")),
    ({"seq": -1}, "shard 1: Expected `int` >= 0".replace("`", "")),
    ({"seq": "7"}, "shard 1: Expected `int`, got `str`".replace("`", "")),
    ({"session_id": ""}, "shard 1: Expected `str` matching regex".replace("`", "")),
    ({"session_id": "a b"}, "shard 1: Expected `str` matching regex".replace("`", "")),
    ({"shard_id": -1}, "shard -1: Expected `int` >= 0".replace("`", "")),
    ({"shard_id": 9}, "shard 9: no such shard in a run of 4"),
    ({"shard_id": "1"}, "entry 1: Expected `int`, got `str`".replace("`", "")),
    ({"resume_url": "ws://evil.example/"}, "shard 1: resume_url 'ws://evil.example/' is neither wss:// on discord.gg"),
    ({"resume_url": 5}, "shard 1: Expected `str | null`, got `int`".replace("`", "")),
])
def test_a_session_that_does_not_fit_is_skipped_and_the_others_resume(tmp_path, caplog, session, expect):
    path = tmp_path / "state.json"
    good = {"shard_id": 0, "session_id": "a" * 32, "seq": 3, "resume_url": DISCORD_RESUME}
    bad = {"shard_id": 1, "session_id": "b" * 32, "seq": 5, "resume_url": None, **session}
    write(path, sessions=[good, bad, {**good, "shard_id": 2, "resume_url": GATEWAY + "resume"}])
    loaded, note = load(path)
    assert sorted(loaded) == [0, 2] and loaded[2].resume_url == GATEWAY + "resume"
    assert "resuming 2 sessions" in note and "ignored 1 saved sessions that do not fit" in note and expect in note
    assert [r.getMessage() for r in warnings(caplog)] == [note]


def test_a_shard_listed_twice_is_skipped(tmp_path, caplog):
    path = tmp_path / "state.json"
    one = {"shard_id": 1, "session_id": "a" * 32, "seq": 3}
    write(path, sessions=[one, {**one, "seq": 9}, {**one, "shard_id": 2}, "junk"])
    loaded, note = load(path)
    assert list(loaded) == [2]
    assert "entry 3: Expected object, got str" in note and "shard 1: listed more than once" in note
    assert len(warnings(caplog)) == 1


@pytest.mark.parametrize("url", [
    "ws://evil.example/", "wss://evil.example/", "wss://discord.gg.evil.example/", "wss://evildiscord.gg/",
    "ws://gateway.discord.gg/",  # Discord's host, but the token would travel in the clear
    "https://gateway.discord.gg/", "wss://127.0.0.1:8124/",  # the configured host, another port
    "wss://user@[::1/", "", "gateway.discord.gg",
])
def test_resume_url_to_anywhere_else_is_refused(url):
    assert resume_url_problem(url, GATEWAY) is not None


@pytest.mark.parametrize("url,gateway", [
    ("wss://gateway-us-east1-b.discord.gg", None), ("wss://gateway.discord.gg/?v=10", GATEWAY),
    ("wss://discord.gg", "wss://gateway.discord.gg"),
    ("ws://127.0.0.1:8123/resume-gateway/", GATEWAY), ("wss://127.0.0.1:8123/", GATEWAY),  # the simulator
    ("wss://sim.test:9/r", "wss://sim.test:9/"),
])
def test_resume_url_allowed(url, gateway):
    assert resume_url_problem(url, gateway) is None


def test_warning_names_a_few_and_counts_the_rest(tmp_path, caplog):
    path = tmp_path / "state.json"
    write(path, shard_total=16, sessions=[{"shard_id": i, "session_id": "a", "seq": 2**64} for i in range(10)])
    loaded, note = load_sessions(path, 16, 120, user_id=BOT_ID, now=1010.0)
    assert loaded == {} and "ignored 10 saved sessions" in note and "shard 2:" in note and " and 7 more" in note
    assert "shard 3:" not in note and len(warnings(caplog)) == 1


# --- a real supervisor ---------------------------------------------------------------------


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
