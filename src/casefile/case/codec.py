"""Conversions between the boundary dataclasses and the case database's rows / JSON columns."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from casefile.attribute.models import (
    Attribution,
    EvidenceItem,
    GroupHypothesis,
    SponsorHypothesis,
)
from casefile.ingest.columnar import column_int
from casefile.models import Detection, DetectionKind, Level, RuleInfo


def _json_default(value: object) -> Any:
    # Evidence values are mostly str/int; anything exotic (bytes, datetimes) is kept as its text form.
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return str(value)


def dumps(value: Any) -> str:
    """Canonical JSON (sorted keys) so that hashes and stored text are stable."""
    return json.dumps(value, sort_keys=True, default=_json_default, ensure_ascii=False)


def to_naive_utc(ts: datetime | None) -> datetime | None:
    """DuckDB TIMESTAMP columns hold naive UTC; aware values are converted, naive ones assumed UTC."""
    if ts is None:
        return None
    if ts.tzinfo is not None:
        ts = ts.astimezone(UTC)
    return ts.replace(tzinfo=None)


def from_naive_utc(ts: datetime | None) -> datetime | None:
    return ts.replace(tzinfo=UTC) if ts is not None else None


def detection_id(det: Detection, evidence_sha256: str | None) -> str:
    """A stable id: the same hit on the same record of the same file always gets the same id."""
    ts = to_naive_utc(det.timestamp)
    key = [
        det.kind.value,
        det.rule.id,
        evidence_sha256 or det.file,
        det.record_id,
        ts.isoformat() if ts else None,
        det.computer,
        dict(det.group),
        det.indicator,
    ]
    # surrogatepass: a lone surrogate (a JSON escape in the evidence) hashes too; valid text is unchanged
    return hashlib.sha256(dumps(key).encode("utf-8", "surrogatepass")).hexdigest()[:32]


DETECTION_COLUMNS = (
    "id",
    "evidence_sha256",
    "kind",
    "rule_id",
    "rule_title",
    "level",
    "rule_status",
    "rule_author",
    "rule_tags",
    "rule_description",
    "rule_references",
    "rule_path",
    "ts",
    "computer",
    "channel",
    "event_id",
    "record_id",
    "file",
    "matched",
    "fields",
    "grp",
    "indicator",
    "source",
)


def detection_row(det: Detection, evidence_sha256: str | None) -> tuple[Any, ...]:
    r = det.rule
    return (
        detection_id(det, evidence_sha256),
        evidence_sha256,
        det.kind.value,
        r.id,
        r.title,
        int(r.level),
        r.status,
        r.author,
        list(r.tags),
        r.description,
        list(r.references),
        r.path,
        to_naive_utc(det.timestamp),
        det.computer,
        det.channel,
        column_int(det.event_id, 32),
        column_int(det.record_id, 64),
        det.file,
        dumps(dict(det.matched)),
        dumps(dict(det.fields)),
        dumps(dict(det.group)),
        det.indicator,
        det.source,
    )


def detection_from_row(row: Mapping[str, Any]) -> Detection:
    rule = RuleInfo(
        id=row["rule_id"],
        title=row["rule_title"],
        level=Level(row["level"]),
        status=row["rule_status"],
        author=row["rule_author"],
        tags=tuple(row["rule_tags"] or ()),
        description=row["rule_description"],
        references=tuple(row["rule_references"] or ()),
        path=row["rule_path"],
    )
    return Detection(
        rule=rule,
        kind=DetectionKind(row["kind"]),
        timestamp=from_naive_utc(row["ts"]),
        computer=row["computer"],
        channel=row["channel"],
        event_id=row["event_id"],
        record_id=row["record_id"],
        file=row["file"],
        matched=json.loads(row["matched"]),
        fields=json.loads(row["fields"]),
        group=json.loads(row["grp"]),
        indicator=row["indicator"],
        source=row["source"],
    )


# --- attribution <-> JSON -------------------------------------------------------------------------


def _item_to_json(item: EvidenceItem) -> dict[str, Any]:
    return {"kind": item.kind, "id": item.id, "name": item.name, "weight": item.weight, "detail": item.detail}


def _item_from_json(d: Mapping[str, Any]) -> EvidenceItem:
    return EvidenceItem(
        kind=str(d["kind"]),
        id=str(d["id"]),
        name=str(d["name"]),
        weight=float(d["weight"]),
        detail=str(d.get("detail", "")),
    )


def attribution_to_json(a: Attribution) -> dict[str, Any]:
    return {
        "groups": [
            {
                "group_id": g.group_id,
                "name": g.name,
                "sponsor": g.sponsor,
                "probability": g.probability,
                "evidence_for": [_item_to_json(i) for i in g.evidence_for],
                "evidence_against": [_item_to_json(i) for i in g.evidence_against],
                "aliases": list(g.aliases),
            }
            for g in a.groups
        ],
        "sponsors": [{"country": s.country, "probability": s.probability} for s in a.sponsors],
        "unknown_probability": a.unknown_probability,
        "kb_version": a.kb_version,
        "unprofiled_techniques": list(a.unprofiled_techniques),
    }


def attribution_from_json(d: Mapping[str, Any]) -> Attribution:
    return Attribution(
        groups=tuple(
            GroupHypothesis(
                group_id=str(g["group_id"]),
                name=str(g["name"]),
                sponsor=g.get("sponsor"),
                probability=float(g["probability"]),
                evidence_for=tuple(_item_from_json(i) for i in g.get("evidence_for", ())),
                evidence_against=tuple(_item_from_json(i) for i in g.get("evidence_against", ())),
                aliases=tuple(g.get("aliases", ())),
            )
            for g in d.get("groups", ())
        ),
        sponsors=tuple(
            SponsorHypothesis(country=str(s["country"]), probability=float(s["probability"]))
            for s in d.get("sponsors", ())
        ),
        unknown_probability=float(d.get("unknown_probability", 1.0)),
        kb_version=d.get("kb_version"),
        unprofiled_techniques=tuple(d.get("unprofiled_techniques", ())),
    )
