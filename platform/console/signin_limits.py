"""How fast this console process takes sign-in attempts: per client address and in all, before any
password is looked at (the per-e-mail lock in the control database guards each account; these guard the
console itself, whose every attempt costs an argon2 verification, and stop one address trying one
password on many e-mails).

Kept in the process: a limit on this process's own CPU, lost on restart by design; each console process
of several guards itself."""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass, field

from perdure.platform.quotas.token_bucket import TokenBucket

PER_ADDRESS_RATE, PER_ADDRESS_BURST = 0.2, 20  # an address: 20 attempts, then one every 5 s
OVERALL_RATE, OVERALL_BURST = 10.0, 40  # every address together: about what two cores verify
MAX_ADDRESSES = 10_000  # the least recently seen are forgotten past this


@dataclass
class SigninLimits:
    per_address_rate: float = PER_ADDRESS_RATE
    per_address_burst: int = PER_ADDRESS_BURST
    overall: TokenBucket = field(default_factory=lambda: TokenBucket(OVERALL_RATE, OVERALL_BURST))
    _addresses: collections.OrderedDict[str, TokenBucket] = field(default_factory=collections.OrderedDict)

    def wait_for(self, address: str, now: float | None = None) -> float | None:
        """Take an attempt for ``address``; None when it may go on, else the seconds it should wait."""
        now = time.monotonic() if now is None else now
        bucket = self._addresses.pop(address, None) or TokenBucket(
            self.per_address_rate, self.per_address_burst
        )
        self._addresses[address] = bucket
        while len(self._addresses) > MAX_ADDRESSES:
            self._addresses.popitem(last=False)
        if not bucket.try_take(now):
            return bucket.seconds_until(now)
        if not self.overall.try_take(now):
            return self.overall.seconds_until(now)
        return None
