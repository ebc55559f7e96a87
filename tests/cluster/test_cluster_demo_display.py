import asyncio
import sys

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
