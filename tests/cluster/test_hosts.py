"""Static assignment across hosts and the host registry in a real Redis (cluster/hosts.py)."""

from __future__ import annotations

import asyncio

import pytest

from cluster.config import ClusterConfig, load_config
from cluster.error import ConfigError
from cluster.hosts import (agree_layout, host_ordinal, host_range, new_record,
                           parse_shard_range, read_hosts, register_host, remove_host, renew_host)

NS = "shardstack:test:"


def test_shard_range_parses_inclusive_and_refuses_nonsense():
    assert parse_shard_range("0-15") == range(0, 16)
    assert parse_shard_range(" 8 - 8 ") == range(8, 9)
    for bad in ("8-3", "a-b", "3", "-1-4", ""):
        with pytest.raises(ConfigError, match="shard_range"):
            parse_shard_range(bad)


def test_host_ranges_are_consecutive_and_cover_every_shard():
    ranges = [host_range(24, host_index=i, host_count=3) for i in range(3)]
    assert ranges == [range(0, 8), range(8, 16), range(16, 24)]
    assert host_range(10, host_index=2, host_count=3) == range(7, 10)
    assert host_range(24) == range(24)
    assert host_range(24, shard_range=range(4, 9)) == range(4, 9)
    with pytest.raises(ConfigError, match="past the last shard"):
        host_range(24, shard_range=range(20, 25))
    with pytest.raises(ConfigError, match="not below host_count"):
        host_range(24, host_index=3, host_count=3)


def test_statefulset_ordinal():
    assert host_ordinal("shardstack-3") == 3
    assert host_ordinal("bot-cluster-12") == 12
    with pytest.raises(ConfigError, match="ordinal"):
        host_ordinal("laptop")


@pytest.fixture
async def client(redis_server):
    import redis.asyncio as aioredis
    c = aioredis.Redis.from_url(redis_server.url)
    yield c
    await c.aclose()


async def test_overlapping_live_hosts_are_refused_atomically(client):
    a = new_record("a", range(0, 8), 24)
    await register_host(client, NS, a, ttl=5)
    with pytest.raises(ConfigError, match=r"host a .* runs shards 0-7"):
        await register_host(client, NS, new_record("b", range(7, 12), 24), ttl=5)
    await register_host(client, NS, new_record("c", range(8, 16), 24), ttl=5)
    assert [r.host_id for r in await read_hosts(client, NS)] == ["a", "c"]
    # many hosts racing for the same range: exactly one wins
    results = await asyncio.gather(*(register_host(client, NS, new_record(f"r{i}", range(16, 24), 24), ttl=5)
                                      for i in range(20)), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, ConfigError) for r in results if r is not None)


async def test_a_dead_or_removed_host_frees_its_range(client):
    await register_host(client, NS, new_record("a", range(0, 8), 24), ttl=0.2)
    await client.delete(f"{NS}host:a")  # what its TTL does when it dies
    await register_host(client, NS, new_record("b", range(0, 8), 24), ttl=5)
    assert [r.host_id for r in await read_hosts(client, NS)] == ["b"]
    await remove_host(client, NS, "b")
    assert await read_hosts(client, NS) == []
    record = new_record("c", range(0, 4), 24)
    assert await renew_host(client, NS, record) is False  # lost (a Redis restart): re-created
    assert await renew_host(client, NS, record) is True
    assert [r.host_id for r in await read_hosts(client, NS)] == ["c"]


async def test_a_host_whose_record_lapsed_does_not_take_back_shards_another_host_took(client):
    """A host cut off from Redis past its TTL, whose range another host registered meanwhile: its renewal registers
    it again with the overlap check, which refuses it (nothing written), instead of two hosts running the shards."""
    a, b = new_record("a", range(0, 10), 10), new_record("b", range(5, 10), 10)
    await register_host(client, NS, a, ttl=5)
    await client.delete(f"{NS}host:a")  # what its TTL did while it could not reach Redis
    await register_host(client, NS, b, ttl=5)
    with pytest.raises(ConfigError, match=r"record expired .* host b \(.*\) runs shards 5-9: shards 5-9 are that "
                                          r"host's now, so this host stops its shards"):
        await renew_host(client, NS, a, ttl=5)
    assert [r.host_id for r in await read_hosts(client, NS)] == ["b"]
    assert await client.smembers(f"{NS}hosts") == {b"b"}
    assert await renew_host(client, NS, b, ttl=5) is True
    assert await renew_host(client, NS, new_record("c", range(0, 5), 10)) is False  # no overlap: registered again
    assert [r.host_id for r in await read_hosts(client, NS)] == ["c", "b"]


async def test_layout_is_decided_once_per_cluster(client):
    assert await agree_layout(client, NS, 24, 4) == (24, 4)
    assert await agree_layout(client, NS, 32, 16) == (24, 4)  # later hosts adopt the stored layout
    assert await agree_layout(client, NS, 32, 16, explicit_shards=24) == (24, 4)
    with pytest.raises(ConfigError, match="started with 32 shards, but the cluster has 24"):
        await agree_layout(client, NS, 32, 4, explicit_shards=32)
    with pytest.raises(ConfigError, match="max_concurrency 8"):
        await agree_layout(client, NS, 24, 8, explicit_concurrency=8)


def test_config_options_for_the_host_and_auto_from_the_pod_name(monkeypatch):
    cfg = load_config(env={"CLUSTER_HOST_INDEX": "auto", "CLUSTER_HOST_COUNT": "3"})
    assert (cfg.host_index, cfg.host_count) == ("auto", 3)  # "auto" is not None here
    monkeypatch.setenv("HOSTNAME", "shardstack-2")
    assert cfg.host_shards(24) == range(16, 24)
    monkeypatch.setenv("HOSTNAME", "shardstack-5")
    with pytest.raises(ConfigError, match=r"host_index 5 .* not below host_count 3"):
        cfg.host_shards(24)
    assert load_config({"host_index": "1", "host_count": 2}).host_shards(10) == range(5, 10)
    assert ClusterConfig(shard_range="3-5").host_shards(8) == range(3, 6)
    assert ClusterConfig().host_shards(8) == range(8)
    for bad, message in [(dict(shard_range="3-5", host_count=2, host_index=0), "not both"),
                         (dict(host_index=1), "go together"),
                         (dict(host_index="first", host_count=2), "number or auto"),
                         (dict(host_index=2, host_count=2), "0 to host_count - 1"), (dict(shard_range="5-3"), "after")]:
        with pytest.raises(ConfigError, match=message):
            ClusterConfig(**bad)


async def test_one_notion_of_a_live_host_for_the_registry_the_leases_and_the_statuses(client):
    """A host is live while its registry record lives: a status it published outlives nothing, and the leases'
    stricter reading (renewed lately) drops a host whose record was not renewed, before the record expires."""
    import msgspec

    from cluster.crosshost import HostStatus, read_statuses

    for hid, first in (("a", 0), ("b", 8), ("gone", 16)):
        await register_host(client, NS, new_record(hid, range(first, first + 8), 24), ttl=10)
        status = HostStatus(hid, "machine", 1, 0.0, None, {"shards": []})
        await client.set(f"{NS}status:{hid}", msgspec.msgpack.encode(status))
    await client.delete(f"{NS}host:gone")  # its record expired (it died): its status key is still there
    await client.pexpire(f"{NS}host:b", 6000)  # b's last renewal was 4 s ago (ttl 10)
    assert sorted(await read_statuses(client, NS)) == ["a", "b"]
    assert [r.host_id for r in await read_hosts(client, NS)] == ["a", "b"]
    assert [r.host_id for r in await read_hosts(client, NS, renewed_within=2.5, ttl=10)] == ["a"]
