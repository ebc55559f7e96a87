"""The state file is checked before it is trusted with the token: its time, shard total and bot, and per
session every field and the resume URL a Resume (token included) would be sent to.

Fast unit tests only (bench/mutation.py runs this file for every mutant of cluster/state.py); a real supervisor
reading an edited file is in test_state_trust_supervisor.py."""

import json
import logging

import pytest

from cluster.state import grown_total, load_sessions, resume_url_problem, save_sessions, token_user_id
from ipc.protocol import SessionInfo
from sim.config import BOT_ID, DEFAULT_TOKEN

GATEWAY = "ws://127.0.0.1:8123/"
DISCORD_RESUME = "wss://gateway-us-east1-b.discord.gg"
OTHER_BOT = 987654321098765432


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


# --- edges found by mutation testing (make mutate) -----------------------------------------


def test_token_user_id_edges():
    assert token_user_id("MTIzNDU2Nzg5MDEyMzQ1Njc.x.y") == 12345678901234567  # unpadded base64, as Discord writes it
    assert token_user_id("MQ.x.y") == 1  # the smallest snowflake
    assert token_user_id("OTIyMzM3MjAzNjg1NDc3NTgwNw.x.y") == 2**63 - 1
    assert token_user_id("OTIyMzM3MjAzNjg1NDc3NTgwOA.x.y") is None  # 2^63: not a signed 64-bit id
    assert token_user_id("MDAwMDAwMDAwMDAwMDAwMDAwNDI.x.y") == 42  # 20 digits are read...
    assert token_user_id("MDAwMDAwMDAwMDAwMDAwMDAwMDQy.x.y") is None  # ...21 are not
    for junk in ("MTIz!NDU2.x.y", "MTIz NDU2.x.y", "MTIzNDU2!.x.y"):  # base64 of 123456 with a stray character
        assert token_user_id(junk) is None, junk


def test_token_user_id_reads_the_url_safe_base64_alphabet_like_the_standard_one():
    # base64 of digits never holds the 62nd or 63rd symbol, but a last symbol's unused low bits can: "M+", "M-",
    # "M/" and "M_" all decode to "3" (as does "Mz"), whichever alphabet the head was written in
    for head in ("Mz", "M+", "M-", "M/", "M_"):
        assert token_user_id(f"{head}.x.y") == 3, head
        assert token_user_id(f"MTIzM{head[1]}.x.y") == 1233, head


def test_a_file_at_exactly_the_clock_skew_is_used_and_one_second_more_is_not(tmp_path):
    path = tmp_path / "state.json"
    write(path, saved_at=1070.0)  # now is 1010.0: 60 s ahead
    assert list(load(path)[0]) == [0]
    write(path, saved_at=1071.0)
    loaded, note = load(path)
    assert loaded == {} and "saved_at 1071.0 is in the future (this clock says 1010)" in note


def test_no_state_file_is_not_a_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    path = tmp_path / "missing.json"
    assert load(path) == ({}, f"no state file at {path}: identifying")
    assert warnings(caplog) == []
    assert [r.getMessage() for r in caplog.records] == [f"no state file at {path}: identifying"]


def test_an_unreadable_file_says_why_without_backticks(tmp_path):
    path = tmp_path / "state.json"
    write(path, shard_total=0)
    loaded, note = load(path)
    assert note == f"ignoring unreadable state file {path}: Expected int >= 1 - at $.shard_total; identifying"
    path.write_text("{not json")
    assert "JSON is malformed" in load(path)[1]


def test_the_warning_lists_exactly_three_without_a_count_and_a_shard_listed_three_times(tmp_path):
    path = tmp_path / "state.json"
    one = {"shard_id": 1, "session_id": "a", "seq": 3}
    write(path, shard_total=8, sessions=[one, one, one, {"shard_id": 2, "session_id": "", "seq": 1}, "junk"])
    loaded, note = load_sessions(path, 8, 120, user_id=BOT_ID, now=1010.0)
    assert loaded == {}
    assert note == (f"resuming 0 sessions from {path} (written 10 s ago); ignored 3 saved sessions that do not fit, "
                    "which identify: shard 2: Expected str matching regex '^[!-~]{1,128}$' - at $.session_id; "
                    "entry 4: Expected object, got str; shard 1: listed more than once")


def test_a_long_resume_url_is_shown_cut_to_100_characters(tmp_path):
    path = tmp_path / "state.json"
    url = "ws://evil.example/" + "x" * 200
    write(path, sessions=[{"shard_id": 0, "session_id": "a", "seq": 3, "resume_url": url}])
    assert f"shard 0: resume_url {url[:100]!r} is neither" in load(path)[1]


def test_resume_url_problems_word_for_word():
    assert resume_url_problem("wss://user@[::1/", GATEWAY) == "is not a valid URL"
    assert resume_url_problem("ws://evil.example/", None) == (
        "is neither wss:// on discord.gg nor the configured gateway's host (none)")
    assert resume_url_problem("ws://evil.example/", GATEWAY) == (
        "is neither wss:// on discord.gg nor the configured gateway's host (127.0.0.1:8123)")
    assert resume_url_problem("ws://evil.example/", "") is not None  # an empty gateway setting allows nothing


def test_a_state_file_of_more_shards_gives_its_total_for_this_bot_whatever_its_age(tmp_path):
    path = tmp_path / "state.json"
    assert grown_total(path, 4, user_id=BOT_ID, now=1000.0) is None  # no file
    save_sessions(path, 8, [], user_id=BOT_ID, now=1000.0)
    assert grown_total(path, 4, user_id=BOT_ID, now=1000.0) == 8
    assert grown_total(path, 7, user_id=BOT_ID, now=10.0**9) == 8  # years later: Discord keeps the 8 shards
    assert grown_total(path, 8, user_id=BOT_ID, now=1000.0) is None  # not larger
    assert grown_total(path, 4, user_id=OTHER_BOT, now=1000.0) is None  # another bot's
    assert grown_total(path, 4, user_id=BOT_ID, now=0.0) is None  # from the future
    assert grown_total(path, 4, user_id=BOT_ID) == 8  # now: the clock's (the file's time is long past)
    path.write_text("{not json")
    assert grown_total(path, 4, user_id=BOT_ID, now=1000.0) is None
    path.write_text(json.dumps({"shard_total": "8"}))
    assert grown_total(path, 4, user_id=BOT_ID, now=1000.0) is None

