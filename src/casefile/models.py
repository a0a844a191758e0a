"""The domain model at the boundaries between stages: events, warnings, rules and detections.

Raw dicts stop at the parsing boundary; everything after ingest speaks in these types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from typing import Any

import orjson

from casefile.errors import CasefileError
from casefile.pickling import by_fields

#: STIX 2.1 (3.1): an object type's name is 3-250 characters of a-z, 0-9 and hyphen (the server and the
#: importers refuse others).
STIX_TYPE = re.compile(r"[a-z0-9-]{3,250}")


def utc_text(ts: datetime) -> str:
    """A time as casefile writes it: `isoformat`'s text (microseconds only when there are any), `Z` for
    UTC: `2022-07-15T08:30:00.500000Z`.

    orjson writes a UTC `datetime` the same way about three times faster than `isoformat` and `replace`
    (0.25 against 0.77 us; one per detection written); other times and `datetime` subclasses take
    `isoformat`.
    """
    if type(ts) is datetime and ts.tzinfo is UTC:
        return orjson.dumps(ts, option=orjson.OPT_UTC_Z)[1:-1].decode()
    return ts.isoformat().replace("+00:00", "Z")


class Level(IntEnum):
    """Sigma rule level, ordered so that `--min-level` is a comparison."""

    INFORMATIONAL = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4

    @classmethod
    def parse(cls, value: str | None) -> Level:
        if value is None:
            return cls.INFORMATIONAL
        try:
            return cls[value.strip().upper()]
        except KeyError:
            raise CasefileError(
                f"unknown level {value!r}; use one of {', '.join(m.name.lower() for m in cls)}"
            ) from None

    def __str__(self) -> str:
        return self.name.lower()


@by_fields
@dataclass(slots=True)
class Event:
    """One normalised log record.

    `fields` holds the flattened data fields under their Sigma names: the EventData/UserData names
    (`Image`, `CommandLine`, ...) plus the System fields (`EventID`, `Channel`, `Computer`,
    `Provider_Name`, ...). Values keep their parsed type (str, int, float, bool, None, list).

    Treat it as a value: nothing changes one once made. It is not frozen because a frozen dataclass's
    `__init__` sets each field through `object.__setattr__` (0.75 against 0.32 us for this one), and the
    hunt makes one for every record a rule might match; its mappings made it unhashable anyway.
    """

    timestamp: datetime | None  # timezone-aware UTC
    computer: str | None
    channel: str | None
    provider: str | None
    event_id: int | None
    record_id: int | None
    source_file: str
    fields: Mapping[str, Any]


@by_fields
@dataclass(frozen=True, slots=True)
class IngestWarning:
    """A damaged file or record that was skipped; counted and reported, never silent."""

    file: str
    reason: str
    record: int | None = None

    def __str__(self) -> str:
        where = f"{self.file} (record {self.record})" if self.record is not None else self.file
        return f"{where}: {self.reason}"


class DetectionKind(StrEnum):
    SIGMA = "sigma"
    CORRELATION = "correlation"
    IOC = "ioc"
    YARA = "yara"


_TECHNIQUE_TAG = re.compile(r"^attack\.(t\d{4}(?:\.\d{3})?)$", re.IGNORECASE)
_SOFTWARE_TAG = re.compile(r"^attack\.(s\d{4})$", re.IGNORECASE)
_GROUP_TAG = re.compile(r"^attack\.(g\d{4})$", re.IGNORECASE)
_TACTICS = frozenset(
    {
        "reconnaissance", "resource-development", "initial-access", "execution", "persistence",
        "privilege-escalation", "defense-evasion", "credential-access", "discovery", "lateral-movement",
        "collection", "command-and-control", "exfiltration", "impact",
    }
)


def _tag_ids(tags: tuple[str, ...], pattern: re.Pattern[str]) -> tuple[str, ...]:
    out: list[str] = []
    for t in tags:
        m = pattern.match(t)
        if m and m.group(1).upper() not in out:
            out.append(m.group(1).upper())
    return tuple(out)


@by_fields
@dataclass(frozen=True, slots=True)
class RuleInfo:
    """What a detection needs to say about the rule that produced it (DRL requires the author)."""

    id: str
    title: str
    level: Level
    status: str | None
    author: str | None
    tags: tuple[str, ...] = ()
    description: str | None = None
    references: tuple[str, ...] = ()
    path: str | None = None

    @property
    def techniques(self) -> tuple[str, ...]:
        """ATT&CK technique ids from `attack.tNNNN[.NNN]` tags, upper-cased (T1059.001)."""
        return _tag_ids(self.tags, _TECHNIQUE_TAG)

    @property
    def software(self) -> tuple[str, ...]:
        """ATT&CK software ids from `attack.sNNNN` tags (S0002)."""
        return _tag_ids(self.tags, _SOFTWARE_TAG)

    @property
    def groups(self) -> tuple[str, ...]:
        """ATT&CK group ids from `attack.gNNNN` tags (G0049)."""
        return _tag_ids(self.tags, _GROUP_TAG)

    @property
    def tactics(self) -> tuple[str, ...]:
        """ATT&CK tactic short names from tags such as `attack.lateral-movement`."""
        out: list[str] = []
        for t in self.tags:
            name = t.lower().removeprefix("attack.").replace("_", "-")
            if t.lower().startswith("attack.") and name in _TACTICS and name not in out:
                out.append(name)
        return tuple(out)


@by_fields
@dataclass(slots=True)
class Detection:
    """One rule (or indicator) hit on one event, or one correlation hit on a group of events.

    A value like `Event`, and not frozen for the same reason (1.34 against 0.50 us to make one).

    `matched` holds the event fields the rule's condition tested and found true (field -> value);
    `fields` holds every field of the matched event, for timelines and clustering.
    For a correlation, the event coordinates are those of the last event that completed it and
    `group` holds the group-by values.
    """

    rule: RuleInfo
    kind: DetectionKind
    timestamp: datetime | None
    computer: str | None
    channel: str | None
    event_id: int | None
    record_id: int | None
    file: str | None
    matched: Mapping[str, Any] = field(default_factory=dict)
    fields: Mapping[str, Any] = field(default_factory=dict)
    group: Mapping[str, Any] = field(default_factory=dict)
    indicator: str | None = None  # for IOC hits: the indicator value and
    source: str | None = None  # where it came from (feed / bundle)

    def to_record(self) -> dict[str, Any]:
        """The flat JSON shape of `casefile hunt --format jsonl` (one detection per line):
        `rule_record()`'s keys, then `hit_record()`'s."""
        record = self.rule_record()
        record.update(self.hit_record())
        return record

    def rule_record(self) -> dict[str, Any]:
        """The keys of `to_record` that depend only on the rule and the kind (first in a record)."""
        return {
            "rule_id": self.rule.id,
            "rule_title": self.rule.title,
            "level": str(self.rule.level),
            "status": self.rule.status,
            "author": self.rule.author,
            "tags": list(self.rule.tags),
            "kind": self.kind.value,
        }

    def hit_record(self) -> dict[str, Any]:
        """The keys of `to_record` that describe this hit (last in a record)."""
        return {
            "timestamp": utc_text(self.timestamp) if self.timestamp else None,
            "computer": self.computer,
            "channel": self.channel,
            "event_id": self.event_id,
            "record_id": self.record_id,
            "file": self.file,
            "matched": dict(self.matched),
            "group": dict(self.group),
            "indicator": self.indicator,
            "source": self.source,
        }

