"""Sessions in Redis (issue 8, item 4): written whole per shard with a TTL, checked on load by the state file's
rules, and only the changed or aging ones rewritten. A real redis-server of the test's own."""

from __future__ import annotations

import logging

import pytest

from cluster.coordination.redis_conn import connect
from cluster.sessions_store import FileSessionStore, RedisSessionStore
from ipc.protocol import SessionInfo

GATEWAY = "ws://127.0.0.1:4000/"
RESUME = "ws://127.0.0.1:4000/resume"
USER = 1234
PREFIX = "shardstack:test:"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def sessions(n: int, seq: int = 10) -> list[SessionInfo]:
    return [SessionInfo(i, f"sess-{i}", seq + i, RESUME) for i in range(n)]


@pytest.fixture
async def client(redis_server):
    c = await connect(redis_server.url)
    yield c
    await c.aclose()


def store(client, redis_server, clock=None, ttl=120.0):
    return RedisSessionStore(client, redis_server.url, PREFIX, host="h:1", ttl=ttl, interval=1.0,
                             **({"clock": clock} if clock else {}))


async def load(st, ids=range(8), total=8, user_id=USER):
    return await st.load(ids, total, 120.0, user_id=user_id, gateway_url=GATEWAY)


async def test_saved_sessions_load_in_another_store_with_a_ttl(client, redis_server):
    await store(client, redis_server).save(8, sessions(8), user_id=USER)
    assert await load(store(client, redis_server)) == {s.shard_id: s for s in sessions(8)}
    ttl = await client.pttl(PREFIX + "session:3")
    assert 0 < ttl <= 120_000
    fields = await client.hgetall(PREFIX + "session:3")
    assert fields[b"host"] == b"h:1" and fields[b"user_id"] == str(USER).encode()
    # only the shards asked for are read (a host loads the shards it runs)
    assert set(await load(store(client, redis_server), ids=[1, 5])) == {1, 5}


async def test_a_session_without_resume_url_replaces_the_old_one_whole(client, redis_server):
    st = store(client, redis_server)
    await st.save(8, sessions(1), user_id=USER)
    await st.save(8, [SessionInfo(0, "new", 99, None)], user_id=None)
    fields = await client.hgetall(PREFIX + "session:0")
    assert b"resume_url" not in fields and b"user_id" not in fields and fields[b"session_id"] == b"new"


async def test_bad_entries_are_ignored_with_one_warning_naming_them(client, redis_server, caplog):
    await store(client, redis_server).save(8, sessions(8), user_id=USER)
    await client.hset(PREFIX + "session:1", "resume_url", "wss://evil.example.com/")
    await client.hset(PREFIX + "session:2", "seq", "-5")
    await client.hset(PREFIX + "session:3", "user_id", "999")
    await client.hset(PREFIX + "session:4", "shard_total", "16")
    await client.hset(PREFIX + "session:5", "session_id", "has space")
    with caplog.at_level(logging.INFO, logger="cluster"):
        got = await load(store(client, redis_server))
    assert set(got) == {0, 6, 7}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    text = warnings[0]
    assert "ignored 5 saved sessions" in text and "and 2 more" in text  # the first three are named
    assert "shard 3: it is for bot user 999" in text and "shard 1: resume_url 'wss://evil.example.com/'" in text


async def test_only_changed_or_aging_sessions_are_rewritten(client, redis_server):
    clock = Clock()
    st = store(client, redis_server, clock, ttl=30.0)
    await st.save(8, sessions(4), user_id=USER)
    await client.delete(PREFIX + "session:0", PREFIX + "session:1")  # a write would bring them back
    changed = [SessionInfo(1, "sess-1", 500, RESUME), *sessions(4)[2:]]
    clock.now += 5
    await st.save(8, [sessions(4)[0], *changed], user_id=USER)
    assert not await client.exists(PREFIX + "session:0")  # unchanged and fresh: not written
    assert await client.hget(PREFIX + "session:1", "seq") == b"500"
    clock.now += 11  # past a third of the TTL since the first write: rewritten to stay alive
    await st.save(8, [sessions(4)[0]], user_id=USER)
    assert await client.exists(PREFIX + "session:0")


async def test_an_unreachable_redis_is_an_oserror_without_the_password(tmp_path):
    from redis_process import RedisServer

    server = RedisServer(tmp_path, password="pw-secret-1").start()
    try:
        c = await connect(server.url)
        st = RedisSessionStore(c, server.url, PREFIX, host="h:1", ttl=60.0, interval=1.0)
        server.kill()
        with pytest.raises(OSError) as err:
            await st.save(8, sessions(2), user_id=USER)
        assert "pw-secret-1" not in str(err.value) and "unavailable" in str(err.value)
        await c.aclose()
    finally:
        server.stop()


async def test_the_file_store_is_the_state_file(tmp_path):
    st = FileSessionStore(str(tmp_path / "state.json"), 5.0)
    await st.save(8, sessions(3), user_id=USER)
    assert await st.load(range(8), 8, 120.0, user_id=USER, gateway_url=GATEWAY) == {s.shard_id: s for s in sessions(3)}


async def test_a_host_writes_only_the_sessions_of_the_shards_it_runs():
    from cluster.config import ClusterConfig
    from cluster.loops import Loops
    from cluster.runtime import Runtime, ShardView

    class Recording:
        interval, where, refresh = 1.0, "memory", True

        def __init__(self):
            self.saved = []

        async def save(self, shard_total, sessions, *, user_id):
            self.saved.append(sorted(s.shard_id for s in sessions))

    rt = Runtime(ClusterConfig(), stop=lambda *a: None, token=lambda: "not-a-discord-token")
    rt.shard_total = 8
    rt.shards = {i: ShardView(i, 0) for i in (2, 3)}
    rt.record_sessions(sessions(8))  # sessions of shards this host does not run (loaded, or reported late)
    loops = Loops(rt, send_to_shard=lambda *a: True, kill=None)
    loops.store = Recording()
    assert await loops.save_state()
    assert loops.store.saved == [[2, 3]]


def test_cluster_status_with_a_coordinator_fails_in_one_line(redis_server, tmp_path, monkeypatch, capsys):
    from cluster.cli import main
    from redis_process import RedisServer, free_port

    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    monkeypatch.delenv("CLUSTER_COORDINATOR", raising=False)
    monkeypatch.delenv("CLUSTER_CLUSTER_NAME", raising=False)
    assert main(["status", "--coordinator", redis_server.url]) == 2  # which bot? no token, no cluster name
    assert "needs --cluster-name or the bot token (DISCORD_TOKEN)" in capsys.readouterr().err
    assert main(["status", "--coordinator", redis_server.url, "--cluster-name", "nobody"]) == 1
    assert "no host of this bot has reported" in capsys.readouterr().err
    assert main(["status", "--coordinator", f"redis://127.0.0.1:{free_port()}/0", "--cluster-name", "x"]) == 1
    assert "unavailable" in capsys.readouterr().err
    locked = RedisServer(tmp_path, password="right-pw-77").start()
    try:
        assert main(["status", "--coordinator", f"redis://:wrong-pw-88@127.0.0.1:{locked.port}/0",
                     "--cluster-name", "x"]) == 2
        err = capsys.readouterr().err
        assert "refused the login" in err and "wrong-pw-88" not in err and len(err.strip().splitlines()) == 1
    finally:
        locked.stop()


async def test_a_fenced_write_is_refused_once_the_block_lease_is_another_hosts(client, redis_server, caplog):
    from cluster.leases import LeaseStore, lease_key, lease_value

    old = LeaseStore(client, PREFIX, "old", ttl=5.0)
    epoch, _ = await old.claim(0)
    fence = {0: (lease_key(PREFIX, 0), lease_value(epoch, "old"))}
    st = RedisSessionStore(client, redis_server.url, PREFIX, host="old", ttl=60.0, interval=1.0,
                           fence=fence.get)  # shards 0 and 1 are block 0; shard 2 is not fenced
    both = [SessionInfo(0, "sess-0", 5, RESUME), SessionInfo(2, "sess-2", 5, RESUME)]
    await st.save(8, both, user_id=USER)
    assert await client.hget(PREFIX + "session:0", "seq") == b"5" and st.refused == 0
    await client.delete(lease_key(PREFIX, 0))  # it expired while "old" was paused; "new" took the block
    new_epoch, _ = await LeaseStore(client, PREFIX, "new", ttl=5.0).claim(0)
    await client.hset(PREFIX + "session:0", "seq", 77)  # the new owner's session moved on
    late = [SessionInfo(0, "sess-0", 6, RESUME), SessionInfo(2, "sess-2", 6, RESUME)]
    with caplog.at_level(logging.WARNING, logger="cluster"):
        await st.save(8, late, user_id=USER)
    assert await client.hget(PREFIX + "session:0", "seq") == b"77"  # refused: not overwritten
    assert await client.hget(PREFIX + "session:2", "seq") == b"6"  # the rest is written
    assert st.refused == 1 and "shards 0:" in caplog.text
    fence[0] = (lease_key(PREFIX, 0), lease_value(new_epoch, "new"))  # with the right epoch it is written
    await st.save(8, late, user_id=USER)
    assert await client.hget(PREFIX + "session:0", "seq") == b"6" and st.refused == 1


async def test_a_session_of_a_layout_the_cluster_resharded_away_from_is_not_written(client, redis_server, caplog):
    """Review finding 2 (related): the switch of a live reshard deletes the old layout's sessions with the layout
    change (one script); a host not switched yet (or a joiner's old workers) must not write them back under the same
    ``session:<shard>`` keys, over the new layout's sessions: fenced or not, a write checks the layout."""
    from cluster.hosts import layout_key
    from cluster.leases import LeaseStore, lease_key, lease_value

    epoch, _ = await LeaseStore(client, PREFIX, "old", ttl=5.0).claim(0)
    fence = {0: (lease_key(PREFIX, 0), lease_value(epoch, "old"))}
    st = RedisSessionStore(client, redis_server.url, PREFIX, host="old", ttl=60.0, interval=1.0, fence=fence.get)
    await client.set(layout_key(PREFIX), "8,1")
    await st.save(8, [SessionInfo(0, "sess-0", 5, RESUME), SessionInfo(2, "sess-2", 5, RESUME)], user_id=USER)
    assert [await client.hget(PREFIX + f"session:{s}", "seq") for s in (0, 2)] == [b"5", b"5"] and st.refused == 0
    await client.set(layout_key(PREFIX), "16,1")  # go: the layout is 16 shards, the 8 shards' sessions deleted
    await client.delete(PREFIX + "session:0", PREFIX + "session:2")
    await client.hset(PREFIX + "session:2", mapping={"seq": 77, "shard_total": 16})  # the new layout's shard 2
    with caplog.at_level(logging.WARNING, logger="cluster"):
        await st.save(8, [SessionInfo(0, "sess-0", 6, RESUME), SessionInfo(2, "sess-2", 6, RESUME)], user_id=USER)
    assert not await client.exists(PREFIX + "session:0")  # the lease still holds, but the layout moved on
    assert await client.hgetall(PREFIX + "session:2") == {b"seq": b"77", b"shard_total": b"16"}
    assert st.refused == 2
    assert "not saving the sessions of shards 0, 2 of the 8-shard layout: the cluster resharded away" in caplog.text
    await st.save(16, [SessionInfo(2, "sess-2n", 9, RESUME)], user_id=USER)  # the new layout's writes go through
    assert await client.hget(PREFIX + "session:2", "session_id") == b"sess-2n"
