"""The JSON shape evtx parsers emit: `{"Event": {"System": ..., "EventData": ...}}` with `#attributes`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from casefile.ingest.plugins import SHAPES
from casefile.ingest.shapes._common import as_int, as_str, flatten_leaves, parse_timestamp, put
from casefile.models import Event

# System values that are integers in the schema; forwarded events (WEF) render them as text.
_SYSTEM_INTS = frozenset(
    {"EventID", "Version", "Level", "Task", "Opcode", "EventRecordID", "Execution_ProcessID",
     "Execution_ThreadID", "EventID_Qualifiers"}
)


#: Exact classes of values that are never a mapping (subclasses take the general path).
_LEAVES = frozenset({str, int, float, bool, list, type(None)})


def _is_map(value: Any) -> bool:
    """`isinstance(value, Mapping)`, without the slow ABC check for the JSON values most are."""
    cls = value.__class__
    return cls is dict or (cls not in _LEAVES and isinstance(value, Mapping))


def _system_fields(system: Mapping[str, Any], fields: dict[str, Any]) -> None:
    """`Provider.#attributes.Name` -> `Provider_Name`, `EventID.#text` -> `EventID`, scalars as is."""
    for key, value in system.items():
        cls = value.__class__
        if cls is dict or (cls not in _LEAVES and isinstance(value, Mapping)):
            attrs = value.get("#attributes")
            if attrs is not None and _is_map(attrs):
                for attr, attr_value in attrs.items():
                    fields[f"{key}_{attr}"] = attr_value
            markup = int("#attributes" in value)
            if "#text" in value:
                fields[key] = value["#text"]
                markup += 1
            if len(value) > markup:  # children other than #attributes and #text (rare)
                for child, child_value in value.items():
                    if child not in ("#attributes", "#text"):
                        flatten_leaves(child_value, fields, qualifier=f"System_{key}", name=f"{key}_{child}")
        else:
            fields[key] = value
    for key in _SYSTEM_INTS:
        if key in fields and not isinstance(fields[key], int):
            number = as_int(fields[key])
            if number is not None:
                fields[key] = number


def _event_data_fields(data: Any, fields: dict[str, Any]) -> None:
    """Named `<Data Name="X">` -> X; unnamed `<Data>` -> `Data` (a list when repeated)."""
    if not _is_map(data):
        if data is not None:
            put(fields, "Data", data, qualifier="EventData")
        return
    for key, value in data.items():
        if value.__class__ in _LEAVES and key != "#text":
            # the common case, a named scalar: what the last branch below does, without its type tests
            if key in fields:
                put(fields, key, value, qualifier="EventData")
            else:
                fields[key] = value
        elif key == "#attributes" and _is_map(value):
            for attr, attr_value in value.items():
                put(fields, f"EventData_{attr}", attr_value, qualifier="EventData")
        elif key == "#text":
            put(fields, "Data", value, qualifier="EventData")
        elif _is_map(value) and set(value) <= {"#text", "#attributes"}:
            if "#text" in value:
                put(fields, key, value["#text"], qualifier="EventData")
            flatten_leaves({"#attributes": value.get("#attributes", {})}, fields, qualifier=key)
        elif _is_map(value):
            flatten_leaves(value, fields, qualifier="EventData", name=key)
        else:
            put(fields, key, value, qualifier="EventData")


class EvtxJsonShape:
    """Records from `evtx` (Rust) / `evtx_dump` JSON, as in the SigmaHQ regression `.json` files."""

    name = "evtx-json"
    priority = 10

    def matches(self, record: dict[str, Any]) -> bool:
        event = record.get("Event", record)
        return isinstance(event, Mapping) and isinstance(event.get("System"), Mapping)

    def normalise(self, record: dict[str, Any], source_file: str) -> Event:
        event = record.get("Event", record)
        fields: dict[str, Any] = {}
        _system_fields(event["System"], fields)
        for section, body in event.items():
            if section in ("System", "#attributes"):
                continue
            if section == "EventData":
                _event_data_fields(body, fields)
            elif section == "RenderingInfo":
                # Display strings of System values (Level "Warning", Task names): never let them
                # pass for the System fields themselves.
                rendered: dict[str, Any] = {}
                flatten_leaves(body, rendered, qualifier=section, name=section)
                for key, value in rendered.items():
                    put(fields, f"RenderingInfo_{key}", value, qualifier=section)
            else:  # UserData, ProcessingErrorData, ...: leaves by leaf name
                flatten_leaves(body, fields, qualifier=section, name=section)
        return Event(
            timestamp=parse_timestamp(fields.get("TimeCreated_SystemTime")),
            computer=as_str(fields.get("Computer")),
            channel=as_str(fields.get("Channel")),
            provider=as_str(fields.get("Provider_Name")),
            event_id=as_int(fields.get("EventID")),
            record_id=as_int(fields.get("EventRecordID")),
            source_file=source_file,
            fields=fields,
        )


SHAPES.register(EvtxJsonShape.name, EvtxJsonShape())
