"""The bot token goes only where it must: never in reprs (plain or rich), never along a redirect,
never over plain http to another machine, never in an exception or a log line."""

import asyncio
import logging

import msgspec
import pytest

from cluster.discord_api import fetch_gateway_bot as cluster_fetch_gateway_bot
from cluster.exitcodes import ClusterExit, ExitCode
from shard import Identify, Resume, fetch_gateway_bot
from shard.recommended import RedirectRefused, check_api_url
from shard.wire import default_identify_properties

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GsimUA.c2VjcmV0LXRva2VuLWZvci1yZWRhY3Rpb24"
GATEWAY_BOT = (b'{"url":"ws://127.0.0.1:1/","shards":1,"session_start_limit":'
               b'{"total":1000,"remaining":1000,"reset_after":0,"max_concurrency":1}}')

# --- reprs ----------------------------------------------------------------------------------


def _payloads():
    return [Identify(TOKEN, default_identify_properties(), 513, [0, 1]), Resume(TOKEN, "abc", 42)]


@pytest.mark.parametrize("payload", _payloads(), ids=["identify", "resume"])
def test_rich_repr_hides_the_token_like_repr(payload):
    fields = list(payload.__rich_repr__())  # what rich prints (msgspec's default yields every field)
    assert fields[0][0] == "token" and repr(fields[0][1]) == "<redacted>"
    assert TOKEN not in repr(fields) and TOKEN not in repr(payload) and TOKEN not in str(payload)
    shown = ", ".join(f"{k}={v!r}" for k, v in fields)
    assert repr(payload) == f"{type(payload).__name__}({shown})"  # one source for both
    assert msgspec.json.decode(msgspec.json.encode(payload))["token"] == TOKEN  # the wire still carries it


@pytest.mark.parametrize("payload", _payloads(), ids=["identify", "resume"])
def test_rich_pretty_hides_the_token(payload):
    pretty = pytest.importorskip("rich.pretty")
    text = pretty.pretty_repr(payload)
    assert TOKEN not in text and "<redacted>" in text


# --- GET /gateway/bot: redirects and plain http ----------------------------------------------


class _Http:
    """A tiny HTTP/1.1 server on a real socket: records each request's head, answers ``reply(port)``."""

    def __init__(self, reply):
        self.reply = reply
        self.requests: list[bytes] = []

    async def _serve(self, reader, writer):
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        writer.write(self.reply(self))
        await writer.drain()
        writer.close()

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        await self.server.wait_closed()


def _ok(_):
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(GATEWAY_BOT), GATEWAY_BOT)


@pytest.fixture
async def redirect():
    """A server answering 302 to another port, whose server would answer /gateway/bot."""
    async with _Http(_ok) as target:
        location = f"http://127.0.0.1:{target.port}/api/v10/gateway/bot".encode()
        reply = b"HTTP/1.1 302 Found\r\nLocation: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" % location
        async with _Http(lambda _: reply) as origin:
            yield origin, target


def _sent_auth(server):
    return [h for h in server.requests if b"authorization:" in h.lower()]


async def test_shard_fetch_never_follows_a_redirect_with_the_token(redirect, caplog):
    origin, target = redirect
    caplog.set_level(logging.DEBUG)
    with pytest.raises(RedirectRefused, match=r"HTTP 302, a redirect to 127.0.0.1; not followed") as info:
        await fetch_gateway_bot(TOKEN, api_url=f"http://127.0.0.1:{origin.port}/api/v10", timeout=5)
    assert len(_sent_auth(origin)) == 1  # the configured API got the token, as it should
    assert target.requests == []  # the redirect target got nothing at all, let alone the token
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text


async def test_cluster_fetch_never_follows_a_redirect_with_the_token(redirect, caplog):
    origin, target = redirect
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ClusterExit) as info:
        await cluster_fetch_gateway_bot(f"http://127.0.0.1:{origin.port}/api/v10", TOKEN, timeout=5)
    assert info.value.code == ExitCode.ERROR and "not followed" in str(info.value)
    assert len(_sent_auth(origin)) == 1 and target.requests == []
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text


async def test_local_http_without_redirect_still_works():
    async with _Http(_ok) as api:  # the simulator's case: http:// on this machine
        info = await cluster_fetch_gateway_bot(f"http://127.0.0.1:{api.port}/api/v10", TOKEN, timeout=5)
        bot = await fetch_gateway_bot(TOKEN, api_url=f"http://localhost:{api.port}/api/v10", timeout=5)
    assert info.shards == bot.shards == 1
    assert all(f"authorization: bot {TOKEN}".lower().encode() in h.lower() for h in api.requests)


@pytest.mark.parametrize("url", ["http://discord.example/api/v10", "http://10.0.0.5:8080/api", "ftp://x/api",
                                 "discord.com/api/v10", "https:///api"])
async def test_api_url_must_be_https_unless_local(url, caplog):
    with pytest.raises(ValueError, match="must be https://"):
        check_api_url(url)
    with pytest.raises(ValueError, match="must be https://"):
        await fetch_gateway_bot(TOKEN, api_url=url, timeout=1)
    with pytest.raises(ClusterExit) as info:
        await cluster_fetch_gateway_bot(url, TOKEN, timeout=1)
    assert info.value.code == ExitCode.CONFIG and "invalid api_url" in str(info.value)
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text


@pytest.mark.parametrize("url", ["https://discord.com/api/v10", "http://127.0.0.1:8080/api/v10",
                                 "http://localhost/api", "http://[::1]:80/api"])
def test_api_url_accepted(url):
    check_api_url(url)


@pytest.mark.parametrize("status", [b"500 Internal Server Error", b"200 OK"])
async def test_a_server_echoing_the_request_does_not_put_the_token_in_the_error(status, caplog):
    def echo(server):
        body = b"you sent: " + server.requests[-1]  # the Authorization header included; not JSON
        return b"HTTP/1.1 %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body), body)

    async with _Http(echo) as api:
        with pytest.raises(ClusterExit) as info:
            await cluster_fetch_gateway_bot(f"http://127.0.0.1:{api.port}/api/v10", TOKEN, timeout=5)
    assert info.value.code == ExitCode.ERROR and "<redacted>" in str(info.value)
    assert TOKEN not in str(info.value) and TOKEN not in caplog.text
