"""Flat exports: EventData fields at the top level beside EventID/Channel/Hostname (NXLog, OTRF)."""

from __future__ import annotations

from typing import Any

from casefile.ingest.plugins import SHAPES
from casefile.ingest.shapes._common import as_int, as_str, flatten_dotted, parse_timestamp
from casefile.models import Event

# Sigma name -> the keys that carry it in common flat exports, first found wins. The original
# keys stay in the record too; the Sigma name is only added when the record lacks it.
_ALIASES: dict[str, tuple[str, ...]] = {
    "EventID": ("EventID", "EventId", "event_id", "EventCode", "Id", "event.code"),
    "Channel": ("Channel", "LogName", "channel", "log_name"),
    "Computer": ("Computer", "Hostname", "ComputerName", "MachineName", "hostname", "host.name", "host"),
    "Provider_Name": ("Provider_Name", "SourceName", "ProviderName", "Provider", "source_name"),
    "Provider_Guid": ("Provider_Guid", "ProviderGuid", "ProviderId"),
    "EventRecordID": ("EventRecordID", "RecordNumber", "RecordId", "record_id"),
    "Execution_ProcessID": ("Execution_ProcessID", "ExecutionProcessID"),
    "Security_UserID": ("Security_UserID", "UserID", "UserId"),
}
# The event's own creation time first; `@timestamp` is when the shipper saw it (seconds later);
# NXLog's `EventTime` is local time without an offset, so it is the last resort.
_TIME_KEYS = ("TimeCreated", "UtcTime", "@timestamp", "TimeGenerated", "timestamp", "Timestamp", "EventTime")
_INTS = ("EventID", "EventRecordID", "Execution_ProcessID")


class FlatShape:
    """The catch-all shape: top-level keys are the fields (nested objects as dotted names)."""

    name = "flat"
    priority = 100

    def matches(self, record: dict[str, Any]) -> bool:
        return True

    def normalise(self, record: dict[str, Any], source_file: str) -> Event:
        fields: dict[str, Any] = {}
        flatten_dotted(record, fields)
        for canonical, keys in _ALIASES.items():
            if canonical in fields:
                continue
            for key in keys:
                value = fields.get(key)
                if value is not None and not isinstance(value, dict | list):
                    fields[canonical] = value
                    break
        for name in _INTS:
            if name in fields:
                number = as_int(fields[name])
                if number is not None:
                    fields[name] = number
        timestamp = None
        for key in _TIME_KEYS:
            timestamp = parse_timestamp(fields.get(key))
            if timestamp is not None:
                break
        return Event(
            timestamp=timestamp,
            computer=as_str(fields.get("Computer")),
            channel=as_str(fields.get("Channel")),
            provider=as_str(fields.get("Provider_Name")),
            event_id=as_int(fields.get("EventID")),
            record_id=as_int(fields.get("EventRecordID")),
            source_file=source_file,
            fields=fields,
        )


SHAPES.register(FlatShape.name, FlatShape())
