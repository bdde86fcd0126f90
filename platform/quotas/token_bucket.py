"""A token bucket: ``rate`` tokens per second, at most ``burst`` saved up."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    rate: float
    burst: int
    tokens: float = field(init=False)
    updated_at: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def _refill(self, now: float) -> None:
        if self.updated_at is not None:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated_at) * self.rate)
        self.updated_at = now

    def try_take(self, now: float, count: int = 1) -> bool:
        self._refill(now)
        if self.tokens >= count:
            self.tokens -= count
            return True
        return False

    def reserve(self, now: float) -> float:
        """Take a token now, in advance if need be: how long to wait before using it (the waits of
        successive reservations queue up at the rate)."""
        self._refill(now)
        self.tokens -= 1
        return max(0.0, -self.tokens / self.rate)

    def seconds_until(self, now: float, count: int = 1) -> float:
        """How long until ``count`` tokens are there (0 if they are)."""
        self._refill(now)
        missing = count - self.tokens
        return max(0.0, missing / self.rate)

    def reconfigure(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = min(self.tokens, float(burst))
