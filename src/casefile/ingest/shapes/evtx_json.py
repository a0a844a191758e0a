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
    cls = type(value)
    return cls is dict or (cls not in _LEAVES and isinstance(value, Mapping))


#: `f"{key}_{attr}"` per System element and attribute: a few dozen names, made once. Bounded, since crafted
#: records could name any number of elements and attributes.
_ATTR_NAMES: dict[str, dict[str, str]] = {}
_MAX_NAMES = 64


def _system_fields(system: Mapping[str, Any], fields: dict[str, Any]) -> None:
    """`Provider.#attributes.Name` -> `Provider_Name`, `EventID.#text` -> `EventID`, scalars as is."""
    for key, value in system.items():
        cls = type(value)
        if cls is dict or (cls not in _LEAVES and isinstance(value, Mapping)):
            attrs = value.get("#attributes")
            if attrs is not None and _is_map(attrs):
                names = _ATTR_NAMES.get(key)
                if names is None:
                    names = {}
                    if len(_ATTR_NAMES) < _MAX_NAMES:
                        _ATTR_NAMES[key] = names
                for attr, attr_value in attrs.items():
                    name = names.get(attr)
                    if name is None:
                        name = f"{key}_{attr}"
                        if len(names) < _MAX_NAMES:
                            names[attr] = name
                    fields[name] = attr_value
                if len(value) == 1:  # attributes only (Provider, TimeCreated, Execution): most elements
                    continue
                markup = 1
            else:
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
    system_ints(fields)


def system_ints(fields: dict[str, Any]) -> None:
    """The System fields that are integers in the schema, as integers where a forwarded event (WEF) wrote
    them as text; run on the System fields alone, before any other section's."""
    for key in _SYSTEM_INTS:
        number = fields.get(key)
        if number is not None and type(number) is not int and not isinstance(number, int):
            number = as_int(number)
            if number is not None:
                fields[key] = number


def _event_data_fields(data: Any, fields: dict[str, Any]) -> None:
    """Named `<Data Name="X">` -> X; unnamed `<Data>` -> `Data` (a list when repeated)."""
    if not _is_map(data):
        if data is not None:
            put(fields, "Data", data, qualifier="EventData")
        return
    for key, value in data.items():
        if type(value) in _LEAVES and key != "#text":
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
        return self.event(self.fields(record), source_file)

    @staticmethod
    def fields(record: dict[str, Any]) -> dict[str, Any]:
        """The record's flattened fields; raises as `normalise` does on a record it defeats."""
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
        return fields

    @staticmethod
    def channel_and_id(fields: Mapping[str, Any]) -> tuple[str | None, int | None]:
        """`Event.channel` and `Event.event_id` of a record's `fields`, without the rest of its Event."""
        return as_str(fields.get("Channel")), as_int(fields.get("EventID"))

    @staticmethod
    def event(fields: dict[str, Any], source_file: str) -> Event:
        """The Event of a record's `fields`. Never raises: the hunt builds it only for records a rule
        might match, and a record must fail (or not) the same way whether it is built or not."""
        channel, event_id = EvtxJsonShape.channel_and_id(fields)
        return Event(  # by position, in Event's order: a third of the call's cost by keyword
            parse_timestamp(fields.get("TimeCreated_SystemTime")),  # timestamp
            as_str(fields.get("Computer")),  # computer
            channel,
            as_str(fields.get("Provider_Name")),  # provider
            event_id,
            as_int(fields.get("EventRecordID")),  # record_id
            source_file,
            fields,
        )


SHAPES.register(EvtxJsonShape.name, EvtxJsonShape())
