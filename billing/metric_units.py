"""The unit each metric is billed in, and the conversion from what metering counts. Actions are
counted one by one; storage is metered in byte-seconds and billed in GB-hours (10^9 bytes for an
hour), rounded half-up to six decimal places. Decimal throughout: no floats near money."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from perdure.platform.core.usage import OPERATIONAL_METRICS, STORAGE_METRICS

STORAGE_QUANTUM = Decimal("0.000001")
_BYTE_SECONDS_PER_GB_HOUR = Decimal(10**9 * 3600)


def unit_of(metric: str) -> str:
    if metric in OPERATIONAL_METRICS:
        return "request"
    return "GB-hour" if metric in STORAGE_METRICS else "action"


def billed_quantity(metric: str, metered: int) -> Decimal:
    if metric in STORAGE_METRICS:
        return (Decimal(metered) / _BYTE_SECONDS_PER_GB_HOUR).quantize(STORAGE_QUANTUM, ROUND_HALF_UP)
    return Decimal(metered)
