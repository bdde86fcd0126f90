"""Tenancy records of the control database: accounts, their users and roles, namespace quotas."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field

from perdure.platform.core.run_state import RunLimits

Role = Literal["owner", "admin", "developer", "read-only"]
ROLES: tuple[Role, ...] = ("owner", "admin", "developer", "read-only")


class Quota(BaseModel):
    """What a namespace may use of its cell. Actions are Temporal Cloud's billable actions."""

    model_config = ConfigDict(frozen=True)

    actions_per_second: float = Field(default=100.0, gt=0)
    burst: int = Field(default=200, ge=1)
    weight: int = Field(default=1, ge=1, le=1000)
    max_concurrent_workflows: int = Field(default=10_000, ge=1)
    # Activity attempts running at once per executor process (as Temporal's per-worker limit).
    max_concurrent_activities: int = Field(default=200, ge=1)
    max_payload_bytes: int = Field(default=256 * 1024, ge=1024)
    # What a platform-hosted worker of the namespace may use (its sandbox's limits).
    worker_memory_mb: int = Field(default=1024, ge=64)
    worker_cpus: float = Field(default=1.0, gt=0, le=64)
    # Per run (Temporal's defaults): warned of at the first value, terminated at the second.
    warn_history_events: int = Field(default=10_240, ge=1)
    max_history_events: int = Field(default=51_200, ge=2)
    warn_history_bytes: int = Field(default=10 * 1024 * 1024, ge=1)
    max_history_bytes: int = Field(default=50 * 1024 * 1024, ge=1024)

    def run_limits(self) -> RunLimits:
        return RunLimits(
            warn_events=self.warn_history_events,
            max_events=self.max_history_events,
            warn_bytes=self.warn_history_bytes,
            max_bytes=self.max_history_bytes,
        )

    @classmethod
    def unthrottled(cls) -> Quota:
        """For measuring the cell itself (benchmarks, tests of the cell): no quota gets in the way."""
        return cls(actions_per_second=1_000_000, burst=1_000_000, max_concurrent_activities=10_000)


class Member(BaseModel):
    """A person of the account, and what they may do in a namespace of it."""

    model_config = ConfigDict(frozen=True)

    email: str
    role: Role


class AccountRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    created_at: datetime


class UserRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    email: EmailStr
    account: str
    role: Role
    created_at: datetime
