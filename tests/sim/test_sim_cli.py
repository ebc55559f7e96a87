"""`python -m sim`: --help lists every option, and the server really starts and serves."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import subprocess
import sys

from sim_client import GatewayClient, rest

from sim import DEFAULT_TOKEN, SimConfig

REQUIRED = ("--port", "--token", "--shards", "--max-concurrency", "--identify-window", "--session-limit",
            "--heartbeat-interval", "--guilds-per-shard", "--events-per-second", "--flood")


def test_help_lists_every_option():
    out = subprocess.run([sys.executable, "-m", "sim", "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for flag in REQUIRED:
        assert re.search(rf"(^|\s){re.escape(flag)}(\s|,|$)", out.stdout), flag
    for f in dataclasses.fields(SimConfig):  # and every other knob, under its kebab-case name
        assert "--" + f.name.replace("_", "-") in out.stdout, f.name
    assert DEFAULT_TOKEN not in out.stdout  # the default token is not printed


def test_invalid_option_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "sim", "--shards", "0"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "shards must be >= 1" in out.stderr


async def test_cli_serves_rest_and_gateway():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sim", "--port", "0", "--shards", "2", "--max-concurrency", "2", "--quiet",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        urls = {}
        async with asyncio.timeout(20):
            while "admin" not in urls:
                line = (await proc.stdout.readline()).decode()
                assert line, (await proc.stderr.read()).decode()
                m = re.match(r"\[sim\] (\w+)\s+(\S+)", line)
                if m:
                    urls[m[1]] = m[2]
        status, _, body = await rest(urls["rest"] + "/gateway/bot", {"Authorization": f"Bot {DEFAULT_TOKEN}"})
        assert status == 200 and json.loads(body)["shards"] == 2
        c = await GatewayClient.open(urls["gateway"])
        ready = await c.ready(DEFAULT_TOKEN, shard=(1, 2))
        assert ready["d"]["resume_gateway_url"] == urls["resume"]
        await c.close()
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
