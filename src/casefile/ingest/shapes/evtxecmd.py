"""EvtxECmd (Eric Zimmerman, KAPE) output rows: JSON lines or CSV, the record XML in `Payload`.

A row carries the System values as columns (`EventId`, `Channel`, `Provider`, `ProcessId` is
the *executing* process) and the event data as a JSON string in `Payload`:
`{"EventData": {"Data": [{"@Name": "TargetUserName", "#text": "Sam"}, ...]}}` (XML turned into
JSON with `@` for attributes). The data fields get their Sigma names; every column is kept, under
its own name unless an event-data field took it (then `EvtxECmd_<column>`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from casefile.ingest.plugins import SHAPES
from casefile.ingest.shapes._common import as_int, as_str, parse_timestamp, put
from casefile.models import Event

# EvtxECmd column -> Sigma name of the System field it carries.
_SYSTEM = (
    ("EventId", "EventID"),
    ("Channel", "Channel"),
    ("Computer", "Computer"),
    ("Provider", "Provider_Name"),
    ("EventRecordId", "EventRecordID"),
    ("ProcessId", "Execution_ProcessID"),
    ("ThreadId", "Execution_ThreadID"),
    ("UserId", "Security_UserID"),
)
_SYSTEM_COLUMNS = dict(_SYSTEM)
_INTS = ("EventID", "EventRecordID", "Execution_ProcessID", "Execution_ThreadID")
_MARKERS = frozenset({"MapDescription", "PayloadData1", "ChunkNumber", "ExecutableInfo"})


def _leaves(node: Any, fields: dict[str, Any], name: str, qualifier: str) -> None:
    """XML-as-JSON (Newtonsoft style: `@attr`, `#text`) leaves under their leaf names."""
    if isinstance(node, Mapping):
        for key, child in node.items():
            if key.startswith("@xmlns"):
                continue
            if key == "#text":
                put(fields, name, child, qualifier=qualifier)
            else:
                _leaves(child, fields, key.removeprefix("@"), qualifier)
    elif isinstance(node, list):
        for item in node:
            _leaves(item, fields, name, qualifier)
    else:
        put(fields, name, node, qualifier=qualifier)


def _event_data(data: Any, fields: dict[str, Any]) -> None:
    """`Data` items with `@Name` become that field; unnamed items gather in the list `Data`."""
    items = data if isinstance(data, list) else [data]
    unnamed: list[Any] = []
    for item in items:
        if isinstance(item, Mapping) and "@Name" in item:
            put(fields, str(item["@Name"]), item.get("#text"), qualifier="EventData")
        elif isinstance(item, Mapping):
            unnamed.append(item.get("#text"))
        else:
            unnamed.append(item)
    if unnamed:
        put(fields, "Data", unnamed if len(unnamed) > 1 else unnamed[0], qualifier="EventData")


def _payload_fields(payload: Any, fields: dict[str, Any]) -> None:
    if not isinstance(payload, str) or not payload.strip():
        return
    document = json.loads(payload)  # ValueError: the record is reported as not normalisable
    if not isinstance(document, Mapping):
        return
    for section, body in document.items():
        if section == "EventData" and isinstance(body, Mapping):
            for key, value in body.items():
                if key == "Data":
                    _event_data(value, fields)
                else:
                    _leaves(value, fields, key.removeprefix("@"), "EventData")
        else:
            _leaves(body, fields, section, section)


class EvtxECmdShape:
    """Rows of EvtxECmd's `--json` or `--csv` output."""

    name = "evtxecmd"
    priority = 15

    def matches(self, record: dict[str, Any]) -> bool:
        return "Payload" in record and "EventId" in record and not _MARKERS.isdisjoint(record)

    def normalise(self, record: dict[str, Any], source_file: str) -> Event:
        fields: dict[str, Any] = {}
        for column, name in _SYSTEM:
            value = record.get(column)
            if value is not None and value != "":
                fields[name] = value
        for name in _INTS:
            number = as_int(fields.get(name))
            if number is not None:
                fields[name] = number
        _payload_fields(record.get("Payload"), fields)
        for column, value in record.items():
            if column in _SYSTEM_COLUMNS:
                # Kept, but never under a name an event-data field could mean (`ProcessId` here is
                # the logging process, not Sysmon's ProcessId).
                if _SYSTEM_COLUMNS[column] != column:
                    put(fields, f"EvtxECmd_{column}", value, qualifier="EvtxECmd")
            else:
                put(fields, column, value, qualifier="EvtxECmd")
        return Event(
            timestamp=parse_timestamp(record.get("TimeCreated")),
            computer=as_str(fields.get("Computer")),
            channel=as_str(fields.get("Channel")),
            provider=as_str(fields.get("Provider_Name")),
            event_id=as_int(fields.get("EventID")),
            record_id=as_int(fields.get("EventRecordID")),
            source_file=source_file,
            fields=fields,
        )


SHAPES.register(EvtxECmdShape.name, EvtxECmdShape())
