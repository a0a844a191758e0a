"""The domain model's own helpers."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

from casefile.models import utc_text


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def test_utc_text_is_isoformat_with_z_for_every_utc_time() -> None:
    rng = random.Random(5)
    for _ in range(20_000):
        ts = datetime(
            rng.randint(1, 9999), rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
            rng.randint(0, 59), rng.randint(0, 59),
            rng.choice([0, rng.randint(1, 999_999), rng.randint(1, 9) * 100_000]), tzinfo=UTC,
        )
        assert utc_text(ts) == _iso(ts)
    assert utc_text(datetime(2022, 7, 15, 8, 30, 0, 500_000, tzinfo=UTC)) == "2022-07-15T08:30:00.500000Z"
    assert utc_text(datetime(2022, 7, 15, 8, 30, tzinfo=UTC)) == "2022-07-15T08:30:00Z"


class _Stamp(datetime):
    pass


def test_utc_text_of_other_times_is_isoformat() -> None:
    for ts in [
        datetime(2022, 7, 15, 8, 30, 1, 7),  # naive
        datetime(2022, 7, 15, 8, 30, tzinfo=timezone(timedelta(hours=2))),
        datetime(2022, 7, 15, 8, 30, tzinfo=timezone(timedelta(0), "GMT")),  # zero offset, not UTC itself
        datetime(2022, 7, 15, 8, 30, tzinfo=timezone(timedelta(hours=5, minutes=30, seconds=15))),
        _Stamp(2022, 7, 15, 8, 30, 0, 1, tzinfo=UTC),
    ]:
        assert utc_text(ts) == _iso(ts), ts
    gmt = timezone(timedelta(0), "GMT")
    assert utc_text(datetime(2022, 7, 15, 8, 30, tzinfo=gmt)) == "2022-07-15T08:30:00Z"
