"""deploy/k8s/ and deploy/compose.yaml: valid manifests that run one bot on several hosts.

The Kubernetes manifests are validated against the API's schemas in strict mode (an unknown or
misspelt field fails), then checked for what a schema cannot see: the pieces select the same pods,
the probes reach the supervisor's HTTP port, the host index and count agree with the replicas, the
token comes from a Secret, and the kubelet waits long enough for the sessions to be saved. Every
setting the files use must exist in cluster/config.py (or be one of PENDING_OPTIONS). compose.yaml
is checked as YAML, not with `docker compose config`: CI machines have the docker client but no engine
nor compose plugin, and a skip fails CI.
"""

import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import kubernetes_validate
import pytest
import yaml

from cluster.config import ENV_PREFIX, FIELDS, ClusterConfig, load_config
from sim.__main__ import build_parser as sim_parser

DEPLOY = Path(__file__).parents[2] / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.35"  # a recent Kubernetes; the schemas come with the kubernetes-validate package
DISCORD_HEARTBEAT = 41.25  # seconds: Hello's heartbeat_interval from Discord
SAVE_MARGIN = 5  # seconds past the workers' shutdown timeout for the supervisor to save the sessions

# Settings of the multi-host work (issue 8) that cluster/config.py does not have yet. The
# multi-host branch removes them from here as it adds them (test_pending_options_are_still_pending
# says when); every other setting used in deploy/ must exist today.
PENDING_OPTIONS: set[str] = set()
SETTINGS = {ENV_PREFIX + name.upper() for name in FIELDS}
DISCORD_TOKEN_RE = re.compile(r"[\w-]{23,28}\.[\w-]{6}\.[\w-]{27,}")


def load_all(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def manifests():
    return {doc["kind"]: doc for path in sorted(K8S.glob("*.yaml")) for doc in load_all(path)}


@pytest.fixture(scope="module")
def k8s():
    return manifests()


@pytest.fixture(scope="module")
def pod(k8s):
    return k8s["StatefulSet"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod):
    (c,) = pod["spec"]["containers"]
    return c


@pytest.fixture(scope="module")
def compose():
    (doc,) = load_all(DEPLOY / "compose.yaml")
    return doc


def env_of(container):
    """The container's plain variables, by name; a variable from a Secret or ConfigMap key maps to its valueFrom."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def container_port(container, port):
    """The containerPort a probe's or Service's port (a name or a number) means."""
    for p in container["ports"]:
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    raise AssertionError(f"port {port!r} is not one of the container's ports {container['ports']}")


def compose_hosts(compose):
    """The cluster hosts of compose.yaml (services with a coordinator), by service name."""
    return {name: svc for name, svc in compose["services"].items()
            if "CLUSTER_COORDINATOR" in svc.get("environment", {})}


def assert_auto_assignment(settings, where):
    """The hosts share the shards through leases (issue 9): no static range, blocks for every host, and a lease
    TTL under Discord's heartbeat interval, so that a dead host's sessions are still resumable at the takeover."""
    cfg = load_config({}, {k: v for k, v in settings.items() if k.startswith(ENV_PREFIX)})
    assert cfg.assign == "auto", where
    assert not {"CLUSTER_HOST_INDEX", "CLUSTER_HOST_COUNT", "CLUSTER_SHARD_RANGE"} & set(settings), where
    assert cfg.shards and cfg.shards_per_worker and cfg.shards % cfg.shards_per_worker == 0, where  # equal blocks
    assert cfg.lease_ttl <= DISCORD_HEARTBEAT / 2, where
    return cfg


def dockerfile_env():
    return dict(re.findall(r"\b(CLUSTER_[A-Z_]+)=(\S+)", (DEPLOY / "Dockerfile").read_text()))


def shutdown_timeout(settings):
    return float(settings.get("CLUSTER_SHUTDOWN_TIMEOUT", ClusterConfig().shutdown_timeout))


def time_to_stop(settings):
    """Seconds a stop must allow before SIGKILL: the workers drain within the shutdown timeout, one that has not
    drained gets as long again to exit before it is killed (cluster/workers.py, drain), then the supervisor saves."""
    return 2 * shutdown_timeout(settings) + SAVE_MARGIN


def seconds(duration):
    """A compose duration ("30s", "1m30s") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    assert parts and duration, f"not a duration of minutes and seconds: {duration!r}"
    return int(parts[1] or 0) * 60 + int(parts[2] or 0)


def check_settings(settings, where):
    """Every CLUSTER_* name is a setting (or pending), and the existing ones load together."""
    unknown = {name for name in settings if name.startswith(ENV_PREFIX)} - SETTINGS - PENDING_OPTIONS
    assert not unknown, f"{where} uses settings that cluster/config.py does not have: {sorted(unknown)}"
    others = {name for name in settings if not name.startswith(ENV_PREFIX)}
    assert others <= {ClusterConfig().token_env}, f"{where} sets unexpected variables {sorted(others)}"
    load_config({}, {k: v for k, v in settings.items() if k.startswith(ENV_PREFIX) and k not in PENDING_OPTIONS})


# ---- Kubernetes --------------------------------------------------------------------------------


def test_every_manifest_parses_and_validates_strictly():
    kinds = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in load_all(path):
            kinds.append(doc["kind"])
            if doc["kind"] != "Kustomization":  # kustomize's own file, not an API object
                kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    assert sorted(kinds) == sorted(["ConfigMap", "Kustomization", "PodDisruptionBudget", "Secret",
                                    "Service", "StatefulSet"])


def test_strict_validation_rejects_an_unknown_field(k8s):
    sts = yaml.safe_load(yaml.safe_dump(k8s["StatefulSet"]))
    sts["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"httpGet": {"path": "/readyz", "port": 9100}}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(sts, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_secret_example(k8s):
    listed = set(k8s["Kustomization"]["resources"])
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == {name for name in files if not name.endswith(".example.yaml")}
    assert "secret.example.yaml" in files  # shipped as an example, applied only with real values


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_manifests_with_the_image_set(k8s):
    out = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=True)
    rendered = {doc["kind"]: doc for doc in yaml.safe_load_all(out.stdout)}
    assert set(rendered) == {"ConfigMap", "Service", "StatefulSet", "PodDisruptionBudget"}
    (image,) = k8s["Kustomization"]["images"]
    (c,) = rendered["StatefulSet"]["spec"]["template"]["spec"]["containers"]
    assert c["image"] == f"{image['newName']}:{image['newTag']}"


def test_statefulset_service_and_pdb_select_the_same_pods(k8s, pod):
    sts, svc, pdb = k8s["StatefulSet"], k8s["Service"], k8s["PodDisruptionBudget"]
    labels = pod["metadata"]["labels"]
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"  # headless: one DNS name per pod
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    selector = sts["spec"]["selector"]["matchLabels"]
    assert selector and selector.items() <= labels.items()
    assert svc["spec"]["selector"] == selector
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"]["maxUnavailable"] == 1
    spread = pod["spec"]["topologySpreadConstraints"][0]["labelSelector"]["matchLabels"]
    assert spread == selector


def test_probes_service_and_scrape_reach_the_http_port(k8s, pod, container):
    env = env_of(container)
    assert env["CLUSTER_HTTP_HOST"] == "0.0.0.0"  # the kubelet and Prometheus come from outside the pod
    port = int(env["CLUSTER_HTTP_PORT"])
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["readinessProbe"]["path"] == "/readyz"
    assert probes["livenessProbe"]["path"] == "/healthz" and probes["startupProbe"]["path"] == "/healthz"
    for kind, probe in probes.items():
        assert container_port(container, probe["port"]) == port, kind
    (svc_port,) = k8s["Service"]["spec"]["ports"]
    assert container_port(container, svc_port["targetPort"]) == port
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and int(notes["prometheus.io/port"]) == port
    assert notes["prometheus.io/path"] == "/metrics"


def test_pods_share_the_shards_through_leases(k8s, pod, container):
    """`kubectl scale` alone is safe: no pod has a fixed range, every replica gets blocks."""
    settings = {**dockerfile_env(), **k8s["ConfigMap"]["data"],
                **{k: v for k, v in env_of(container).items() if isinstance(v, str)}, "CLUSTER_COORDINATOR": "redis://r"}
    cfg = assert_auto_assignment(settings, "deploy/k8s")
    assert cfg.shards // cfg.shards_per_worker >= k8s["StatefulSet"]["spec"]["replicas"]
    # a pod killed at the end of its grace period, mid-handoff, leaves its other blocks dark for one lease TTL:
    # the grace period covers a whole handoff and more than a TTL of renewals
    assert pod["spec"]["terminationGracePeriodSeconds"] > cfg.lease_ttl
    assert "kubectl scale" in (K8S / "statefulset.yaml").read_text()  # says scaling alone is fine now


def test_token_and_coordinator_come_from_the_secret(k8s, container):
    env = env_of(container)
    token_env = container["args"][container["args"].index("--token-env") + 1]
    assert token_env == ClusterConfig().token_env
    secret = k8s["Secret"]
    for name in (token_env, "CLUSTER_COORDINATOR"):
        ref = env[name]["secretKeyRef"]  # never a literal value, nor a ConfigMap key (a Redis URL may hold a password)
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], name
    url = urlsplit(secret["stringData"][env["CLUSTER_COORDINATOR"]["secretKeyRef"]["key"]])
    assert url.scheme in ("redis", "rediss") and url.hostname
    assert not DISCORD_TOKEN_RE.search(yaml.safe_dump(secret)), "the example Secret must hold placeholders"
    assert "CLUSTER_COORDINATOR" not in k8s["ConfigMap"]["data"]


def test_pod_has_time_to_save_its_sessions(k8s, pod, container):
    settings = {**dockerfile_env(), **k8s["ConfigMap"]["data"], **env_of(container)}
    assert pod["spec"]["terminationGracePeriodSeconds"] >= time_to_stop(settings)


def test_pod_runs_unprivileged_on_a_read_only_root(pod, container):
    spec, sec = pod["spec"], container["securityContext"]
    assert spec["securityContext"]["runAsNonRoot"] is True and sec["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sec["readOnlyRootFilesystem"] is True and sec["allowPrivilegeEscalation"] is False
    assert sec["capabilities"]["drop"] == ["ALL"]
    uid = re.search(r"^USER (\d+)", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert uid and spec["securityContext"]["runAsUser"] == int(uid[1])  # runAsNonRoot needs a numeric user
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
    state_dir = str(Path(env_of(container)["CLUSTER_STATE_FILE"]).parent)
    for path in (state_dir, "/tmp"):  # the state file (written beside it, then renamed) and temporary files
        assert "emptyDir" in mounts[path], path
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False  # a Service named "cluster" would inject CLUSTER_PORT
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]


def test_manifest_settings_exist(k8s, container):
    settings = {**dockerfile_env(), **k8s["ConfigMap"]["data"],
                **{k: v for k, v in env_of(container).items() if isinstance(v, str)}}
    from_secrets = {"CLUSTER_COORDINATOR": "redis://redis.example:6379/0"}  # a value of the right shape
    settings.update({k: from_secrets.get(k, "placeholder") for k, v in env_of(container).items()
                     if not isinstance(v, str)})
    check_settings(settings, "deploy/k8s")


def test_pending_options_are_still_pending():
    done = PENDING_OPTIONS & SETTINGS
    assert not done, f"cluster/config.py has {sorted(done)} now: remove them from PENDING_OPTIONS"


def test_a_misspelt_setting_is_caught():
    with pytest.raises(AssertionError, match="CLUSTER_HOST_INDX"):
        check_settings({"CLUSTER_HOST_INDX": "auto"}, "a test")


# ---- compose -----------------------------------------------------------------------------------


def test_compose_runs_three_hosts_of_one_bot(compose):
    hosts = compose_hosts(compose)
    envs = [svc["environment"] for svc in hosts.values()]
    assert len(hosts) == 3
    for name, env in zip(hosts, envs, strict=True):
        cfg = assert_auto_assignment({**dockerfile_env(), **env}, f"compose service {name}")
        assert cfg.shards // cfg.shards_per_worker >= len(hosts)
    assert len({env["CLUSTER_COORDINATOR"] for env in envs}) == 1
    assert len({env["CLUSTER_CLUSTER_NAME"] for env in envs}) == 1
    redis_url = urlsplit(envs[0]["CLUSTER_COORDINATOR"])
    assert redis_url.scheme == "redis" and redis_url.port == 6379
    assert compose["services"][redis_url.hostname]["image"].startswith("redis:")
    for name, svc in hosts.items():
        assert {redis_url.hostname, "sim"} <= set(svc["depends_on"]), name
        check_settings(svc["environment"], f"compose service {name}")


def test_compose_hosts_point_at_the_simulator_with_its_numbers(compose):
    simulator = compose["services"]["sim"]
    assert simulator["entrypoint"] == ["python", "-m", "sim"]
    args = sim_parser().parse_args(simulator["command"])
    assert args.host == "sim"  # the URLs it hands out (READY's resume_gateway_url) must reach it from the hosts
    for name, svc in compose_hosts(compose).items():
        env = svc["environment"]
        assert env["DISCORD_TOKEN"] == args.token, name
        assert int(env["CLUSTER_SHARDS"]) == args.shards and int(env["CLUSTER_MAX_CONCURRENCY"]) == args.max_concurrency
        assert float(env["CLUSTER_IDENTIFY_WINDOW"]) == args.identify_window
        for key, scheme, path in (("CLUSTER_API_URL", "http", "/api/v10"), ("CLUSTER_GATEWAY_URL", "ws", "/")):
            url = urlsplit(env[key])
            assert (url.scheme, url.hostname, url.port, url.path) == (scheme, "sim", args.port, path), (name, key)


def test_prometheus_scrapes_every_host(compose):
    prom = compose["services"]["prometheus"]
    mounts = dict(v.split(":")[:2] for v in prom["volumes"])
    assert mounts["./prometheus-compose.yml"] == "/etc/prometheus/prometheus.yml"
    (config,) = load_all(DEPLOY / "prometheus-compose.yml")
    (job,) = config["scrape_configs"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    port = dockerfile_env()["CLUSTER_HTTP_PORT"]
    expected = {f"{name}:{svc['environment'].get('CLUSTER_HTTP_PORT', port)}"
                for name, svc in compose_hosts(compose).items()}
    assert len(expected) == 3 and targets == expected
    for rules in config["rule_files"]:
        assert mounts[f"./{rules}"] == f"/etc/prometheus/{rules}" and (DEPLOY / rules).is_file()


def test_grafana_is_provisioned_with_the_dashboard(compose):
    mounts = dict(v.split(":")[:2] for v in compose["services"]["grafana"]["volumes"])
    provisioning = Path(next(src for src, dst in mounts.items() if dst == "/etc/grafana/provisioning"))
    (datasources,) = load_all(DEPLOY / provisioning / "datasources" / "prometheus.yml")
    (source,) = datasources["datasources"]
    url = urlsplit(source["url"])
    assert source["type"] == "prometheus" and source["isDefault"] is True
    assert url.hostname == "prometheus" and url.hostname in compose["services"] and url.port == 9090
    (dashboards,) = load_all(DEPLOY / provisioning / "dashboards" / "shardstack.yml")
    folders = {p["options"]["path"] for p in dashboards["providers"]}
    assert str(Path(mounts["./grafana-dashboard.json"]).parent) in folders


def test_image_installs_the_redis_extra():
    text = (DEPLOY / "Dockerfile").read_text()
    assert 'p["optional-dependencies"]["redis"]' in text  # run on pyproject.toml by test_cluster_deploy.py


def test_compose_hosts_have_time_to_save_their_sessions(compose):
    for name, svc in compose_hosts(compose).items():
        assert seconds(svc["stop_grace_period"]) >= time_to_stop({**dockerfile_env(), **svc["environment"]}), name


def test_image_sets_its_shutdown_timeout_and_documents_a_long_enough_stop_timeout():
    env = dockerfile_env()
    assert "CLUSTER_SHUTDOWN_TIMEOUT" in env  # the image's own, not whatever the default becomes
    (documented,) = set(re.findall(r"docker run --stop-timeout (\d+)", (DEPLOY / "Dockerfile").read_text()))
    assert int(documented) >= time_to_stop(env)
