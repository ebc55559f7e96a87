"""deploy/ stays in step with the metrics the supervisor exports."""

import json
import re
from pathlib import Path

import tomllib

from cluster.config import load_config

DEPLOY = Path(__file__).parents[2] / "deploy"
EXPORTED = {
    "cluster_shard_state", "cluster_shard_latency_seconds", "cluster_shard_last_event_age_seconds",
    "cluster_gateway_events_total", "cluster_shard_reconnects_total", "cluster_shard_resumes_total",
    "cluster_identifies_total", "cluster_identify_queue_depth", "cluster_identify_wait_seconds_bucket",
    "cluster_session_start_remaining", "cluster_session_start_reset_seconds", "cluster_worker_restarts_total",
    "cluster_ipc_rtt_seconds", "cluster_worker_rss_bytes", "cluster_worker_loop_lag_seconds",
    "cluster_handler_blocked_total", "cluster_handler_errors_total", "cluster_worker_up",
    "cluster_supervisor_errors_total", "cluster_supervisor_loop_lag_seconds",
}


def metric_names(text):
    return set(re.findall(r"\bcluster_[a-z_]+", text))


def test_dashboard_and_alerts_use_only_exported_metrics():
    dash = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = " ".join(t["expr"] for p in dash["panels"] for t in p["targets"])
    used = metric_names(exprs) | metric_names((DEPLOY / "shardstack-alerts.yml").read_text())
    assert used <= EXPORTED, used - EXPORTED
    assert len(metric_names(exprs)) >= 12


def test_example_config_loads():
    assert tomllib.loads((DEPLOY / "cluster.example.toml").read_text())
    cfg = load_config({}, {}, str(DEPLOY / "cluster.example.toml"))
    assert cfg.handler == "mybot:Handler" and cfg.shards_per_worker == 16
    assert cfg.http_token is None and cfg.http_max_connections == 64  # the token comes from a file or the env


def test_docker_image_binding_all_addresses_says_what_protects_it():
    text = (DEPLOY / "Dockerfile").read_text()
    assert "CLUSTER_HTTP_HOST=0.0.0.0" in text and "-p 127.0.0.1:9100:9100" in text
    assert "POST /restart" in text and "CLUSTER_HTTP_TOKEN_FILE" in text


def test_systemd_unit_does_not_restart_on_permanent_errors():
    unit = (DEPLOY / "shardstack-cluster.service").read_text()
    assert "RestartPreventExitStatus=2 3 4 5 6 7 8 9" in unit and "KillMode=mixed" in unit
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
