"""A handler whose on_call replies with as many bytes as asked (the IPC frame limit test)."""

from __future__ import annotations

import os
from typing import Any

import ipc


class Bytes(ipc.Call):
    """Reply with ``size`` zero bytes."""

    size: int


class Pid(ipc.Call):
    """Reply with the worker's process id."""


class BigReplies:
    def on_call(self, call: Any) -> Any:
        if isinstance(call, Bytes):
            return bytes(call.size)
        if isinstance(call, Pid):
            return os.getpid()
        raise NotImplementedError(type(call).__name__)
