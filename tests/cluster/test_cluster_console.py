"""The image's HEALTHCHECK, run as the Dockerfile writes it, against a real supervisor on a port of its own.

``shardstack healthcheck`` runs in a subprocess the way its installed wrapper runs it, with the image's
``CLUSTER_*`` environment except the port: a check that ignored ``CLUSTER_HTTP_PORT`` would ask 9100 and fail.
"""

import asyncio
import json
import os
import re
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cluster_testing import running, until

DOCKERFILE = Path(__file__).parents[2] / "deploy" / "Dockerfile"
SHARDSTACK = [sys.executable, "-c", "import sys; from cluster.console import main; sys.exit(main())"]


@pytest.fixture
def sim_options():
    return dict(shards=4, max_concurrency=4, identify_window=1.0, events_per_second=5.0)


def image_healthcheck():
    """The HEALTHCHECK's command line, with the console script replaced by what its wrapper runs."""
    (command,) = re.findall(r"^HEALTHCHECK .*\bCMD (\[.*\])$", DOCKERFILE.read_text(), re.M)
    argv = json.loads(command)
    assert argv[0] == "shardstack"
    return [*SHARDSTACK, *argv[1:]]


def image_env(**settings):
    """This environment without CLUSTER_* settings, plus the image's (ENV) and ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTER_")}
    env.update(re.findall(r"\b(CLUSTER_[A-Z_]+)=(\S+)", DOCKERFILE.read_text()))
    env.update(settings)
    return env


async def healthcheck(env):
    proc = await asyncio.create_subprocess_exec(*image_healthcheck(), env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return proc.returncode, (out + err).decode()


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_image_healthcheck_follows_the_supervisors_port_and_health(sim, tmp_path):
    from cluster_handlers import Freeze, Quiet

    async def until_check(code, what):
        deadline = asyncio.get_running_loop().time() + 20
        while (reply := await healthcheck(env))[0] != code:
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}: {reply}"
        return reply

    # Bound like the image (CLUSTER_HTTP_HOST=0.0.0.0), on a free port instead of 9100.
    async with running(sim, Quiet, tmp_path, workers=2, http_host="0.0.0.0", ipc_heartbeat_interval=0.2,
                       ipc_heartbeat_missed=1000, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 4 and sup.http_url is not None, what="bring-up")
        port = urlsplit(sup.http_url).port
        assert port != 9100
        env = image_env(CLUSTER_HTTP_PORT=str(port))
        assert await healthcheck(env) == (0, "")
        replies = await sup.broadcast(Freeze(1, 4.0), timeout=0.3)  # worker 1 stops answering for 4 s
        assert replies[0].ok and "timed out" in replies[1].error
        code, text = await until_check(1, "unhealthy while worker 1 is frozen")
        assert f"127.0.0.1:{port}/healthz answered 503" in text and "worker 1 has not answered IPC heartbeats" in text
        await until_check(0, "healthy again once the worker answers")


async def test_image_healthcheck_fails_without_a_supervisor_and_never_exits_2():
    port = closed_port()
    code, text = await healthcheck(image_env(CLUSTER_HTTP_PORT=str(port)))
    assert code == 1 and f"cannot reach http://127.0.0.1:{port}/healthz" in text
    code, text = await healthcheck(image_env(CLUSTER_HTTP_PORT="not-a-port"))  # Docker reserves exit code 2
    assert code == 1 and "http_port" in text and "not-a-port" in text


@pytest.mark.parametrize("host, url", [("0.0.0.0", "http://127.0.0.1:9200/healthz"),
                                       ("::", "http://[::1]:9200/healthz"), ("::1", "http://[::1]:9200/healthz"),
                                       ("10.1.2.3", "http://10.1.2.3:9200/healthz")])
def test_healthcheck_asks_a_wildcard_bind_on_loopback(monkeypatch, host, url):
    from cluster.console import healthcheck_url

    for name in [k for k in os.environ if k.startswith("CLUSTER_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("CLUSTER_HTTP_HOST", host)
    monkeypatch.setenv("CLUSTER_HTTP_PORT", "9200")
    assert healthcheck_url(None, None) == url
    assert healthcheck_url("http://example.test:1/", None) == "http://example.test:1/healthz"
    monkeypatch.setenv("CLUSTER_HTTP_PORT", "none")
    with pytest.raises(ValueError, match="HTTP endpoint is disabled"):
        healthcheck_url(None, None)
