"""The case timeline: every detection in time order with host, account, process and ATT&CK phase.

Exporters (CSV, JSONL, Timesketch JSONL) are registered by name in `TIMELINE_FORMATS`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from casefile.case.clusters import Cluster, account_of, command_of, parent_of, process_of
from casefile.case.store import Case, StoredDetection, TechniqueInfo
from casefile.models import utc_text
from casefile.registry import Registry


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One row of the timeline."""

    detection_id: str
    timestamp: datetime | None
    host: str | None
    account: str | None
    process: str | None
    parent_process: str | None
    command_line: str | None
    tactics: tuple[str, ...]
    techniques: tuple[str, ...]
    rule_id: str
    rule_title: str
    level: str
    kind: str
    channel: str | None
    event_id: int | None
    record_id: int | None
    file: str | None
    cluster: str | None

    def to_record(self) -> dict[str, Any]:
        return {
            "detection_id": self.detection_id,
            "timestamp": _iso(self.timestamp),
            "host": self.host,
            "account": self.account,
            "process": self.process,
            "parent_process": self.parent_process,
            "command_line": self.command_line,
            "tactics": list(self.tactics),
            "techniques": list(self.techniques),
            "rule_id": self.rule_id,
            "rule_title": self.rule_title,
            "level": self.level,
            "kind": self.kind,
            "channel": self.channel,
            "event_id": self.event_id,
            "record_id": self.record_id,
            "file": self.file,
            "cluster": self.cluster,
        }


def _iso(ts: datetime | None) -> str | None:
    return utc_text(ts) if ts else None


def tactics_for(
    tags_tactics: Sequence[str], techniques: Sequence[str], catalog: Mapping[str, TechniqueInfo]
) -> tuple[str, ...]:
    """The rule's tactic tags, else the tactics the knowledge base gives its techniques."""
    if tags_tactics:
        return tuple(tags_tactics)
    out: list[str] = []
    for tid in techniques:
        info = catalog.get(tid) or catalog.get(tid.split(".")[0])
        for t in info.tactics if info else ():
            if t not in out:
                out.append(t)
    return tuple(out)


def technique_tactics(
    tid: str, tags_tactics: Sequence[str], catalog: Mapping[str, TechniqueInfo]
) -> tuple[str, ...]:
    """The matrix columns one technique of a rule belongs in.

    The rule's tactic tags that the knowledge base confirms for the technique; if none match (or the
    rule has none), the technique's own tactics; without a knowledge base, the rule's tags as given.
    """
    info = catalog.get(tid) or catalog.get(tid.split(".")[0])
    if info is None:
        return tuple(tags_tactics)
    return tuple(t for t in tags_tactics if t in info.tactics) or info.tactics


def entries_from(
    detections: Iterable[StoredDetection],
    *,
    catalog: Mapping[str, TechniqueInfo] | None = None,
    clusters: Sequence[Cluster] = (),
) -> list[TimelineEntry]:
    """Timeline rows for stored detections (kept in the order given: the case gives time order)."""
    cat = catalog or {}
    cluster_of = {d: c.id for c in clusters for d in c.detection_ids}
    out = []
    for sd in detections:
        d = sd.detection
        out.append(
            TimelineEntry(
                detection_id=sd.id,
                timestamp=d.timestamp,
                host=d.computer,
                account=account_of(d),
                process=process_of(d),
                parent_process=parent_of(d),
                command_line=command_of(d),
                tactics=tactics_for(d.rule.tactics, d.rule.techniques, cat),
                techniques=d.rule.techniques,
                rule_id=d.rule.id,
                rule_title=d.rule.title,
                level=str(d.rule.level),
                kind=d.kind.value,
                channel=d.channel,
                event_id=d.event_id,
                record_id=d.record_id,
                file=d.file,
                cluster=cluster_of.get(sd.id),
            )
        )
    return out


def build_timeline(case: Case) -> list[TimelineEntry]:
    """The case's timeline: detections in time order (untimed last)."""
    return entries_from(case.detections(), catalog=case.techniques(), clusters=case.clusters())


# --- exporters ------------------------------------------------------------------------------------

TimelineWriter = Callable[[Sequence[TimelineEntry], TextIO], None]
TIMELINE_FORMATS: Registry[TimelineWriter] = Registry("timeline format")

CSV_COLUMNS = (
    "timestamp",
    "host",
    "account",
    "process",
    "parent_process",
    "command_line",
    "tactics",
    "techniques",
    "rule_title",
    "level",
    "rule_id",
    "kind",
    "channel",
    "event_id",
    "record_id",
    "file",
    "cluster",
    "detection_id",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    text = ";".join(value) if isinstance(value, list | tuple) else str(value)
    # Attacker-written text must not become a spreadsheet formula when an analyst opens the CSV.
    return "'" + text if text.startswith(_FORMULA_START) else text


def write_csv(entries: Sequence[TimelineEntry], out: TextIO) -> None:
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for e in entries:
        rec = e.to_record()
        w.writerow([_csv_cell(rec[c]) for c in CSV_COLUMNS])


def write_jsonl(entries: Sequence[TimelineEntry], out: TextIO) -> None:
    for e in entries:
        out.write(json.dumps(e.to_record(), ensure_ascii=False, sort_keys=True) + "\n")


def timesketch_record(e: TimelineEntry) -> dict[str, Any] | None:
    """Timesketch's JSONL import shape: `message`, `datetime` (ISO 8601), `timestamp_desc` (+ attributes)."""
    if e.timestamp is None:
        return None  # Timesketch rejects rows without a time; they stay in the CSV/JSONL exports
    parts = [f"[{e.level}] {e.rule_title}"]
    if e.host:
        parts.append(f"on {e.host}")
    if e.account:
        parts.append(f"as {e.account}")
    if e.command_line:
        parts.append(f": {e.command_line}")
    elif e.process:
        parts.append(f": {e.process}")
    rec = {
        "message": " ".join(parts),
        "datetime": e.timestamp.isoformat(),
        "timestamp": int(e.timestamp.timestamp() * 1_000_000),
        "timestamp_desc": "Event Recorded",
        "data_type": "casefile:detection",
    }
    for k, v in e.to_record().items():
        if k != "timestamp" and v not in (None, [], ""):
            rec[k] = ",".join(v) if isinstance(v, list) else v
    rec["tag"] = [f"attack.{t}" for t in e.tactics] + [t for t in e.techniques]
    return rec


def write_timesketch(entries: Sequence[TimelineEntry], out: TextIO) -> None:
    for e in entries:
        rec = timesketch_record(e)
        if rec is not None:
            out.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")


TIMELINE_FORMATS.register("csv", write_csv)
TIMELINE_FORMATS.register("jsonl", write_jsonl)
TIMELINE_FORMATS.register("timesketch", write_timesketch)
