"""The README's handler example, extracted from README.md and run in real workers against the simulator."""

import re
import sys
from pathlib import Path

from sim import Simulator

from cluster_testing import running

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_handler_source() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    (source,) = [b for b in blocks if "class Handler" in b]
    return source


async def test_readme_handler_runs_in_every_worker_and_commands_reach_the_gateway(tmp_path, monkeypatch):
    (tmp_path / "readme_handler.py").write_text(readme_handler_source())
    monkeypatch.setattr(sys, "path", [str(tmp_path), *sys.path])  # spawned workers inherit sys.path
    async with Simulator(shards=4, max_concurrency=4, identify_window=1.0, heartbeat_interval=2000,
                         events_per_second=5) as sim:
        async with running(sim, "readme_handler:Handler", tmp_path, workers=2):
            # The example sends a Presence Update (op 3) through each shard when it sees READY.
            snap = await sim.wait_until(
                lambda s: all(s["shards"].get(str(n), {}).get("commands", {}).get("3") == 1 for n in range(4)),
                timeout=30)
        assert snap["total"]["identifies"] == 4 and snap["total"]["violations"] == 0
