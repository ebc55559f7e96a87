"""A strict local Discord: REST + gateway v10 simulator with chaos controls and delivery accounting.

    async with Simulator(shards=4, max_concurrency=2, identify_window=1.0) as sim:
        ...  # point a client at sim.url / sim.api_url, then:
        await sim.wait_until(lambda s: s["total"]["identifies"] == 4)
        sim.reconnect(0); sim.zombie(1); sim.drop(2); sim.close(3, 4000)

Run standalone with ``python -m sim --port 8765`` (``--help`` lists every option).
"""

__version__ = "0.1.0"  # the release, as in pyproject.toml (tests/test_packaging.py checks)

from .config import BOT_ID, DEFAULT_TOKEN, SimConfig
from .server import RESUME_PATH, Simulator
from .stats import Stats

__all__ = ["BOT_ID", "DEFAULT_TOKEN", "RESUME_PATH", "SimConfig", "Simulator", "Stats"]
