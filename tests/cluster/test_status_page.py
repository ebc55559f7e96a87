"""The supervisor's live status page (``GET /``), in a real browser: Playwright drives Debian's chromium against
a running cluster on the simulator. The grid shows every shard and follows a shard that the simulator closes
without a reload; a synthetic 1,024-shard ``/status`` with three hosts stays readable. The page loads nothing
but its own supervisor's URLs under a strict Content-Security-Policy. Screenshots are taken on every run; with
``SHARDSTACK_SCREENSHOTS=1`` they go to ``bench/results/status-page-*.png`` for the README (so a plain test run
leaves the tree as it was), else to a temporary directory."""

import asyncio
import contextlib
import fnmatch
import json
import os
import tempfile
import tomllib
import urllib.request
from pathlib import Path

import pytest

from cluster import ClusterConfig, Supervisor
from cluster.http import STATIC, serve_http
from cluster_testing import FAST, http_get, running, until
from test_multihost_hosts import hosts_for

playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed (the test extra)")
CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).is_file(),
                                reason=f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
RESULTS = (ROOT / "bench" / "results" if os.environ.get("SHARDSTACK_SCREENSHOTS") == "1"
           else Path((_SHOTS := tempfile.TemporaryDirectory(prefix="status-page-shots-")).name))  # removed at exit
EXPECT_MS = 15_000


@pytest.fixture
async def browser():
    async with playwright.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


@contextlib.asynccontextmanager
async def watched_page(browser, base: str, width: int = 1280, expected_error: str = "favicon"):
    """A page that may reach only ``base``: any other request is aborted and fails the test, and so does a
    console error (a CSP violation is one; one containing ``expected_error`` is expected) or an uncaught
    script error."""
    page = await browser.new_page(viewport={"width": width, "height": 900})
    foreign, errors = [], []

    async def guard(route):
        if route.request.url.startswith(base + "/"):
            await route.continue_()
        else:
            foreign.append(route.request.url)
            await route.abort()

    await page.route("**/*", guard)
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and expected_error not in m.text else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        yield page
    finally:
        await page.close()
    assert foreign == [], f"the page requested URLs outside its supervisor: {foreign}"
    assert errors == [], f"the page logged errors: {errors}"


def tile(page, shard: int):
    return page.locator(f'#grid .tile[data-shard="{shard}"]')


async def test_the_page_and_its_files_are_served_read_only_with_a_strict_csp():
    cfg = ClusterConfig(http_port=0)
    server, url = await serve_http(_NoCluster(cfg), "127.0.0.1", 0)
    try:
        for path, (name, ctype) in STATIC.items():
            headers, body = await asyncio.to_thread(_get_with_headers, url + path)
            assert headers["content-type"] == ctype
            assert body == (ROOT / "cluster" / "static" / name).read_bytes()
            csp = headers["content-security-policy"]
            assert "default-src 'none'" in csp and "script-src 'self'" in csp and "style-src 'self'" in csp
            assert "unsafe-inline" not in csp and "http" not in csp
            assert headers["x-content-type-options"] == "nosniff"
        html = (ROOT / "cluster" / "static" / "status.html").read_text()
        assert "<style" not in html and "style=" not in html and "<script>" not in html  # nothing inline
        assert "http://" not in html and "https://" not in html
        assert (await asyncio.to_thread(http_get, url + "/status.map"))[0] == 404
    finally:
        server.close()


def test_the_wheel_ships_the_page():
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["cluster"]
    for name, _ in STATIC.values():
        assert any(fnmatch.fnmatch(f"static/{name}", g) for g in globs), name


async def test_the_grid_follows_a_live_cluster_without_a_reload(sim, tmp_path, browser):
    RESULTS.mkdir(parents=True, exist_ok=True)
    # A shard's connects time out within 1 s, so it reconnects soon after the simulator answers again.
    cfg = ClusterConfig(**{**FAST, "gateway_url": sim.url, "api_url": sim.api_url, "workers": 2, "fresh": True,
                           "state_file": str(tmp_path / "state.json")})
    sup = Supervisor(cfg, token=sim.token, handle_signals=False, shard_options={"connect_timeout": 1.0})
    task = asyncio.get_running_loop().create_task(sup.run())
    try:
        await until(lambda: sup.http_url is not None and sup.active_shards() == 16, what="bring-up")
        expect = playwright.expect
        async with watched_page(browser, sup.http_url) as page:
            answer = await page.goto(sup.http_url + "/?every=200")
            assert answer.ok and "script-src 'self'" in answer.headers["content-security-policy"]
            await expect(page.locator("#grid .tile")).to_have_count(16, timeout=EXPECT_MS)
            await expect(page.locator("#grid .tile.s-active")).to_have_count(16, timeout=EXPECT_MS)
            await expect(page.locator("#workers tbody tr")).to_have_count(2)
            pids = {str(w.pid) for w in sup.snapshot().workers}
            assert {await r.locator("td").nth(1).inner_text() for r in await page.locator("#workers tbody tr").all()
                    } == pids
            await expect(page.locator("#queue")).to_have_text("0")
            await expect(page.locator("#budget")).to_contain_text(" / 1000")
            await expect(page.locator('#legend [data-state="ACTIVE"]')).to_have_text("active 16")
            await expect(page.locator("#hosts-section")).to_be_hidden()  # no coordinator: one host
            await page.evaluate("window.sameDocument = true")
            await page.screenshot(path=str(RESULTS / "status-page-16-active.png"), full_page=True)

            sim.config.silent_handshake = True  # the shard's reconnects hang until the simulator answers again
            assert sim.close(5, 4000) == 1
            await expect(tile(page, 5)).not_to_have_class("tile s-active", timeout=EXPECT_MS)
            await expect(page.locator("#grid .tile.s-active")).to_have_count(15)
            await tile(page, 5).click()
            await expect(page.locator("#detail")).to_contain_text("shard 5 ·")
            await expect(page.locator("#detail")).not_to_contain_text("ACTIVE")
            await page.screenshot(path=str(RESULTS / "status-page-reconnecting.png"), full_page=True)

            sim.config.silent_handshake = False
            await expect(tile(page, 5)).to_have_class("tile s-active selected", timeout=EXPECT_MS)
            await expect(page.locator("#grid .tile.s-active")).to_have_count(16)
            await expect(page.locator("#detail")).to_contain_text("ACTIVE")
            assert await page.evaluate("window.sameDocument") is True  # redrawn in place, never reloaded
    finally:
        sim.config.silent_handshake = False
        sup.stop()
        await asyncio.wait_for(task, 30)


async def test_a_1024_shard_grid_with_three_hosts_stays_readable(browser):
    RESULTS.mkdir(parents=True, exist_ok=True)
    status = _synthetic_status(1024)
    status["shards"][1000]["state"] = "A_NEWER_WORKERS_STATE"
    answer = {"status": 200, "content_type": "application/json", "body": json.dumps(status)}
    server, url = await serve_http(_NoCluster(ClusterConfig(http_port=0)), "127.0.0.1", 0)
    try:
        async with watched_page(browser, url, width=1280, expected_error="503") as page:
            polled = asyncio.Event()

            async def fulfill(route):
                polled.set()
                await route.fulfill(**answer)

            await page.route(url + "/status", fulfill)
            await page.goto(url + "/?every=200")
            expect = playwright.expect
            await expect(page.locator("#grid .tile")).to_have_count(1024, timeout=EXPECT_MS)
            await expect(page.locator('#legend [data-state="UNKNOWN"]')).to_have_text("unknown 1")
            await expect(tile(page, 1000)).to_have_class("tile s-unknown")
            for state, count in _counts(status["shards"][:1000] + status["shards"][1001:]).items():
                await expect(page.locator(f'#legend [data-state="{state}"]')).to_have_text(
                    f"{state.lower().replace('_', ' ')} {count}")
                await expect(page.locator(f'#grid .tile[data-state="{state}"]')).to_have_count(count)
            await expect(page.locator("#hosts tbody tr")).to_have_count(3)
            await expect(page.locator("#hosts-section")).to_be_visible()
            await expect(page.locator("#hosts tbody tr").nth(1)).to_contain_text("342–682")
            await expect(page.locator("#summary")).to_contain_text("3 hosts: 900 / 1024 active")
            await expect(page.locator("#workers tbody tr")).to_have_count(16)
            await expect(page.locator("#queue")).to_have_text("37")
            await expect(page.locator("#budget")).to_have_text("812 / 1000 (reserve 50)")
            # Readable: every tile is a square of at least 10 px, the grid needs no sideways scrolling, and
            # the whole grid takes at most half a screen, leaving the hosts and workers in view.
            box = await tile(page, 1023).bounding_box()
            assert box["width"] >= 10 and box["height"] >= 10
            assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            grid = await page.locator("#grid").bounding_box()
            assert grid["height"] <= 900 / 2
            await tile(page, 700).hover()
            await expect(page.locator("#detail")).to_contain_text("shard 700 · FATALLY_CLOSED · worker 10")
            for _ in range(2):  # the hovered shard's details stay while the page redraws (it polls every 200 ms)
                polled.clear()
                await asyncio.wait_for(polled.wait(), EXPECT_MS / 1000)
            await expect(page.locator("#detail")).to_contain_text("shard 700 · FATALLY_CLOSED · worker 10")
            await page.screenshot(path=str(RESULTS / "status-page-1024.png"), full_page=True)
            await expect(page.locator("#fresh")).to_have_text("live")
            answer.update(status=503, content_type="text/plain", body="stopping")  # the supervisor goes away
            await expect(page.locator("#fresh")).to_contain_text("stale", timeout=EXPECT_MS)
            await expect(page.locator("#grid .tile")).to_have_count(1024)  # the last picture stays
            await expect(page.locator("#hosts tbody tr")).to_have_count(3)
    finally:
        server.close()


async def test_every_host_of_the_bot_is_shown_and_this_host_has_the_grid(sim, redis_server, tmp_path, browser):
    """Two hosts of one bot on one simulator: A (this process) runs shards 0-11, B (a CLI process) 12-15."""
    async with hosts_for(sim, redis_server, tmp_path) as machines:
        host_b = await machines.start("b", "--fresh", "--shard-range", "12-15")
        async with running(sim, None, tmp_path, workers=2, fresh=True, coordinator=redis_server.url,
                           shard_range="0-11") as (sup, _):
            await until(lambda: sup.active_shards() == 12 and len(sup.status().get("hosts", [])) == 2
                        and all(h["active"] for h in sup.status()["hosts"]), what="both hosts up")
            expect = playwright.expect
            async with watched_page(browser, sup.http_url) as page:
                await page.goto(sup.http_url + "/?every=200")
                await expect(page.locator("#grid .tile")).to_have_count(12, timeout=EXPECT_MS)
                await expect(page.locator("#hosts tbody tr")).to_have_count(2, timeout=EXPECT_MS)
                await expect(page.locator("#hosts-section")).to_be_visible()
                await expect(page.locator("#hosts tbody tr.this-host")).to_contain_text(sup.host.host_id)
                await expect(page.locator("#hosts tbody tr.this-host")).to_contain_text("0–11")
                other = page.locator("#hosts tbody tr:not(.this-host)")
                await expect(other).to_contain_text(host_b.id_prefix)
                await expect(other).to_contain_text("12–15")
                await expect(other).to_contain_text("active 4", timeout=EXPECT_MS)
                await expect(page.locator("#summary")).to_contain_text("12 / 12 shards active (of 16) · 2 hosts: "
                                                                       "16 / 16 active")
                await page.screenshot(path=str(RESULTS / "status-page-hosts.png"), full_page=True)
        code, err = await machines.stop("b")
        assert code == 0, err


class _NoCluster:
    """Serves the page only: the browser test answers /status itself."""

    def __init__(self, config):
        self.config = config

    def snapshot(self):
        raise AssertionError("/status is answered by the test")

    def rolling_restart(self):
        return False


def _get_with_headers(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return {k.lower(): v for k, v in r.headers.items()}, r.read()


STATES = ["ACTIVE", "RESUMING", "IDENTIFYING", "QUEUED", "DISCONNECTED", "FATALLY_CLOSED"]


def _synthetic_status(n):
    def state(i):
        return "FATALLY_CLOSED" if i == 700 else STATES[i % 97 % 6] if i % 97 < 6 else "ACTIVE"

    shards = [{"id": i, "worker": i // 64, "state": state(i), "latency": 0.04, "last_event_age": 0.5,
               "session": True, "resumes": i % 3} for i in range(n)]
    workers = [{"id": w, "pid": 4000 + w, "state": "running", "generation": 1, "shards": [w * 64, w * 64 + 63],
                "rss": 90 << 20, "ipc_rtt": 0.0004, "loop_lag": 0.002, "blocked": 0, "handler_errors": 0,
                "consumer_errors": 0, "restarts": w % 2} for w in range(n // 64)]
    budget = {"remaining": 812, "total": 1000, "reserve": 50, "reset_in": 50000.0}
    hosts = [{"host": f"h{k}", "hostname": f"bot-{k}", "pid": 100 + k, "http_url": None, "age": 0.4,
              "shard_total": n, "active": 300, "shards": [[lo, hi]], "states": {"ACTIVE": 300, "QUEUED": 41},
              "workers": 5, "identify_queue": 12, "session_budget": budget, "stopping": False}
             for k, (lo, hi) in enumerate([(0, 341), (342, 682), (683, n - 1)])]
    return {"shard_total": n, "active": sum(s["state"] == "ACTIVE" for s in shards), "max_concurrency": 16,
            "uptime": 3600.0, "rolling": False, "stopping": False, "identify_queue": 37, "session_budget": budget,
            "late_starts": 0, "coordinator_up": True, "identifies": {}, "workers": workers, "shards": shards,
            "hosts": hosts}


def _counts(shards):
    counts = {}
    for s in shards:
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    return counts

