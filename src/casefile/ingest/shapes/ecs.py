"""Winlogbeat / Elastic Common Schema documents: `winlog.*`, `event.code`, `host.name`, `@timestamp`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from casefile.ingest.plugins import SHAPES
from casefile.ingest.shapes._common import (
    as_int,
    as_str,
    flatten_dotted,
    flatten_leaves,
    parse_timestamp,
    put,
)
from casefile.models import Event

# winlog.<path> -> the Sigma name of the System field it carries.
_WINLOG_SYSTEM: tuple[tuple[tuple[str, ...], str], ...] = (
    (("event_id",), "EventID"),
    (("channel",), "Channel"),
    (("computer_name",), "Computer"),
    (("provider_name",), "Provider_Name"),
    (("provider_guid",), "Provider_Guid"),
    (("record_id",), "EventRecordID"),
    (("version",), "Version"),
    (("task",), "Task"),
    (("opcode",), "Opcode"),
    (("keywords",), "Keywords"),
    (("process", "pid"), "Execution_ProcessID"),
    (("process", "thread", "id"), "Execution_ThreadID"),
    (("user", "identifier"), "Security_UserID"),
    (("activity_id",), "Correlation_ActivityID"),
    (("related_activity_id",), "Correlation_RelatedActivityID"),
)
# Top-level ECS fields to fall back on when `winlog` lacks the System field.
_ECS_FALLBACK: tuple[tuple[tuple[str, ...], str], ...] = (
    (("event", "code"), "EventID"),
    (("host", "name"), "Computer"),
    (("host", "hostname"), "Computer"),
    (("event", "provider"), "Provider_Name"),
)
_INTS = ("EventID", "EventRecordID", "Version", "Execution_ProcessID", "Execution_ThreadID")


def _get(node: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = node
    for part in path:
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


class EcsShape:
    """Winlogbeat 7/8 output and other ECS documents: System fields get their Sigma names,
    `winlog.event_data`/`winlog.user_data` keys become plain fields, and every other key is kept
    under its dotted ECS name (`event.code`, `host.name`)."""

    name = "ecs"
    priority = 20

    def matches(self, record: dict[str, Any]) -> bool:
        return isinstance(record.get("winlog"), Mapping) or (
            "@timestamp" in record and isinstance(record.get("event"), Mapping)
        )

    def normalise(self, record: dict[str, Any], source_file: str) -> Event:
        winlog = record.get("winlog")
        winlog = winlog if isinstance(winlog, Mapping) else {}
        fields: dict[str, Any] = {}
        for path, name in _WINLOG_SYSTEM:
            value = _get(winlog, path)
            if value is not None:
                fields[name] = value
        for path, name in _ECS_FALLBACK:
            value = _get(record, path)
            if value is not None and name not in fields:
                fields[name] = value
        for name in _INTS:
            if name in fields:
                number = as_int(fields[name])
                if number is not None:
                    fields[name] = number
        event_data = winlog.get("event_data")
        if isinstance(event_data, Mapping):
            for key, value in event_data.items():
                put(fields, key, value, qualifier="EventData")
        user_data = winlog.get("user_data")
        if isinstance(user_data, Mapping):
            flatten_leaves(user_data, fields, qualifier="UserData")
        rest: dict[str, Any] = {}
        flatten_dotted(record, rest)
        for key, value in rest.items():
            if not key.startswith(("winlog.event_data.", "winlog.user_data.")):
                put(fields, key, value, qualifier="ecs")
        return Event(
            timestamp=parse_timestamp(record.get("@timestamp")),
            computer=as_str(fields.get("Computer")),
            channel=as_str(fields.get("Channel")),
            provider=as_str(fields.get("Provider_Name")),
            event_id=as_int(fields.get("EventID")),
            record_id=as_int(fields.get("EventRecordID")),
            source_file=source_file,
            fields=fields,
        )


SHAPES.register(EcsShape.name, EcsShape())
