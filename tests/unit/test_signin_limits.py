"""Sign-in attempts a console process takes: per address, and in all."""

from __future__ import annotations

from perdure.platform.console.signin_limits import SigninLimits
from perdure.platform.quotas.token_bucket import TokenBucket


def test_an_address_gets_its_burst_then_waits_and_others_are_not_held_by_it() -> None:
    limits = SigninLimits(per_address_rate=0.2, per_address_burst=3)
    assert [limits.wait_for("10.0.0.1", 0.0) for _ in range(3)] == [None, None, None]
    wait = limits.wait_for("10.0.0.1", 0.0)
    assert wait is not None and 4.9 < wait <= 5.0
    assert limits.wait_for("10.0.0.2", 0.0) is None
    assert limits.wait_for("10.0.0.1", 5.0) is None  # a token came back


def test_all_addresses_together_are_bounded() -> None:
    limits = SigninLimits(per_address_burst=100, overall=TokenBucket(1.0, 2))
    answers = [limits.wait_for(f"10.0.0.{i}", 0.0) for i in range(4)]
    assert answers[:2] == [None, None]
    assert all(a is not None and a > 0 for a in answers[2:])
