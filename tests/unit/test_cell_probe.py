"""`perdure cell probe`: a container is healthy only on the latest, fresh, healthy word of its own
cell process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from perdure.platform.cli.cell_commands import probe_verdict, process_host
from perdure.platform.stores.control_store import ProcessReport

NOW = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=30)


def report(
    process: str, age: float, *, healthy: bool = True, unreachable: list[str] | None = None
) -> ProcessReport:
    return ProcessReport(
        process=process,
        cell="cell-1",
        version="0.1.0",
        healthy=healthy,
        error_rate=0.0,
        lag=0,
        reported_at=NOW - timedelta(seconds=age),
        unreachable=unreachable or [],
    )


def test_the_host_is_read_from_the_process_id() -> None:
    assert process_host("cell-1/0f3a9c2b7d1e:7") == "0f3a9c2b7d1e"
    assert process_host("cell-1/db-2.example:12345") == "db-2.example"


def test_a_fresh_healthy_report_of_this_host_passes() -> None:
    healthy, reason = probe_verdict([report("cell-1/a:7", 3)], "a", NOW, WINDOW)
    assert healthy and "cell-1/a:7" in reason


def test_another_hosts_report_does_not_count() -> None:
    healthy, reason = probe_verdict([report("cell-1/b:7", 1)], "a", NOW, WINDOW)
    assert not healthy and "no process on a" in reason


def test_a_stale_report_fails() -> None:
    healthy, reason = probe_verdict([report("cell-1/a:7", 31)], "a", NOW, WINDOW)
    assert not healthy and "31 s ago" in reason


def test_an_unhealthy_report_fails_naming_what_it_cannot_reach() -> None:
    healthy, reason = probe_verdict(
        [report("cell-1/a:7", 1, healthy=False, unreachable=["kafka"])], "a", NOW, WINDOW
    )
    assert not healthy and "kafka" in reason


def test_only_the_latest_process_of_the_host_counts() -> None:
    # A restarted process (new pid, same container) that says it is unhealthy is not covered by the
    # healthy word its predecessor gave a moment before it died.
    reports = [report("cell-1/a:7", 10), report("cell-1/a:9", 1, healthy=False)]
    assert probe_verdict(reports, "a", NOW, WINDOW)[0] is False
    reports = [report("cell-1/a:7", 10, healthy=False), report("cell-1/a:9", 1)]
    assert probe_verdict(reports, "a", NOW, WINDOW)[0] is True
