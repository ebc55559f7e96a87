"""TLS end to end: a shard over wss:// to the simulator serving a certificate from a test CA."""

from __future__ import annotations

import ssl

import pytest
import trustme

from shard import ShardState
from sim import Simulator

from shard_helpers import Recorder, shard_stats


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, str]:
    ca = trustme.CA()
    pem = tmp_path_factory.mktemp("tls") / "server.pem"
    ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(pem))
    return ca, str(pem)


async def test_wss_with_a_custom_ssl_context_reaches_ready_and_resumes_over_tls(shards, tls_files) -> None:
    ca, pem = tls_files
    context = ssl.create_default_context()
    ca.configure_trust(context)
    async with Simulator(tls_cert=pem, heartbeat_interval=1000, identify_window=0.1) as sim:
        assert sim.url.startswith("wss://") and sim.resume_url.startswith("wss://")
        shard = shards(sim, ssl=context)
        rec = Recorder(shard)
        await rec.wait_for(lambda r: r.count("GUILD_CREATE") == 2)
        assert shard.state == ShardState.ACTIVE and shard.resume_url == sim.resume_url
        sim.reconnect(0)  # op 7: the resume goes to the wss:// resume URL
        await rec.wait_for(lambda r: r.count("RESUMED") == 1)
        snap = sim.stats.snapshot()
        assert shard_stats(snap)["identifies"] == 1 and shard_stats(snap)["resumes"] == 1
        assert snap["total"]["violations"] == 0
        await rec.stop()


async def test_an_untrusted_certificate_is_a_non_fatal_connect_error(shards, tls_files, caplog) -> None:
    _ca, pem = tls_files
    async with Simulator(tls_cert=pem, heartbeat_interval=1000) as sim:
        shard = shards(sim)  # the system trust store does not know the test CA
        rec = Recorder(shard)
        await rec.wait_for(lambda r: any("CERTIFICATE_VERIFY_FAILED" in str(e) for e in r.errors)
                           or "CERTIFICATE_VERIFY_FAILED" in caplog.text)
        assert not any(e.is_fatal() for e in rec.errors)
        assert sim.stats.snapshot()["total"]["identifies"] == 0
        await rec.stop()
