"""Mutation testing of the pure core modules (not a test; run before each release and after changing them).

    make mutate                                           # every module, writes bench/results/mutation.md
    .venv/bin/python bench/mutation.py shard/queue.py     # some modules only (the report keeps the others' rows)
    .venv/bin/python bench/mutation.py --report           # rewrite the report from the last runs, run nothing

mutmut (the ``mutate`` extra) changes one thing at a time in a module (``<`` to ``<=``, ``+ 1`` to ``+ 2``,
``True`` to ``False``, a call's argument to ``None``, ...) and runs the fast unit tests that cover the changed
function; a mutant that no test notices *survived* and marks a blind spot. The run happens in a scratch copy
(build/mutation/), with one worker process (``nice``d), so the tree and a shared machine are left alone.

A survivor is either killed by a new test or listed in bench/mutation_equivalent.txt (``mutant name: reason``)
as equivalent: a change no caller can observe. The report counts both and lists every survivor with its diff;
the target is at least 90% killed per module.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "mutation"
REPORT = ROOT / "bench" / "results" / "mutation.md"
EQUIVALENT = ROOT / "bench" / "mutation_equivalent.txt"
TARGET = 0.90

MODULES = [
    "shard/close_codes.py", "shard/queue.py", "shard/ratelimiter.py", "shard/heartbeat.py", "shard/session.py",
    "shard/frames.py", "cluster/coordination/local.py", "cluster/coordination/redis_url.py", "cluster/layout.py",
    "cluster/restart.py", "cluster/state.py", "cluster/snapshot.py", "ipc/framing.py", "cluster/cutover.py",
    "cluster/reshard.py", "cluster/reshard_plan.py", "cluster/liveness.py",
]
# the fast unit tests (a few seconds together; no simulator, supervisor or Redis): mutmut runs the ones that
# call the mutated function. A test file listed here holds fast tests only: slow ones go in a file beside it.
TESTS = [
    "tests/shard/test_units.py", "tests/shard/test_core_units.py", "tests/cluster/test_cluster_parts.py",
    "tests/cluster/test_cluster_core_units.py", "tests/cluster/test_cluster_identify.py",
    "tests/cluster/test_state_trust.py", "tests/cluster/test_coordinator_url.py",
    "tests/cluster/test_snapshot_units.py", "tests/ipc/test_ipc_framing_protocol.py",
    "tests/cluster/test_reshard_units.py", "tests/cluster/test_reshard_plan_units.py",
]
STATUS = {"killed", "survived", "timeout", "suspicious", "no tests", "skipped", "segfault", "not checked",
          "check was interrupted by user", "caught by type check"}


def setup_workdir() -> None:
    """A scratch copy of the packages and tests, with mutmut's config (kept between runs: mutmut caches verdicts)."""
    WORK.mkdir(parents=True, exist_ok=True)
    for pkg in ("shard", "cluster", "ipc", "sim", "tests"):
        dst = WORK / pkg
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(ROOT / pkg, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy2(ROOT / "pyproject.toml", WORK / "pyproject.toml")  # pytest's settings (no [tool.mutmut] in it)
    lines = ["[mutmut]", "source_paths =", *(f"    {p}" for p in ("shard", "cluster", "ipc")),
             "only_mutate =", *(f"    {m}" for m in MODULES),
             "also_copy =", "    sim/",
             "pytest_add_cli_args_test_selection =", *(f"    {t}" for t in TESTS if (ROOT / t).exists()),
             "pytest_add_cli_args =", "    -p", "    no:cacheprovider", "    -p", "    no:randomly",
             "use_git_change_detection = false", ""]
    (WORK / "setup.cfg").write_text("\n".join(lines))


def mutmut(*args: str, capture: bool = False) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # mutmut puts its mutants/ first itself
    exe = Path(sys.executable).with_name("mutmut")
    cmd = ["nice", "-n", "10", str(exe), *args]
    if capture:
        return subprocess.run(cmd, cwd=WORK, env=env, check=True, capture_output=True, text=True).stdout
    subprocess.run(cmd, cwd=WORK, env=env, check=True)
    return ""


def module_of(mutant: str) -> str:
    """``shard.close_codes.x_close_action__mutmut_3`` -> ``shard/close_codes.py``."""
    for m in MODULES:
        if mutant.startswith(m[:-3].replace("/", ".") + "."):
            return m
    return "?"


def load_equivalent() -> dict[str, str]:
    out = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                name, _, reason = line.partition(":")
                out[name.strip()] = reason.strip()
    return out


def results() -> dict[str, str]:
    """Every mutant's status from mutmut's cache."""
    out = {}
    for line in mutmut("results", "--all", "true", capture=True).splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and status in STATUS:
            out[name] = status
    return out


def write_report(modules_run: list[str]) -> bool:
    status = results()
    equivalent = load_equivalent()
    rows, survivors, ok = [], [], True
    n_all = n_killed = n_eq = 0
    for mod in MODULES:
        mine = {k: v for k, v in status.items() if module_of(k) == mod}
        if not mine or all(v == "not checked" for v in mine.values()):
            rows.append(f"| `{mod}` | not run | | | | |")
            continue
        killed = sum(v in ("killed", "timeout", "caught by type check") for v in mine.values())
        alive = sorted(k for k, v in mine.items() if v not in ("killed", "timeout", "caught by type check"))
        eq = [k for k in alive if k in equivalent]
        score = killed / len(mine)
        passed = score >= TARGET and len(eq) == len(alive)
        ok &= passed
        n_all, n_killed, n_eq = n_all + len(mine), n_killed + killed, n_eq + len(eq)
        rows.append(f"| `{mod}` | {len(mine)} | {killed} | {len(eq)} | {len(alive) - len(eq)} | "
                    f"**{score:.0%}** {'PASS' if passed else 'FAIL'} |")
        survivors += [(k, mine[k], equivalent.get(k)) for k in alive]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    text = [
        "# Mutation testing of the pure core modules", "",
        "Command: `make mutate` (`bench/mutation.py`: mutmut, one worker, the fast unit tests "
        f"{', '.join(f'`{t}`' for t in TESTS)}).", "",
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}; run at {now}"
        f"{'; this run: ' + ', '.join(modules_run) if modules_run else ''}.", "",
        f"Target: at least {TARGET:.0%} of each module's mutants killed, and every survivor listed as "
        "equivalent (with the reason) in `bench/mutation_equivalent.txt`.", "",
        "| module | mutants | killed | equivalent | other survivors | killed share |",
        "| --- | --- | --- | --- | --- | --- |", *rows,
        f"| **all** | {n_all} | {n_killed} | {n_eq} | {n_all - n_killed - n_eq} | "
        f"**{n_killed / max(n_all, 1):.1%}** |", "",
        "Killed includes mutants whose tests timed out (an endless wait is caught). mutmut mutates code inside "
        "functions and methods; module-level tables (for example the close code sets) are covered by the "
        "tests of the functions that read them, not mutated themselves.", "",
    ]
    if survivors:
        text += ["## Survivors", ""]
        for name, st, reason in survivors:
            text += [f"### `{name}` ({st})", "", f"Equivalent: {reason}" if reason else "**Not explained: add a test "
                     "that kills it or list it as equivalent.**", "", "```diff"]
            diff = mutmut("show", name, capture=True)
            text += [ln for ln in diff.splitlines()[1:] if ln.strip()] + ["```", ""]
    REPORT.write_text("\n".join(text))
    print(f"wrote {REPORT.relative_to(ROOT)}")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("modules", nargs="*", help=f"modules to mutate (default: all {len(MODULES)})")
    ap.add_argument("--report", action="store_true", help="only rewrite the report from the cached verdicts")
    ap.add_argument("--max-children", type=int, default=1, help="parallel test processes (default 1)")
    args = ap.parse_args()
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        ap.error(f"not one of the pure core modules: {', '.join(unknown)} (choose from {', '.join(MODULES)})")
    if not Path(sys.executable).with_name("mutmut").exists():
        sys.exit(f"mutmut is not installed beside {sys.executable}: `make mutate` installs the `mutate` extra")
    if not args.report:
        setup_workdir()
        todo = args.modules or MODULES
        patterns = [re.escape(m[:-3].replace("/", ".")) + ".*" for m in todo]
        mutmut("run", "--max-children", str(args.max_children), *(p.replace("\\", "") for p in patterns))
    return 0 if write_report(args.modules) else 1


if __name__ == "__main__":
    sys.exit(main())
