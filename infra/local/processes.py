"""Background processes the local stack starts, tracked by pid files (never by name pattern)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ManagedProcess:
    """A process started in its own session so the whole group can be stopped together."""

    name: str
    pid_file: Path
    log_file: Path
    # A word that must appear in /proc/<pid>/cmdline, so that a recycled pid is never signalled.
    cmdline_marker: str

    def pid(self) -> int | None:
        """The recorded process group if a process of it is still alive and ours.

        The recorded pid leads a session of its own; a launcher script may exit while the server it
        started lives on in the same group (RabbitMQ's does), so the group is what counts.
        """
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        for member in _group_members(pid):
            try:
                cmdline = Path(f"/proc/{member}/cmdline").read_bytes().replace(b"\0", b" ")
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
            if self.cmdline_marker in cmdline.decode(errors="replace"):
                return pid
        return None

    def running(self) -> bool:
        return self.pid() is not None

    def start(self, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None) -> int:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        full_env = dict(os.environ)
        if env:
            full_env.update(env)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- perdure stack: starting {self.name} at {time.strftime('%F %T')}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        return proc.pid

    def exited_early(self) -> bool:
        """True when the pid file names a process that is gone (it crashed during start-up)."""
        return self.pid_file.exists() and self.pid() is None

    def stop(self, timeout: float = 30.0) -> bool:
        """SIGTERM the process group, SIGKILL it after ``timeout``; True if something was stopped."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self._group_alive(pid):
                break
            time.sleep(0.1)
        else:
            self._signal_group(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    @staticmethod
    def _signal_group(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        return bool(_group_members(pgid))


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        # fields: state ppid pgrp ...
        if fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def tail(path: Path, lines: int = 40) -> str:
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return f"(no log at {path.name})"
    return "\n".join(text.splitlines()[-lines:])
