"""The coordinator URL: bad input is one clear line, and the password never shows.

Fast unit tests only (bench/mutation.py runs this file for every mutant of cluster/coordination/redis_url.py);
connecting to a real Redis is in test_coordinator_connect.py."""

from __future__ import annotations

import pytest

from cluster.config import ClusterConfig, ConfigError
from cluster.coordination.redis_url import redacted_url, url_problem

SECRET = "s3cret-pa55"


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://127.0.0.1:6379/0", None),
    ("rediss://:pw@redis.internal:6380/2", None),
    ("redis://localhost", None),
    ("http://127.0.0.1:6379", "must be a redis:// or rediss:// URL"),
    ("127.0.0.1:6379", "must be a redis:// or rediss:// URL"),
    ("redis:///0", "has no host"),
    ("redis://h:99999/0", "valid port"),
    ("redis://h:0/0", "port 0"),
    ("redis://h:6379/zero", "database must be a number"),
])
def test_url_problems(url, problem):
    found = url_problem(url)
    assert (found is None) if problem is None else (found is not None and problem in found)


@pytest.mark.parametrize("url", [f"redis://:{SECRET}@h:1/0", f"rediss://user:{SECRET}@h/0", f"redis://:{SECRET}@h:99999"])
def test_the_password_never_shows(url):
    assert SECRET not in redacted_url(url)
    assert SECRET not in (url_problem(url.replace("redis", "http", 1)) or "")
    config = ClusterConfig(coordinator=url) if url_problem(url) is None else None
    if config is not None:
        assert SECRET not in repr(config) and "***" in repr(config)
    else:
        with pytest.raises(ConfigError) as err:
            ClusterConfig(coordinator=url)
        assert SECRET not in str(err.value)


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://h:1/0", "redis://h:1/0"),  # nothing to hide: the URL as given
    (f"redis://:{SECRET}@h:1/0", "redis://:***@h:1/0"),
    (f"rediss://user:{SECRET}@h/0?ssl_cert_reqs=none", "rediss://user:***@h/0?ssl_cert_reqs=none"),
    (f"redis://{SECRET}@h:1/0", "redis://***@h:1/0"),  # a password without its colon (redis-py reads a user)
    (f"redis://:{SECRET}@evil@h:1/0", "redis://:***@h:1/0"),  # an @ in the password: none of it shows
    (f"redis://:{SECRET}@h:99999/0", "<unparsable URL>"),
])
def test_redacted_url_exactly(url, shown):
    assert redacted_url(url) == shown


def test_url_problem_shows_the_redacted_url_and_bounds_the_database_number():
    assert url_problem(f"http://:{SECRET}@h:1") == "coordinator must be a redis:// or rediss:// URL, got 'http://:***@h:1'"
    assert url_problem("redis://h/12345") is None and url_problem("redis://h/") is None
    for db in ("123456", "X", "X1", "1X", "١"):  # too long, not a number (an Arabic-Indic digit is not ASCII)
        assert url_problem(f"redis://h/{db}") == (f"coordinator URL's database must be a number "
                                                  f"(redis://host:port/0), got 'redis://h/{db}'"), db
