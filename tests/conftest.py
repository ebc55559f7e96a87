"""Suite-wide hooks.

A test that needs a service or binary a user's machine may lack (Redis,
``redis-server``, a third-party client) skips with the reason.  CI sets
``SHARDSTACK_NO_SKIP=1`` (see ``.ci/run``): there every such skip becomes a
failure, so CI always runs them.
"""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

NO_SKIP = os.environ.get("SHARDSTACK_NO_SKIP") == "1"


def _fail_skip(report: pytest.TestReport | pytest.CollectReport) -> None:
    if NO_SKIP and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (SHARDSTACK_NO_SKIP=1), which must run every test: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    if not hasattr(report, "wasxfail"):
        _fail_skip(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    _fail_skip(report)


@pytest.fixture
def redis_server(tmp_path):
    """A fresh ``redis-server`` of this test's own (see tests/redis_process.py); killed afterwards."""
    from redis_process import BINARY, RedisServer  # noqa: PLC0415
    if BINARY is None:
        pytest.skip("needs the redis-server binary (Debian: apt-get install redis-server)")
    server = RedisServer(tmp_path).start()
    yield server
    server.stop()
