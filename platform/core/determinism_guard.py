"""Refuses calls that differ between a run and its replay, naming what to use instead.

Active only while workflow code runs (a per-thread profile hook), so activities, the engine and
other threads are untouched. Logging is exempt: it reads the clock for its own records.
"""

from __future__ import annotations

import datetime
import os
import random
import socket
import sys
import threading
import time
import types
import uuid
from typing import Any

from perdure.platform.core.failures import NondeterministicCallError

_CLOCK = "workflow.now() (the time of the current workflow task)"
_SLEEP = "workflow.sleep() or workflow.wait_condition(..., timeout=...)"
_RANDOM = "workflow.random() or workflow.uuid4()"
_IO = "an activity (workflow code must not do I/O)"

# (owner, function name) of builtins -> the replacement to name in the error.
_BUILTINS: dict[tuple[object, str], str] = {
    **{
        (time, name): _CLOCK
        for name in (
            "time",
            "time_ns",
            "monotonic",
            "monotonic_ns",
            "perf_counter",
            "perf_counter_ns",
            "localtime",
            "gmtime",
            "ctime",
        )
    },
    (time, "sleep"): _SLEEP,
    (datetime.datetime, "now"): _CLOCK,
    (datetime.datetime, "utcnow"): _CLOCK,
    (datetime.datetime, "today"): _CLOCK,
    (datetime.date, "today"): _CLOCK,
    (os, "urandom"): _RANDOM,
    (os, "getrandom"): _RANDOM,
}
_GLOBAL_RANDOM = random._inst
_SOCKET_CALLS = {
    "connect",
    "connect_ex",
    "sendto",
    "sendall",
    "send",
    "recv",
    "recv_into",
    "recvfrom",
    "bind",
}
# Pure-Python functions, recognised by their code object.
_FUNCTIONS: dict[types.CodeType, str] = {
    uuid.uuid1.__code__: _RANDOM,
    uuid.uuid4.__code__: _RANDOM,
    threading.Thread.start.__code__: _IO,
    socket.create_connection.__code__: _IO,
    socket.getaddrinfo.__code__: _IO,
}
# Code that may run in the middle of a workflow task without being part of it: logging, tracing, and
# tools that hook the interpreter (garbage-collector callbacks, coverage, test frameworks).
_EXEMPT_MODULES = (
    "logging",
    "structlog",
    "opentelemetry",
    "warnings",
    "perdure.platform.core",
    "pydantic",
    "typing",
    "json",
    "hypothesis",
    "coverage",
    "_pytest",
    "pluggy",
)


def _replacement_for_builtin(fn: Any) -> tuple[str, str] | None:
    name = getattr(fn, "__name__", "")
    owner = getattr(fn, "__self__", None)
    if owner is None:
        return None
    if owner is _GLOBAL_RANDOM:
        return f"random.{name}()", _RANDOM
    if isinstance(owner, type) and issubclass(owner, datetime.date):
        key: tuple[object, str] = (
            datetime.datetime if issubclass(owner, datetime.datetime) else datetime.date,
            name,
        )
        if key in _BUILTINS:
            return f"{owner.__name__}.{name}()", _BUILTINS[key]
        return None
    if isinstance(owner, types.ModuleType):
        module = sys.modules.get(owner.__name__)
        if owner.__name__ == "posix":
            module = os
        replacement = _BUILTINS.get((module, name))
        if replacement is not None:
            return f"{owner.__name__}.{name}()", replacement
        return None
    if isinstance(owner, socket.socket) and name in _SOCKET_CALLS:
        return f"socket.{name}()", _IO
    return None


def _exempt(frame: types.FrameType) -> bool:
    module = frame.f_globals.get("__name__", "")
    return isinstance(module, str) and module.startswith(_EXEMPT_MODULES)


def _profile(frame: types.FrameType, event: str, arg: Any) -> None:
    if event == "c_call":
        found = _replacement_for_builtin(arg)
        if found is not None and not _exempt(frame):
            raise NondeterministicCallError(f"{found[0]} is not allowed in workflow code: use {found[1]}")
    elif event == "call":
        replacement = _FUNCTIONS.get(frame.f_code)
        if replacement is not None and frame.f_back is not None and not _exempt(frame.f_back):
            raise NondeterministicCallError(
                f"{frame.f_code.co_qualname}() is not allowed in workflow code: use {replacement}"
            )


class DeterminismGuard:
    """Context manager: install the hook for the current thread, restore the previous one after."""

    def __enter__(self) -> None:
        self._previous = sys.getprofile()
        sys.setprofile(_profile)

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)


class Unguarded:
    """Lift the guard for code that is allowed to be nondeterministic (a side effect's function)."""

    def __enter__(self) -> None:
        self._previous = sys.getprofile()
        sys.setprofile(None)

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(self._previous)
