import pytest

from cluster.config import ClusterConfig, ConfigError, load_config


def test_precedence_flags_over_env_over_file(tmp_path):
    f = tmp_path / "cluster.toml"
    f.write_text('[cluster]\nworkers = 2\nshards = 8\nhandler = "bot:Handler"\nhttp-port = 9200\n')
    cfg = load_config({"workers": 4, "shards": None}, {"CLUSTER_SHARDS": "16", "OTHER": "x"}, str(f))
    assert (cfg.workers, cfg.shards, cfg.handler, cfg.http_port) == (4, 16, "bot:Handler", 9200)
    assert load_config({}, {}, None) == ClusterConfig()


def test_env_values_are_parsed_and_none_words_mean_default():
    cfg = load_config({}, {"CLUSTER_FRESH": "true", "CLUSTER_IDENTIFY_WINDOW": "1.5",
                           "CLUSTER_HTTP_PORT": "none"})
    assert cfg.fresh is True and cfg.identify_window == 1.5 and cfg.http_port is None


@pytest.mark.parametrize("flags,env,text,match", [
    ({}, {"CLUSTER_WORKERS": "four"}, None, r"invalid workers = 'four' \(from environment\)"),
    ({}, {"CLUSTER_WORKER": "4"}, None, r"unknown setting 'worker'.*did you mean 'workers'"),
    ({}, {}, "shard = 3\n", r"unknown setting 'shard' in config file.*'shards'"),
    ({}, {}, "shards = [\n", r"not valid TOML"),
    ({"workers": 2, "shards_per_worker": 4}, {}, None, "not both"),
    ({"workers": 0}, {}, None, "workers must be >= 1"),
    ({"handler": "nocolon"}, {}, None, "module:attribute"),
    ({"compression": "gzip"}, {}, None, "compression must be"),
    ({"state_save_interval": -1.0}, {}, None, "state_save_interval must be >= 0"),
])
def test_clear_errors(tmp_path, flags, env, text, match):
    file = None
    if text is not None:
        file = tmp_path / "c.toml"
        file.write_text(text)
        file = str(file)
    with pytest.raises(ConfigError, match=match):
        load_config(flags, env, file)


def test_missing_file_and_token():
    with pytest.raises(ConfigError, match="config file not found"):
        load_config({}, {}, "/nonexistent/cluster.toml")
    cfg = load_config({"token_env": "MY_TOKEN"}, {})
    with pytest.raises(ConfigError, match="set the MY_TOKEN environment variable"):
        cfg.token({})
    assert cfg.token({"MY_TOKEN": " abc "}) == "abc"


def test_every_setting_has_help_text_in_the_cli():
    import subprocess
    import sys

    from cluster.config import HELP, ClusterConfig

    assert set(HELP) == set(ClusterConfig.__struct_fields__)
    out = subprocess.run([sys.executable, "-m", "cluster", "run", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for name in ClusterConfig.__struct_fields__:
        assert "--" + name.replace("_", "-") in out
    assert "safety margin" in out and "module:attribute" in out


def test_identify_hold_must_outlast_the_shards_connect_timeout():
    from cluster import Supervisor

    with pytest.raises(ConfigError, match=r"identify_hold_timeout .* must exceed the shards' connect_timeout"):
        Supervisor(ClusterConfig(identify_hold_timeout=10.0), token="x")
    with pytest.raises(ConfigError, match=r"\(5 s\) must exceed the shards' connect_timeout \(6 s\)"):
        Supervisor(ClusterConfig(identify_hold_timeout=5.0), token="x", shard_options={"connect_timeout": 6.0})
    Supervisor(ClusterConfig(identify_hold_timeout=5.0), token="x", shard_options={"connect_timeout": 4.0})
