"""``python -m cluster``: run a cluster, show its status, restart it.

    python -m cluster run --token-env DISCORD_TOKEN --handler mybot:Handler --workers 4
    python -m cluster status [--url http://127.0.0.1:9100 | --coordinator redis://host:6379/0]
    python -m cluster restart --rolling [--url ... | --pid PID]
    python -m cluster reshard [--shards N] [--url ...]

``reshard`` exits 0 once the cluster runs the new shard count, 1 if the supervisor cannot be reached or refuses the
token, 2 for a config error, 10 if the reshard was refused (the reason is printed: the budget, one already
running, a count that does not grow the cluster, a coordinator), 11 if it rolled back, 12 if ``--timeout`` passed
first (the reshard goes on).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
import typing
import urllib.error
import urllib.request
from typing import Any

import msgspec

from cluster.config import ENV_PREFIX, HELP, NONE_WORDS, NULLABLE, ClusterConfig, ConfigError, load_config
from cluster.exitcodes import ExitCode

__all__ = ["RESHARD_EXIT", "main"]

RESHARD_EXIT = {"done": 0, "unreachable": 1, "config": 2, "refused": 10, "rolled_back": 11, "timeout": 12}
"""The exit codes of ``cluster reshard``."""


def _field_type(annotation: Any) -> type:
    args = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return args[0] if isinstance(args[0], type) else str


def _or_none(kind: type) -> Any:
    """``kind``, or the word itself for a setting that takes None (none, null, auto: load_config reads it)."""
    def parse(text: str) -> Any:
        return text if text.strip().lower() in NONE_WORDS else kind(text)

    parse.__name__ = kind.__name__  # argparse's "invalid int value"
    return parse


def _help(name: str, default: Any) -> str:
    """The setting's help, with its default unless the text already gives it."""
    text = HELP[name]
    if "default" in text or default is msgspec.NODEFAULT:
        return text
    shown = "none" if default is None else default
    return f"{text} (default: {str(shown).replace('%', '%%')})"


def _add_config_flags(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(ClusterConfig)
    defaults = {f.name: f.default for f in msgspec.structs.fields(ClusterConfig)}
    for name in ClusterConfig.__struct_fields__:
        flag = "--" + name.replace("_", "-")
        kind = _field_type(hints[name])
        text = _help(name, defaults[name])
        if kind is bool:
            p.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            p.add_argument(flag, dest=name, type=_or_none(kind) if name in NULLABLE else kind, default=None,
                           metavar=name.upper(), help=text)
    p.add_argument("--config", metavar="FILE", help="TOML config file (keys as below, optionally under [cluster])")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m cluster", description="Multiprocess Discord sharding supervisor.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the supervisor and its workers",
                         description=f"Every option can also come from the environment ({ENV_PREFIX}WORKERS=4) "
                                     "or the --config TOML file; flags win, then the environment, then the file.")
    _add_config_flags(run)
    helps = {"status": "print the workers and shards", "restart": "restart the workers one by one, resuming every "
             "session", "reshard": "grow the shard count live: start a new shard set, switch to it without losing "
             "or repeating an event, close the old one"}
    for name in ("status", "restart", "reshard"):
        s = sub.add_parser(name, help=helps[name])
        s.add_argument("--url", help="the supervisor's HTTP address (default: from --http-host/--http-port, "
                                     f"{ENV_PREFIX}HTTP_PORT or 9100)")
        s.add_argument("--config", metavar="FILE")
        if name == "status":
            s.add_argument("--json", action="store_true", help="print the raw JSON")
            s.add_argument("--coordinator", metavar="URL",
                           help=f"show every host of the bot from this Redis (default: {ENV_PREFIX}COORDINATOR or "
                                "the --config file; --url asks one supervisor instead)")
            s.add_argument("--cluster-name", help=HELP["cluster_name"])
        elif name == "restart":
            s.add_argument("--rolling", action="store_true", required=True)
            s.add_argument("--pid", type=int, help="send SIGHUP to this supervisor instead of using HTTP")
        else:
            s.add_argument("--shards", type=int, help="the new shard count (default: GET /gateway/bot's "
                                                      "recommendation, rounded up to a multiple of max_concurrency)")
            s.add_argument("--no-wait", action="store_true", help="return once the reshard started")
            s.add_argument("--timeout", type=float, help="stop waiting after this many seconds (exit 12)")
        if name != "status":
            s.add_argument("--http-token-file", metavar="FILE",
                           help=f"file holding the supervisor's HTTP token (default: {ENV_PREFIX}HTTP_TOKEN, "
                                f"{ENV_PREFIX}HTTP_TOKEN_FILE or the --config file)")
    return p


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), stream=sys.stderr,
                        format="%(asctime)s supervisor %(levelname)s %(name)s: %(message)s")


async def _supervise(cfg: ClusterConfig) -> int:
    from cluster.display import StatusDisplay
    from cluster.supervisor import Supervisor

    sup = Supervisor(cfg)

    def not_the_exit_message(record: logging.LogRecord) -> bool:  # printed once, below, with its exit code
        return not (record.levelno >= logging.ERROR and sup.exit_message and record.getMessage() == sup.exit_message)

    for h in logging.getLogger().handlers:
        h.addFilter(not_the_exit_message)
    show = cfg.status_line if cfg.status_line is not None else sys.stderr.isatty()
    display = asyncio.get_running_loop().create_task(StatusDisplay(sup, tty=show).run()) if show else None
    try:
        code = await sup.run()
    finally:
        if display is not None:
            display.cancel()
            await asyncio.gather(display, return_exceptions=True)
    if code:
        print(f"cluster: {sup.exit_message or ExitCode(code).name} (exit code {code}: {ExitCode(code).name})",
              file=sys.stderr)
    return code


def run(cfg: ClusterConfig) -> int:
    _configure_logging(cfg.log_level)
    from shard import run as shard_run  # uvloop when installed

    return shard_run(_supervise(cfg))


def _base_url(args: argparse.Namespace, cfg: ClusterConfig) -> str:
    if args.url:
        return args.url.rstrip("/")
    return f"http://{cfg.http_host}:{cfg.http_port or 9100}"


def _http(method: str, url: str, token: str | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, method=method, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def format_status(st: dict[str, Any]) -> str:
    """The ``cluster status`` tables."""
    b = st.get("session_budget") or {}
    lines = [f"{st['active']}/{st['shard_total']} shards active · max_concurrency {st['max_concurrency']} · "
             f"identify queue {st['identify_queue']} · identifies left {b.get('remaining')}/{b.get('total')} "
             f"(safety margin {b.get('reserve')}) · up {st['uptime']:.0f} s", *_reshard_line(st.get("reshard")), "",
             f"{'WORKER':>6} {'PID':>8} {'STATE':<9} {'SHARDS':<10} {'RSS MB':>7} {'IPC RTT':>9} {'RESTARTS':>8}"]
    for w in st["workers"]:
        rtt = f"{w['ipc_rtt'] * 1000:.2f}ms" if w["ipc_rtt"] is not None else "-"
        lines.append(f"{w['id']:>6} {w['pid'] or '-':>8} {w['state']:<9} {w['shards'][0]}-{w['shards'][1]:<8} "
                     f"{w['rss'] / 2**20:>7.1f} {rtt:>9} {w['restarts']:>8}")
    lines += ["", f"{'SHARD':>6} {'WORKER':>6} {'STATE':<13} {'LATENCY':>9} {'LAST EVENT':>10} {'RESUMES':>7}"]
    for s in st["shards"]:
        lat = f"{s['latency'] * 1000:.0f}ms" if s["latency"] is not None else "-"
        age = f"{s['last_event_age']:.1f}s" if s["last_event_age"] is not None else "-"
        lines.append(f"{s['id']:>6} {s['worker']:>6} {s['state']:<13} {lat:>9} {age:>10} {s['resumes']:>7}")
    if st.get("blocks") is not None:  # --assign auto
        lines += ["", f"{'BLOCK':>6} {'SHARDS':<10} {'EPOCH':>6} {'LEASE AGE':>9}  OWNER"]
        for blk in st["blocks"]:
            lease_age = f"{blk['lease_age']:.1f}s" if blk["lease_age"] is not None else "-"
            owner = (blk["owner"] or "(free)") + (" (this host)" if blk["mine"] else "")
            lines.append(f"{blk['block']:>6} {blk['shards'][0]}-{blk['shards'][1]:<8} {blk['epoch'] or '-':>6} "
                         f"{lease_age:>9}  {owner}")
        moves = ", ".join(f"{m['event']} {m['reason']} {m['count']}" for m in st.get("lease_moves", []))
        lines.append(f"lease moves: {moves or 'none'}")
        if st.get("legacy_leases"):
            lines.append(f"legacy leases: {st['legacy_leases']} held by hosts of an earlier version (stop them): "
                         "this host claims and hands off nothing")
    return "\n".join(lines)


def _reshard_line(r: dict[str, Any] | None) -> list[str]:
    """The latest live reshard, for ``cluster status`` (nothing if there was none)."""
    if not r or r["phase"] == "idle":
        return []
    line = f"reshard {r['from']} -> {r['to']} shards: {r['phase']} · {_reshard_progress(r)} · {r['elapsed']:.1f} s"
    return [line + (f" · {r['reason']}" if r["reason"] else "")]


def _reshard_progress(r: dict[str, Any]) -> str:
    """A reshard's counts from ``/status``; across hosts (``shards``: its part), that host's."""
    mine = r.get("shards")
    if mine is not None:
        ready = f"{r['ready']}/{mine[1] - mine[0] + 1 if mine else 0} of this host's new shards"
        passed = f"{r['passed']} of this host's old shards"
    else:
        ready, passed = f"{r['ready']}/{r['to']} new shards", f"{r['passed']}/{r['from']} old shards"
    unmarked = r.get("unmarked")
    waiting = ""
    if unmarked:
        shown = ", ".join(map(str, unmarked[:8])) + (f" and {len(unmarked) - 8} more" if len(unmarked) > 8 else "")
        waiting = f" · new shards {shown} not past their markers"
    return f"{ready} ready · {passed} past the cut{waiting}"


def format_hosts(hosts: list[dict[str, Any]]) -> str:
    """``cluster status`` with a coordinator: every host's tables, then the totals."""
    lines = []
    for h in hosts:
        st = h["status"]
        lines += [f"== host {h['host']} (pid {h['pid']}, {h['http_url'] or 'no HTTP'}, "
                  f"reported {h['age']:.1f} s ago)", format_status(st), ""]
    active = sum(h["status"]["active"] for h in hosts)
    shards = sum(len(h["status"]["shards"]) for h in hosts)
    total = max((h["status"]["shard_total"] for h in hosts), default=0)
    queue = sum(h["status"]["identify_queue"] for h in hosts)
    lines.append(f"{len(hosts)} hosts · {active}/{total} shards active ({shards} run) · identify queue {queue}")
    return "\n".join(lines)


def _hosts_status(cfg: ClusterConfig, *, as_json: bool) -> int:
    """Print every host the coordinator knows (what each published at its last report interval)."""
    import time  # noqa: PLC0415

    from cluster.coordination.redis_conn import connect, namespace  # noqa: PLC0415
    from cluster.crosshost import read_statuses  # noqa: PLC0415
    from cluster.error import CoordinatorUnavailable  # noqa: PLC0415

    if cfg.cluster_name is None:
        try:
            token = cfg.token()
        except ConfigError:
            raise ConfigError(f"cluster status --coordinator needs --cluster-name or the bot token "
                              f"({cfg.token_env}) to find the bot's keys") from None
    else:
        token = ""

    async def read() -> list[dict[str, Any]]:
        client = await connect(cfg.coordinator)  # type: ignore[arg-type]
        try:
            hosts = await read_statuses(client, namespace(cfg.cluster_name, token))
        finally:
            await client.aclose()
        now = time.time()
        return [{"host": h.host, "hostname": h.hostname, "pid": h.pid, "http_url": h.http_url,
                 "age": max(0.0, now - h.published_at), "status": h.status} for h in hosts.values()]

    try:
        hosts = asyncio.run(read())
    except CoordinatorUnavailable as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return int(ExitCode.ERROR)
    if not hosts:
        print("cluster: no host of this bot has reported to the coordinator in the last few seconds",
              file=sys.stderr)
        return int(ExitCode.ERROR)
    print(json.dumps({"hosts": hosts}, indent=2) if as_json else format_hosts(hosts))
    return 0


def _reshard(base: str, token: str | None, shards: int | None, *, wait: bool, timeout: float | None) -> int:
    """``cluster reshard``: start it, then print each phase until it is done or rolled back."""
    status, body = _http("POST", base + "/reshard" + (f"?shards={shards}" if shards is not None else ""), token)
    text = body.decode(errors="replace").strip()
    if status != 202:
        print(f"cluster: {text} (HTTP {status})", file=sys.stderr)
        return RESHARD_EXIT["refused" if status in (400, 409) else "unreachable"]
    started = json.loads(text)
    print(f"resharding from {started['from']} to {started['to']} shards")
    if not wait:
        return RESHARD_EXIT["done"]
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = None
    while True:
        status, body = _http("GET", base + "/status")
        if status != 200:
            print(f"cluster: {base}/status answered {status}", file=sys.stderr)
            return RESHARD_EXIT["unreachable"]
        r = json.loads(body)["reshard"]
        line = f"{r['phase']}: {_reshard_progress(r)}"
        if line != shown:
            print(f"{r['elapsed']:6.1f} s  {line}")
            shown = line
        if r["phase"] == "done":
            print(f"done: {r['to']} shards; switched {r['switch_after']:.1f} s after the start"
                  + (f" ({r['reason']})" if r["reason"] else ""))
            return RESHARD_EXIT["done"]
        if r["phase"] == "rolled_back":
            print(f"cluster: reshard rolled back: {r['reason']}; the {r['from']} old shards run on", file=sys.stderr)
            return RESHARD_EXIT["rolled_back"]
        if deadline is not None and time.monotonic() > deadline:
            print(f"cluster: still {r['phase']} after {timeout:g} s; the reshard goes on", file=sys.stderr)
            return RESHARD_EXIT["timeout"]
        time.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            flags = {k: v for k, v in vars(args).items() if k in ClusterConfig.__struct_fields__}
            cfg = load_config(flags, os.environ, args.config)
            return run(cfg)
        if args.command == "restart" and args.pid:
            try:
                os.kill(args.pid, signal.SIGHUP)
            except ProcessLookupError:
                print(f"cluster: no process {args.pid} (is the supervisor running?)", file=sys.stderr)
                return int(ExitCode.ERROR)
            except PermissionError:
                print(f"cluster: not allowed to signal process {args.pid}", file=sys.stderr)
                return int(ExitCode.ERROR)
            print(f"sent SIGHUP to {args.pid}: rolling restart requested")
            return 0
        flags = {k: getattr(args, k, None) for k in ("coordinator", "cluster_name")}
        cfg = load_config(flags, os.environ, args.config)
        if args.command == "status" and cfg.coordinator is not None and not args.url:
            return _hosts_status(cfg, as_json=args.json)
        base = _base_url(args, cfg)
        token = None
        if args.command in ("restart", "reshard"):
            token_from = ClusterConfig(http_token_file=args.http_token_file) if args.http_token_file else cfg
            token = token_from.http_secret()
        if args.command == "reshard" and args.shards is not None and args.shards < 1:
            raise ConfigError(f"--shards must be a positive whole number, got {args.shards}")
    except ConfigError as exc:
        print(f"cluster: config error: {exc}", file=sys.stderr)
        return int(ExitCode.CONFIG)
    try:
        if args.command == "status":
            status, body = _http("GET", base + "/status")
            if status != 200:
                print(f"cluster: {base}/status answered {status}: {body.decode(errors='replace')}", file=sys.stderr)
                return int(ExitCode.ERROR)
            st = json.loads(body)
            print(json.dumps(st, indent=2) if args.json else format_status(st))
            return 0
        if args.command == "reshard":
            return _reshard(base, token, args.shards, wait=not args.no_wait, timeout=args.timeout)
        status, body = _http("POST", base + "/restart?rolling=1", token)
        print(body.decode(errors="replace").strip(), file=sys.stdout if status in (200, 202) else sys.stderr)
        return 0 if status in (200, 202) else int(ExitCode.ERROR)
    except (urllib.error.URLError, OSError) as exc:
        print(f"cluster: cannot reach the supervisor at {base}: {exc}", file=sys.stderr)
        return int(ExitCode.ERROR)


