"""The sandbox of a platform-hosted worker: defence in depth around tenant code, one layer each.

- Own process, own session: a crash, ``os._exit`` or a blocked event loop stays in the worker.
- Own OS user per namespace, no groups: it cannot read the platform's files (``.stack/`` is 0711 with
  0700 service folders and a 0600 credentials file) or other namespaces' folders, nor signal other
  processes.
- An environment with the connection string only: nothing of the platform's endpoints and passwords
  in ``os.environ``.
- A private working directory (0700; also ``HOME`` and ``TMPDIR``): no files left where another
  namespace or the platform reads them.
- rlimits (address space, open files, processes, no core files): the machine's memory, descriptors
  and process table are not exhausted.
- A lower CPU priority (niceness 10, and an eighth of a process's CPU weight for its cgroup), and
  cgroups where the machine lets the platform make them (CPU quota, memory, pids): one namespace's
  CPU-bound code does not slow the platform's processes, through which every namespace's work goes.

What the sandbox does not do alone: keep the worker off the network. Kafka, MongoDB and RabbitMQ answer
on this machine's loopback, so each requires credentials the worker never holds (the local stack's
credentials file); the worker's only credential is a broker user of its namespace's vhost.
Making users and cgroups needs root; without it the worker runs as the platform's user, with the
rest of the layers, and the supervisor says so.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import pwd
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from perdure.infra.settings import Settings
from perdure.platform.sandboxing.code_environment import code_environment
from perdure.platform.tenancy.model import Quota

log = logging.getLogger("perdure.workers")


class SandboxError(RuntimeError):
    """The sandbox of a namespace's worker cannot be made (its start is retried with backoff)."""


CGROUP_ROOT = Path("/sys/fs/cgroup")
PR_SET_PDEATHSIG = 1
WORKER_NICENESS = 10
# A cgroup competes with the platform's processes as one task of this weight (a nice-0 task weighs
# 1024): inside a cgroup the worker's niceness counts only against its own threads, so without a low
# weight a worker's group would preempt the engine and the brokers like any of them.
WORKER_CPU_SHARES = 128


@dataclass(frozen=True)
class SandboxLimits:
    memory_bytes: int = 1024 * 1024 * 1024
    cpus: float = 1.0
    max_processes: int = 512
    max_open_files: int = 1024


def die_with(parent: int) -> None:
    """Have the kernel end this process when ``parent`` (its supervisor) dies, even by SIGKILL: a
    worker must not outlive the cell process that answers for it."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the supervisor died before the line above
        os._exit(1)


def sweep_cgroups() -> None:
    """Remove the empty cgroups of supervisors that died without removing them (a cgroup with a
    process in it stays: the kernel refuses to remove it)."""
    for controller in ("cpu", "memory", "pids"):
        for group in (CGROUP_ROOT / controller).glob("perdure-*"):
            with contextlib.suppress(OSError):
                group.rmdir()


def sandbox_user(namespace: str) -> str:
    """The OS user of a namespace's workers (names are at most 32 characters)."""
    return "pd-" + hashlib.sha256(namespace.encode()).hexdigest()[:16]


@dataclass
class Sandbox:
    root: Path  # the folder of every namespace's working directory
    namespace: str
    limits: SandboxLimits
    token: str  # the supervising process, so two supervisors' cgroups never meet
    python: Path  # an interpreter the sandbox's user may run
    cgroups: list[Path] = field(default_factory=list)

    @property
    def isolated(self) -> bool:
        """Whether the worker gets a user of its own (only root can make and become one)."""
        return os.geteuid() == 0

    @property
    def workdir(self) -> Path:
        return self.root / hashlib.sha256(self.namespace.encode()).hexdigest()[:24]

    def prepare(self) -> dict[str, object]:
        """Make the user, the working directory and the cgroups; the keyword arguments that start a
        process inside them."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o711)
        self.workdir.mkdir(exist_ok=True)
        self.workdir.chmod(0o700)
        options: dict[str, object] = {
            "cwd": str(self.workdir),
            "start_new_session": True,
            "umask": 0o077,
            "preexec_fn": self._limit_resources(),
        }
        if self.isolated:
            account = self._ensure_user()
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
            options.update(user=account.pw_uid, group=account.pw_gid, extra_groups=[])
            self.cgroups = self._make_cgroups()
        else:
            log.warning(
                "not root: the worker runs as the platform's user (no user of its own, no cgroups)",
                extra={"namespace": self.namespace},
            )
        return options

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        environment = code_environment()
        # Few malloc arenas: each thread's reserves address space, which the memory limit counts.
        environment.update(HOME=str(self.workdir), TMPDIR=str(self.workdir), MALLOC_ARENA_MAX="2", **extra)
        return environment

    def artifact_folder(self, sha: str) -> Path:
        """Where a deployed artifact is unpacked (by the platform): a folder of the platform's that only
        the namespace's user may read besides it (0750, the namespace's group), outside the worker's
        own writable folder, so the worker can neither change its code nor steer where it is unpacked,
        and no other namespace can read it."""
        root = self.root / f"{self.workdir.name}.artifacts"
        self.root.mkdir(parents=True, exist_ok=True)
        root.mkdir(exist_ok=True)
        if self.isolated:
            os.chown(root, 0, self._ensure_user().pw_gid)
            root.chmod(0o750)
        else:
            root.chmod(0o700)
        return root / sha

    @classmethod
    def for_namespace(cls, settings: Settings, namespace: str, quota: Quota, token: str) -> Sandbox:
        return cls(
            settings.stack_dir / "workers",
            namespace,
            SandboxLimits(memory_bytes=quota.worker_memory_mb * 1024 * 1024, cpus=quota.worker_cpus),
            token,
            settings.worker_python,
        )

    def enter(self, pid: int) -> None:
        """Put the started worker into its cgroups (its children follow it)."""
        for group in self.cgroups:
            with contextlib.suppress(OSError):
                (group / "cgroup.procs").write_text(str(pid))

    def end_processes(self) -> None:
        """SIGKILL whatever is left in the worker's cgroups (its own session is not enough: tenant code
        can start processes in sessions of their own, but not leave its cgroup)."""
        for group in self.cgroups:
            try:
                pids = (group / "cgroup.procs").read_text().split()
            except OSError:
                continue
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self) -> None:
        self.end_processes()
        for group in self.cgroups:
            with contextlib.suppress(OSError):
                group.rmdir()
        self.cgroups = []

    # -- layers ---------------------------------------------------------------------------------------
    def _ensure_user(self) -> pwd.struct_passwd:
        name = sandbox_user(self.namespace)
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
        # Another supervisor on this machine may make it at the same moment: look again either way.
        # (Not a system account: their ids, a few hundred, would run out with the namespaces.)
        made = subprocess.run(
            [
                "useradd",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                f"perdure worker of {self.namespace}"[:100],
                name,
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        try:
            return pwd.getpwnam(name)
        except KeyError:
            raise SandboxError(f"cannot make the worker's user {name}: {made.stderr.strip()}") from None

    def forget(self) -> None:
        """Remove what the namespace had on this machine (its user, group, folders): it is gone. A
        user whose processes still run (another supervisor's worker) is left for that one to remove."""
        self.remove()
        if self.isolated:
            name = sandbox_user(self.namespace)
            removed = subprocess.run(["userdel", name], check=False, capture_output=True, text=True)
            if removed.returncode not in (0, 6):  # 6: no such user
                log.warning("the worker's user stays", extra={"user": name, "reason": removed.stderr.strip()})
                return
        for folder in (self.workdir, self.root / f"{self.workdir.name}.artifacts"):
            shutil.rmtree(folder, ignore_errors=True)

    def _limit_resources(self) -> Callable[[], None]:
        limits = self.limits
        parent = os.getpid()

        def limit() -> None:  # runs in the child, before the worker's code
            die_with(parent)
            # Tenant code yields the CPU to the platform's own processes (engine, brokers, databases),
            # which every namespace's work goes through.
            os.nice(WORKER_NICENESS)
            resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
            resource.setrlimit(resource.RLIMIT_NOFILE, (limits.max_open_files, limits.max_open_files))
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            if os.getuid() != 0:  # a process limit counts the user's processes: only with a user of its own
                resource.setrlimit(resource.RLIMIT_NPROC, (limits.max_processes, limits.max_processes))

        return limit

    def _make_cgroups(self) -> list[Path]:
        name = f"perdure-{self.token}-{hashlib.sha256(self.namespace.encode()).hexdigest()[:12]}"
        made: list[Path] = []
        period = 100_000
        settings: dict[str, dict[str, str]] = {
            "cpu": {
                "cpu.cfs_period_us": str(period),
                "cpu.cfs_quota_us": str(int(self.limits.cpus * period)),
                "cpu.shares": str(WORKER_CPU_SHARES),
            },
            "memory": {"memory.limit_in_bytes": str(self.limits.memory_bytes)},
            "pids": {"pids.max": str(self.limits.max_processes)},
        }
        for controller, values in settings.items():
            group = CGROUP_ROOT / controller / name
            try:
                group.mkdir(exist_ok=True)
                for file, value in values.items():
                    (group / file).write_text(value)
            except OSError as exc:
                log.info("no %s cgroup for the worker (%s); its rlimits still hold", controller, exc)
                with contextlib.suppress(OSError):
                    group.rmdir()
                continue
            made.append(group)
        return made
