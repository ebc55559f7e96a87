"""Bad input to ``python -m cluster`` and ``python -m cluster.demo``: one line on stderr and a documented exit code,
never a traceback; none, compression and http_port read alike from flags, the environment and the TOML file."""

import asyncio
import os
import socket
import sys
from pathlib import Path

import pytest

from cluster import ExitCode
from cluster.config import ClusterConfig, ConfigError, load_config
from cluster.state import token_user_id

HERE = Path(__file__).parent


@pytest.fixture
def sim_options():
    return dict(shards=2, max_concurrency=2, identify_window=1.0, events_per_second=1.0)


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTER_") and k != "DISCORD_TOKEN"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])])
    return {**env, **extra}


async def _cli(*args, env=None, module="cluster", timeout=60):
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", module, *args, env=env or _env(),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


def _one_line(err):
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def _sim_flags(sim, tmp_path, *more):
    return ("run", "--gateway-url", sim.url, "--api-url", sim.api_url, "--handler", "cluster.example:ExampleHandler",
            "--workers", "1", "--state-file", str(tmp_path / "s.json"), "--log-level", "WARNING", *more)


async def test_http_port_in_use_is_one_line_and_exit_2(sim, tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await _cli(*_sim_flags(sim, tmp_path, "--http-port", str(port)),
                                  env=_env(DISCORD_TOKEN=sim.token))
    line = _one_line(err)
    assert code == ExitCode.CONFIG and f"127.0.0.1:{port}" in line and "in use" in line
    assert sim.stats.snapshot()["total"]["identifies"] == 0


@pytest.mark.parametrize("args, expected, words", [
    (("--config", "{tmp}"), ExitCode.CONFIG, "is a directory"),
    (("--log-level", "LOUD"), ExitCode.CONFIG, "log_level must be one of"),
    (("--api-url", "not-a-url"), ExitCode.CONFIG, "invalid api_url"),
    (("--http-port", "abc"), ExitCode.CONFIG, "invalid int value"),
])
async def test_bad_run_input_is_one_line(tmp_path, args, expected, words):
    args = tuple(a.format(tmp=tmp_path) for a in args)
    code, _, err = await _cli("run", "--handler", "cluster.example:ExampleHandler", "--http-port", "0",
                              "--state-file", str(tmp_path / "s.json"), "--log-level", "WARNING", *args,
                              env=_env(DISCORD_TOKEN="x"))
    line = _one_line(err) if "invalid int" not in words else err.strip().splitlines()[-1]  # argparse: usage + error
    assert code == expected and words in line
    assert "Traceback" not in err


async def test_restart_of_a_missing_pid_is_one_line_and_exit_1():
    gone = await asyncio.create_subprocess_exec(sys.executable, "-c", "")
    await gone.wait()  # reaped: its pid names no process
    code, _, err = await _cli("restart", "--rolling", "--pid", str(gone.pid))
    assert code == ExitCode.ERROR and f"no process {gone.pid}" in _one_line(err)


@pytest.mark.parametrize("token, expected, words", [
    ("", ExitCode.CONFIG, "no bot token: set the DISCORD_TOKEN"),
    ("MTIzNDU2Nzg5MDEyMzQ1Njc4.wrong.token", ExitCode.AUTHENTICATION_FAILED, "authentication failed"),
])
async def test_token_errors_print_their_message_once(sim, tmp_path, token, expected, words):
    """At the default log level (INFO): the message comes once, in the final line with its exit code."""
    code, _, err = await _cli(*_sim_flags(sim, tmp_path, "--http-port", "0", "--log-level", "INFO"),
                              env=_env(DISCORD_TOKEN=token))
    assert code == expected and err.count(words) == 1, err
    assert "Traceback" not in err and (not token or token not in err)


async def test_api_unreachable_exits_1_with_one_line(tmp_path):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, not listening: refused
        code, _, err = await _cli("run", "--handler", "cluster.example:ExampleHandler", "--http-port", "0",
                                  "--api-url", f"http://127.0.0.1:{port}/api/v10", "--log-level", "WARNING",
                                  "--state-file", str(tmp_path / "s.json"), env=_env(DISCORD_TOKEN="x.y.z"))
    assert code == ExitCode.ERROR and "GET /gateway/bot failed" in _one_line(err)


@pytest.fixture
def slow_setup_args(sim, tmp_path):
    return ("run", "--gateway-url", sim.url, "--api-url", sim.api_url,
            "--handler", "cluster_cli_handlers:SetupFailsSlowExit", "--workers", "1", "--http-port", "none",
            "--state-file", str(tmp_path / "s.json"), "--shutdown-timeout", "5")


async def test_setup_failure_is_logged_once_and_exits_without_a_drain_timeout(sim, slow_setup_args):
    code, _, err = await _cli(*slow_setup_args, env=_env(DISCORD_TOKEN=sim.token))
    assert code == ExitCode.HANDLER_SETUP
    assert err.count("handler setup failed: RuntimeError: database unreachable") == 1, err
    assert "did not drain" not in err and "killing it" not in err, err
    assert "in 1 worker;" in err  # not "1 workers"


# --- the same values in flags, the environment and the file ---------------------------------------------------


@pytest.mark.parametrize("key, text, value", [
    ("compression", "none", None), ("compression", "zstd-stream", "zstd-stream"),
    ("http_port", "none", None), ("http_port", "0", 0), ("shards", "auto", None),
])
def test_flags_env_and_toml_read_the_same_values(tmp_path, key, text, value):
    from cluster.cli import _parser

    args = _parser().parse_args(["run", "--" + key.replace("_", "-"), text])
    from_flags = load_config({k: getattr(args, k) for k in ClusterConfig.__struct_fields__}, env={})
    from_env = load_config(env={"CLUSTER_" + key.upper(): text})
    toml = tmp_path / "c.toml"
    toml.write_text(f'{key} = "{text}"\n')
    from_file = load_config(env={}, file=str(toml))
    assert getattr(from_flags, key) == getattr(from_env, key) == getattr(from_file, key) == value


def test_a_none_word_is_still_refused_where_none_is_not_allowed(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('intents = "none"\n')
    with pytest.raises(ConfigError, match="intents"):
        load_config(env={}, file=str(toml))


async def test_cli_accepts_none_for_compression_and_http_port(tmp_path):
    """Both accepted: the run gets as far as importing the handler (exit 3), past the configuration (exit 2)."""
    code, _, err = await _cli("run", "--compression", "none", "--http-port", "none", "--handler", "no_such_mod_q:H",
                              "--log-level", "WARNING", "--state-file", str(tmp_path / "s.json"),
                              env=_env(DISCORD_TOKEN="x"))
    assert code == ExitCode.HANDLER_IMPORT and "no_such_mod_q" in _one_line(err)


def test_run_help_shows_the_defaults():
    from cluster.cli import _parser

    sub = _parser()._subparsers._group_actions[0].choices["run"]
    text = " ".join(sub.format_help().split())
    for shown in ("(default: DISCORD_TOKEN)", "none disables) (default: 9100)", "(default: 5.0)",
                  "$XDG_STATE_HOME/shardstack/"):
        assert shown in text, shown


# --- the state file's default, and no temporary directories left behind ----------------------------------------


def test_the_default_state_file_is_per_user_and_named_after_the_bot(tmp_path):
    token = "MTIzNDU2Nzg5MDEyMzQ1Njc4.x.y"
    cfg = ClusterConfig()
    assert cfg.state_file is None
    path = cfg.state_path(token, env={"XDG_STATE_HOME": str(tmp_path)})
    assert path == str(tmp_path / "shardstack" / f"bot-{token_user_id(token)}.json")
    named = ClusterConfig(cluster_name="mybot").state_path(token, env={"HOME": "/h"})
    assert named.endswith(os.path.join(".local", "state", "shardstack", "mybot.json"))
    assert ClusterConfig(state_file="x.json").state_path(token) == "x.json"


async def test_a_run_without_state_file_saves_under_xdg_state_home(sim, tmp_path, monkeypatch):
    from cluster_testing import running, until

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    async with running(sim, None, tmp_path, workers=1, state_file=None) as (sup, _):
        await until(lambda: sup.snapshot().active == 2, what="both shards active")
    expected = tmp_path / "state" / "shardstack" / f"bot-{token_user_id(sim.token)}.json"
    assert expected.exists() and not (tmp_path / "state.json").exists()


async def test_the_demo_leaves_no_temporary_directory(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code, out, err = await _cli("--duration", "3", "--shards", "2", "--workers", "1", "--http-port", "0",
                                module="cluster.demo", env=_env(TMPDIR=str(tmp)))
    assert code == 0 and "stopped:" in out, err
    assert [p.name for p in tmp.iterdir() if p.name.startswith("cluster-demo-")] == []


async def test_the_demo_takes_a_free_port_when_its_port_is_taken(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await _cli("--duration", "2", "--shards", "2", "--workers", "1", "--http-port", str(port),
                                    module="cluster.demo", env=_env(TMPDIR=str(tmp_path)))
    assert code == 0 and f"port {port} is in use" in out and "Traceback" not in err, err
