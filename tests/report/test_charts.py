"""Chart geometry of report.html, computed in Python before rendering."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from casefile.case.timeline import TimelineEntry
from casefile.report.html import PER_BUCKET, _timeline_chart, json_for_script


def entry(i: int, host: str, minutes: float, level: str = "high") -> TimelineEntry:
    return TimelineEntry(
        f"d{i}",
        datetime(2022, 7, 15, tzinfo=UTC) + timedelta(minutes=minutes),
        host,
        None,
        None,
        None,
        None,
        (),
        (),
        "r",
        f"rule {i % 3}",
        level,
        "sigma",
        None,
        None,
        None,
        None,
        None,
    )


def test_busy_moment_is_bounded_and_says_how_many_more() -> None:
    entries = [entry(i, "H1", 0, "critical" if i == 50 else "low") for i in range(100)]
    entries += [entry(100, "H1", 600), entry(101, "H2", 300)]
    chart = _timeline_chart(entries)
    assert [lane.host for lane in chart.lanes] == ["H1", "H2"] and chart.lanes[0].count == 101
    busy = [d for d in chart.dots if d.x == chart.left]
    assert len(busy) == PER_BUCKET
    assert busy[-1].title.startswith("96 more detections here: rule 0, rule 1, rule 2")
    assert busy[-1].color == "#c0122c" and busy[-1].r > busy[0].r  # the worst level of the hidden ones
    assert len(chart.dots) == PER_BUCKET + 2
    assert max(d.x for d in chart.dots) == chart.width - 70  # the latest hit at the right edge


def test_json_for_script_cannot_close_the_script_element() -> None:
    text = str(json_for_script({"c": "</script><script>alert(1)</script>&\u2028"}))
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert (
        text
        == '{"c": "\\u003c/script\\u003e\\u003cscript\\u003ealert(1)\\u003c/script\\u003e\\u0026\\u2028"}'
    )
