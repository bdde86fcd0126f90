"""Token buckets and weighted deficit round robin, on a simulated clock."""

from __future__ import annotations

import pytest

from perdure.platform.quotas.fair_queue import FairQueue
from perdure.platform.quotas.token_bucket import TokenBucket


def test_a_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5)
    assert sum(bucket.try_take(0.0) for _ in range(20)) == 5
    assert not bucket.try_take(0.05)
    assert bucket.seconds_until(0.05) > 0
    admitted = sum(bucket.try_take(t / 100) for t in range(10, 1010))  # 10 s in steps of 10 ms
    assert 99 <= admitted <= 101


def test_a_throttled_namespace_admits_its_rate_and_leaves_the_other_alone() -> None:
    queue: FairQueue[int] = FairQueue()
    queue.configure("slow", rate=50, burst=10, weight=1)
    queue.configure("fast", rate=10_000, burst=10_000, weight=1)
    for i in range(2_000):
        queue.put("slow", i)
        queue.put("fast", i)
    admitted = {"slow": 0, "fast": 0}
    for step in range(1_000):  # 10 s in steps of 10 ms
        for name, _ in queue.take(step / 100, limit=100):
            admitted[name] += 1
    assert 0.9 * 510 <= admitted["slow"] <= 1.1 * 510  # 50/s for 10 s plus the burst
    assert admitted["fast"] == 2_000


def test_a_flood_does_not_delay_a_small_tenant_beyond_its_share() -> None:
    queue: FairQueue[int] = FairQueue()
    for name in ("a", "b"):
        queue.configure(name, rate=1e9, burst=10**9, weight=1)
    for i in range(5_000):
        queue.put("a", i)
    for i in range(50):
        queue.put("b", i)
    order = [name for name, _ in queue.take(0.0, limit=5_050)]
    last_b = max(i for i, name in enumerate(order) if name == "b")
    assert last_b < 110  # b's 50 interleave with a's, about one for one
    fifo: FairQueue[int] = FairQueue(fair=False)
    for name in ("a", "b"):
        fifo.configure(name, rate=1e9, burst=10**9, weight=1)
    for i in range(5_000):
        fifo.put("a", i)
    for i in range(50):
        fifo.put("b", i)
    order = [name for name, _ in fifo.take(0.0, limit=5_050)]
    assert order.index("b") == 5_000  # plain FIFO: b waits behind all of a


def test_weights_share_in_proportion() -> None:
    queue: FairQueue[int] = FairQueue(quantum=1)
    queue.configure("gold", rate=1e9, burst=10**9, weight=3)
    queue.configure("basic", rate=1e9, burst=10**9, weight=1)
    for i in range(1_000):
        queue.put("gold", i)
        queue.put("basic", i)
    first = [name for name, _ in queue.take(0.0, limit=400)]
    assert first.count("gold") == 300 and first.count("basic") == 100


def test_a_namespace_out_of_tokens_does_not_block_the_others() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.configure("empty", rate=1, burst=1, weight=10)
    queue.configure("full", rate=1e9, burst=10**9, weight=1)
    for i in range(10):
        queue.put("empty", f"e{i}")
        queue.put("full", f"f{i}")
    taken = queue.take(0.0, limit=20)
    assert [item for name, item in taken if name == "empty"] == ["e0"]
    assert len([1 for name, _ in taken if name == "full"]) == 10
    assert queue.waiting("empty") == 9
    assert queue.next_ready_in(0.0) == 1.0


def test_room_caps_a_namespace_without_holding_up_the_others() -> None:
    for fair in (True, False):
        queue: FairQueue[int] = FairQueue(fair=fair)
        queue.configure("capped", rate=1e9, burst=10**9, weight=5)
        queue.configure("free", rate=1e9, burst=10**9, weight=1)
        for i in range(20):
            queue.put("capped", i)
            queue.put("free", i)
        taken = queue.take(0.0, limit=100, room={"capped": 3})
        assert [i for name, i in taken if name == "capped"] == [0, 1, 2]
        assert len([1 for name, _ in taken if name == "free"]) == 20
        assert queue.next_ready_in(0.0, room={"capped": 0}) is None  # waits for room, not for time
        assert queue.take(0.0, limit=100, room={"capped": 0}) == []
        assert [i for _, i in queue.take(0.0, limit=100, room={"capped": 2})] == [3, 4]


def test_weights_share_slots_when_room_is_scarce() -> None:
    queue: FairQueue[int] = FairQueue(quantum=1)
    queue.configure("gold", rate=1e9, burst=10**9, weight=3)
    queue.configure("basic", rate=1e9, burst=10**9, weight=1)
    for i in range(1_000):
        queue.put("gold", i)
        queue.put("basic", i)
    counts = {"gold": 0, "basic": 0}
    for _ in range(100):  # one free slot at a time, as an executor at capacity sees it
        for name, _ in queue.take(0.0, limit=1):
            counts[name] += 1
    assert counts == {"gold": 75, "basic": 25}


def test_reservations_queue_up_at_the_rate_after_the_burst() -> None:
    bucket = TokenBucket(rate=10, burst=2)
    waits = [bucket.reserve(100.0) for _ in range(5)]
    assert waits == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    assert bucket.reserve(100.5) == pytest.approx(0.0)  # 0.5 s later the queue has drained


def test_a_request_is_throttled_when_its_namespace_waits_for_tokens_not_for_its_turn() -> None:
    queue: FairQueue[str] = FairQueue()
    queue.configure("slow", rate=2.0, burst=2, weight=1)
    queue.configure("busy", rate=1000.0, burst=1000, weight=1)
    # The burst covers the first two; the third would wait for a token.
    assert not queue.throttled("slow", 0.0)
    queue.put("slow", "a")
    assert not queue.throttled("slow", 0.0)
    queue.put("slow", "b")
    assert queue.throttled("slow", 0.0)
    queue.put("slow", "c")
    assert [item for _, item in queue.take(0.0, 10)] == ["a", "b"]
    assert queue.throttled("slow", 0.0)  # "c" waits, and a fourth behind it
    assert not queue.throttled("slow", 1.0)  # two tokens by then: one for "c", one for the next
    # Many waiting in a namespace with tokens to spare wait for their turn only.
    for i in range(500):
        queue.put("busy", f"r{i}")
    assert not queue.throttled("busy", 0.0)
