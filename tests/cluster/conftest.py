import pytest
from sim import Simulator


@pytest.fixture
def sim_options():
    return dict(shards=16, max_concurrency=4, identify_window=1.0, events_per_second=5.0)


@pytest.fixture
async def sim(sim_options):
    async with Simulator(**sim_options) as s:
        yield s
