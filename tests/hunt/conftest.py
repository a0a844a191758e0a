"""Helpers for hunt tests: rules from inline YAML, events from inline dicts."""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from casefile.hunt import RuleSet, load_rules
from casefile.models import Event

#: One Sysmon/Security process-creation rule, for tests of the CLI and of start-up.
WHOAMI_RULE = r"""title: Whoami
id: 0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a01
author: Tester
logsource: {product: windows, category: process_creation}
detection:
    sel:
        Image|endswith: '\whoami.exe'
    condition: sel
level: medium
"""



def _make_event(fields: Mapping[str, Any], *, channel: str | None = None, event_id: int | None = None,
               record_id: int = 1, ts: datetime | None = None) -> Event:
    """An Event as ingest would build it (System coordinates mirrored into fields when given)."""
    all_fields = dict(fields)
    if channel is not None:
        all_fields.setdefault("Channel", channel)
    if event_id is not None:
        all_fields.setdefault("EventID", event_id)
    return Event(
        timestamp=ts or datetime(2024, 1, 1, tzinfo=UTC),
        computer="host1",
        channel=channel,
        provider=None,
        event_id=event_id,
        record_id=record_id,
        source_file="inline.evtx",
        fields=all_fields,
    )


RuleFactory = Callable[..., RuleSet]
EventFactory = Callable[..., Event]


@pytest.fixture
def make_event() -> EventFactory:
    """Build an Event from a dict of fields (see `_make_event`)."""
    return _make_event


@pytest.fixture
def rules_from(tmp_path: Path) -> RuleFactory:
    """Write YAML documents to files under tmp_path and load them with load_rules."""
    counter = iter(range(10_000))

    def factory(*docs: str, placeholders: Mapping[str, list[str]] | None = None) -> RuleSet:
        paths = []
        for doc in docs:
            p = tmp_path / f"rule_{next(counter)}.yml"
            p.write_text(textwrap.dedent(doc), encoding="utf-8")
            paths.append(p)
        return load_rules(paths, placeholders=placeholders)

    return factory
