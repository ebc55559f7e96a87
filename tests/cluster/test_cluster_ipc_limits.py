"""A worker's on_call reply over the IPC frame limit: the caller gets an error, the worker lives on."""

import pytest

from cluster_big_reply import Bytes, Pid
from cluster_testing import running, until
from ipc.framing import MAX_FRAME


@pytest.fixture
def sim_options():
    return dict(shards=2, max_concurrency=2, identify_window=1.0, events_per_second=5.0)


async def test_oversize_on_call_reply_is_an_error_and_the_worker_is_not_restarted(sim, tmp_path, caplog):
    async with running(sim, "cluster_big_reply:BigReplies", tmp_path, workers=2, fresh=True) as (sup, task):
        await until(lambda: sup.active_shards() == 2, what="both shards active")
        pids = [r.value for r in await sup.broadcast(Pid())]
        assert all(isinstance(p, int) for p in pids), pids
        big = await sup.broadcast(Bytes(MAX_FRAME), timeout=30)
        assert [r.ok for r in big] == [False, False]
        assert all(f"exceeds the {MAX_FRAME}-byte IPC frame limit" in r.error for r in big), big
        small = await sup.broadcast(Bytes(1000))
        assert [r.value for r in small] == [bytes(1000)] * 2
        assert [r.value for r in await sup.broadcast(Pid())] == pids  # the same processes
        assert not sup.restarts
    assert task.result() == 0
    assert "framing error" not in caplog.text
