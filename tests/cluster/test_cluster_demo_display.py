import asyncio
import os
import re
import signal
import socket
import sys

import pytest

from cluster.display import progress_bar, status_line


def test_progress_bar_and_status_line():
    assert progress_bar(8, 16, 8, width=10) == "[#####.....] 8/16 shards active · 8 queued for identify"
    assert progress_bar(0, 0, 0).startswith("starting")
    st = {"active": 16, "shard_total": 16, "rolling": True,
          "workers": [{"state": "running"}, {"state": "exited"}],
          "session_budget": {"remaining": 984, "total": 1000}}
    line = status_line(st, 1234.4, "http://127.0.0.1:9100")
    assert line == ("16/16 shards active · 1/2 workers · 1,234 events/s · identifies left 984/1000 · "
                    "rolling restart · metrics http://127.0.0.1:9100/metrics")


async def test_demo_runs_and_stops_cleanly():
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cluster.demo", "--duration", "8", "--http-port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode() + err.decode()
    assert proc.returncode == 0, text
    assert "16/16 shards active · 4/4 workers" in text
    assert "16 identifies; exit code 0" in text


def live_processes_in_group(pgid):
    """Processes of process group ``pgid`` that still run (zombies waiting for init to reap them are dead)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(pid))
    return found


async def test_demo_stops_cleanly_on_ctrl_c():
    """Ctrl-C in a terminal sends SIGINT to the whole foreground process group: the demo, its workers and
    (were it not in its own session) the simulator. Everything stops, exit code 0, no traceback, nothing left."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "cluster.demo", "--http-port", "0", start_new_session=True,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    seen = []
    try:
        while not any("16/16 shards active" in line for line in seen):
            line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
            assert line, "".join(seen)
            seen.append(line)
        os.killpg(proc.pid, signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = "".join(seen) + rest.decode()
    assert proc.returncode == 0, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text, text
    assert re.search(r"stopped: [\d,]+ events handled; 16 identifies; exit code 0", text), text
    deadline = asyncio.get_running_loop().time() + 10
    # multiprocess's resource tracker exits only once the demo is gone (its pipe closes): wait for it, bounded
    while live := live_processes_in_group(proc.pid):
        assert asyncio.get_running_loop().time() < deadline, f"still running after the demo exited: {live}"
        await asyncio.sleep(0.05)
    port = int(re.search(r"simulator: gateway ws://127\.0\.0\.1:(\d+)/", text)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()  # the simulator stopped too
