import sys
from pathlib import Path

import pytest
from sim import Simulator

BENCH = str(Path(__file__).resolve().parents[2] / "bench")
if BENCH not in sys.path:  # the handlers the benchmarks and these tests share (stream_log); workers inherit sys.path
    sys.path.append(BENCH)


@pytest.fixture
def sim_options():
    return dict(shards=16, max_concurrency=4, identify_window=1.0, events_per_second=5.0)


@pytest.fixture
async def sim(sim_options):
    async with Simulator(**sim_options) as s:
        yield s


@pytest.fixture
def id_log(tmp_path, monkeypatch):
    """The folder where the live resharding tests' handlers (bench/stream_log.py's IdLog) write what they delivered."""
    path = tmp_path / "ids"
    path.mkdir()
    monkeypatch.setenv("RESHARD_ID_LOG", str(path))  # the workers inherit it
    return path
