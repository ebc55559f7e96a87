"""``shardstack``: the project's command (the console script; ``python -m cluster`` and ``python -m sim`` keep working).

    shardstack run --token-env DISCORD_TOKEN --handler mybot:Handler   # run a cluster (python -m cluster run)
    shardstack status | restart --rolling | reshard [--shards N]       # a running cluster (python -m cluster ...)
    shardstack healthcheck                                             # exit 0 if /healthz answers 200, else 1
    shardstack sim --port 8765                                         # the simulator (python -m sim)
    shardstack demo                                                    # simulator + cluster (python -m cluster.demo)
    shardstack --version

Each command hands the rest of the line to the module it names, so their ``--help`` and exit codes are theirs.
``healthcheck`` is the container image's HEALTHCHECK: it finds the endpoint the way ``run`` does (``--config``,
``CLUSTER_HTTP_HOST``/``CLUSTER_HTTP_PORT``), asks a wildcard bind address on loopback, and only ever exits 0
(healthy) or 1 (unhealthy), since Docker reserves 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence

from cluster import __version__

__all__ = ["main"]

WILDCARDS = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - mapped to loopback, not bound


def _cluster_cli(argv: list[str]) -> int:
    from cluster.cli import main as cli_main  # noqa: PLC0415 - each command imports only what it runs

    return cli_main(argv)


def _sim(argv: list[str]) -> int:
    from sim.__main__ import main as sim_main  # noqa: PLC0415

    return sim_main(argv[1:])


def _demo(argv: list[str]) -> int:
    from cluster.demo import main as demo_main  # noqa: PLC0415

    return demo_main(argv[1:])


def healthcheck_url(url: str | None, config: str | None) -> str:
    """The /healthz URL: ``url`` if given, else the supervisor's configured HTTP address (a wildcard on loopback)."""
    from cluster.config import load_config  # noqa: PLC0415

    if url:
        return url.rstrip("/") + "/healthz"
    cfg = load_config({}, os.environ, config)
    if cfg.http_port is None:
        raise ValueError("the supervisor's HTTP endpoint is disabled (http_port is none): nothing to check")
    host = WILDCARDS.get(cfg.http_host, cfg.http_host)
    return f"http://{f'[{host}]' if ':' in host else host}:{cfg.http_port}/healthz"


def _healthcheck(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="shardstack healthcheck", description="Exit 0 if the supervisor's /healthz "
                                "answers 200, else print why and exit 1.")
    p.add_argument("--url", help="the supervisor's HTTP address (default: from --config and the CLUSTER_* environment)")
    p.add_argument("--config", metavar="FILE", help="the TOML config file the supervisor runs with")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    args = p.parse_args(argv[1:])
    try:
        target = healthcheck_url(args.url, args.config)
    except ValueError as exc:  # ConfigError too
        print(f"shardstack healthcheck: {exc}", file=sys.stderr)
        return 1
    try:
        with urllib.request.urlopen(target, timeout=args.timeout) as resp:  # noqa: S310 - an http URL we built
            return 0 if resp.status == 200 else 1
    except urllib.error.HTTPError as exc:
        print(f"shardstack healthcheck: {target} answered {exc.code}: {exc.read().decode(errors='replace').strip()}",
              file=sys.stderr)
    except (urllib.error.URLError, OSError) as exc:
        print(f"shardstack healthcheck: cannot reach {target}: {exc}", file=sys.stderr)
    return 1


COMMANDS: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (_cluster_cli, "run the supervisor and its workers"),
    "status": (_cluster_cli, "print a running cluster's workers and shards"),
    "restart": (_cluster_cli, "restart a running cluster's workers one by one, resuming every session"),
    "reshard": (_cluster_cli, "grow a running cluster's shard count live, without losing or repeating an event"),
    "healthcheck": (_healthcheck, "exit 0 if the supervisor's /healthz answers 200, else 1"),
    "sim": (_sim, "run the local Discord simulator"),
    "demo": (_demo, "run the simulator and a cluster against it, with a live status line"),
}


def _usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return ("usage: shardstack {" + ",".join(COMMANDS) + "} ... | --version\n\n"
            "A Discord gateway sharding stack. `shardstack COMMAND --help` shows a command's options.\n\n"
            "commands:\n" + "\n".join(lines) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """The ``shardstack`` console script: dispatch ``argv`` (default ``sys.argv[1:]``) to its command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(_usage(), end="")
        return 0
    if args[:1] in (["-V"], ["--version"]):
        print(f"shardstack {__version__}")
        return 0
    if not args or args[0] not in COMMANDS:
        problem = f"unknown command {args[0]!r}" if args else "a command is required"
        print(f"{_usage()}\nshardstack: error: {problem}", file=sys.stderr)
        return 2
    run, _ = COMMANDS[args[0]]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
