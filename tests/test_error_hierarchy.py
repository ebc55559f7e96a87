"""One error hierarchy per package (issue 12): a root in `<package>.error`, the tree drawn in its docstring,
the public errors exported from the package and the internal ones not, and the old import paths still working.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings

import pytest

# package -> (root, public errors, internal errors); every error class the package defines is one of these.
TREES = {
    "shard": ("ShardError", {"GatewayError", "RedirectRefused"}, {"InflateError", "HandshakeError"}),
    "cluster": ("ClusterError", {"ConfigError", "HandlerImportError", "ClusterExit", "CoordinatorUnavailable",
                                 "ReshardRefused"}, {"LayoutMoved"}),
    "ipc": ("IpcError", {"ChannelClosed", "CallError", "UnknownCall", "FramingError", "FrameTooLarge"}, set()),
    "sim": ("SimError", set(), {"HttpError", "FrameError"}),
}

# (old module, name, stdlib base it kept): where each error lived before it moved to its error module.
OLD_PATHS = [
    ("shard.inflater", "InflateError", Exception), ("shard.websocket", "HandshakeError", Exception),
    ("shard.recommended", "RedirectRefused", RuntimeError),
    ("cluster.config", "ConfigError", ValueError), ("cluster.exitcodes", "ClusterExit", Exception),
    ("cluster.handler", "HandlerImportError", ImportError),
    ("ipc.channel", "ChannelClosed", ConnectionError), ("ipc.calls", "CallError", RuntimeError),
    ("ipc.calls", "UnknownCall", RuntimeError), ("ipc.framing", "FramingError", ValueError),
    ("ipc.framing", "FrameTooLarge", ValueError),
    ("sim.http", "HttpError", Exception), ("sim.wsframe", "FrameError", Exception),
]


def defined_errors(package: str) -> dict[str, type[BaseException]]:
    """Every exception class defined at module level anywhere in `package` (all its modules imported)."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
    found = {}
    for name, module in list(sys.modules.items()):
        if name == package or name.startswith(package + "."):
            for obj in vars(module).values():
                if isinstance(obj, type) and issubclass(obj, BaseException) and obj.__module__ == name:
                    found[obj.__qualname__] = obj
    return found


@pytest.mark.parametrize("package", sorted(TREES))
def test_every_error_is_in_the_tree_of_the_error_module(package):
    root_name, public, internal = TREES[package]
    error_module = importlib.import_module(f"{package}.error")
    errors = defined_errors(package)
    assert set(errors) == {root_name} | public | internal
    root = getattr(error_module, root_name)
    for name, cls in errors.items():
        assert cls.__module__ == f"{package}.error", name
        assert issubclass(cls, root), f"{name} is not a {root_name}"
        assert f" {name} " in error_module.__doc__, f"{name} is missing from the tree in {package}/error.py"


@pytest.mark.parametrize("package", sorted(TREES))
def test_public_errors_are_exported_and_internal_ones_are_not(package):
    root_name, public, internal = TREES[package]
    module = importlib.import_module(package)
    error_module = importlib.import_module(f"{package}.error")
    for name in ({root_name} | public) if public else ():
        assert name in module.__all__
        assert getattr(module, name) is getattr(error_module, name)
    for name in internal:
        assert name not in module.__all__
        assert name not in vars(module)


@pytest.mark.parametrize(("old", "name", "base"), OLD_PATHS, ids=[f"{o}.{n}" for o, n, _ in OLD_PATHS])
def test_old_import_paths_still_work(old, name, base):
    cls = getattr(importlib.import_module(old), name)
    assert cls is getattr(importlib.import_module(f"{old.split('.')[0]}.error"), name)
    assert issubclass(cls, base)


def test_shard_inflate_error_still_imports_from_the_package_with_a_deprecation_warning():
    import shard
    from shard.error import InflateError

    with pytest.warns(DeprecationWarning, match="GatewayError"):
        assert shard.InflateError is InflateError
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from shard import GatewayError  # noqa: F401 - a public name does not warn
    with pytest.raises(AttributeError, match="NoSuchError"):
        shard.NoSuchError  # noqa: B018
