"""Retry policies and the backoff the engine computes from them (pure)."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, model_validator


class RetryPolicy(BaseModel):
    """As in Temporal: exponential backoff from ``initial_interval``, capped at ``maximum_interval``;
    ``maximum_attempts`` 0 means unlimited; errors whose type is listed are not retried."""

    model_config = ConfigDict(frozen=True)

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = Field(default=2.0, ge=1.0)
    maximum_interval: timedelta | None = None
    maximum_attempts: int = Field(default=0, ge=0)
    non_retryable_error_types: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> RetryPolicy:
        if self.initial_interval <= timedelta(0):
            raise ValueError("initial_interval must be positive")
        if self.maximum_interval is not None and self.maximum_interval < self.initial_interval:
            raise ValueError("maximum_interval must be at least initial_interval")
        return self

    @property
    def effective_maximum_interval(self) -> timedelta:
        return self.maximum_interval or self.initial_interval * 100

    def backoff(self, attempt: int) -> timedelta:
        """The wait after failed attempt number ``attempt`` (1-based) before the next one."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        cap = self.effective_maximum_interval.total_seconds()
        seconds = self.initial_interval.total_seconds()
        # Multiply step by step and stop at the cap, so huge attempt numbers never overflow a float.
        for _ in range(attempt - 1):
            seconds *= self.backoff_coefficient
            if seconds >= cap:
                return timedelta(seconds=cap)
        return timedelta(seconds=min(seconds, cap))

    def should_retry(self, attempt: int, error_type: str | None, non_retryable: bool) -> bool:
        """Whether failed attempt number ``attempt`` is followed by another one."""
        if non_retryable or (error_type is not None and error_type in self.non_retryable_error_types):
            return False
        return self.maximum_attempts == 0 or attempt < self.maximum_attempts


DEFAULT_ACTIVITY_RETRY = RetryPolicy()
