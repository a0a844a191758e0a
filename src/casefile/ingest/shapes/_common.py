"""Value helpers shared by the shape normalisers: timestamps, integers, flattening."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

# More than six fractional digits (EVTX gives 100 ns ticks) is cut to microseconds, which is
# all `datetime` holds; anything after the digits (Z, +hh:mm) is kept.
_LONG_FRACTION = re.compile(r"(\.\d{6})\d+")
# PowerShell's ConvertTo-Json writes DateTime as "/Date(1600000000000)/" (epoch milliseconds).
_MS_DATE = re.compile(r"^/Date\((-?\d+)(?:[+-]\d{4})?\)/$")


def parse_timestamp(value: Any) -> datetime | None:
    """An ISO-8601-ish string or epoch number as a UTC datetime; None when it is not one.

    A timestamp without an offset is taken as UTC: the shapes only feed this fields that log
    producers write in UTC (SystemTime, @timestamp, Sysmon UtcTime).
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        try:  # an integer of 400 digits overflows the division already
            return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, UTC)  # millis vs seconds
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    # EVTX's own form (`2022-07-15T08:12:01.299004Z`: one dot, six digits after it) holds no long fraction,
    # which the search would spend longer to tell than `fromisoformat` takes to read it.
    evtx_form = len(value) == 27 and value[19] == "." and value[26] == "Z" and value.find(".", 0, 19) < 0
    if not evtx_form and _LONG_FRACTION.search(value) is not None:
        return _parse_text(value)
    try:
        # The common case first (a sizeable part of normalising a record): ISO 8601 as EVTX writes it.
        # Without a long fraction to cut, what `fromisoformat` takes as it stands `_parse_text` reads as
        # the same instant, and about five times slower.
        ts = datetime.fromisoformat(value)
    except ValueError:
        return _parse_text(value)
    return _as_utc(ts)


def _parse_text(value: str) -> datetime | None:
    """`parse_timestamp` of a string: epoch-millisecond dates, padding, long fractions, a " UTC" suffix."""
    ms = _MS_DATE.match(value.strip())
    if ms:
        try:
            seconds = int(ms.group(1)) / 1000  # always milliseconds
        except OverflowError:  # hundreds of digits
            return None
        return parse_timestamp(seconds)
    text = _LONG_FRACTION.sub(r"\1", value.strip())
    if text.endswith(" UTC"):
        text = text[:-4]
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        return None
    return _as_utc(ts)


def _as_utc(ts: datetime) -> datetime | None:
    """`ts` in UTC (naive taken as UTC); None when UTC falls outside the years 1-9999 that `datetime` holds
    (`0001-01-01T00:30:00+01:00`): such a record keeps its fields and has no timestamp."""
    if ts.tzinfo is UTC:  # (`fromisoformat` of a `Z` time): already so
        return ts
    if ts.tzinfo is None:
        return ts.replace(tzinfo=UTC)
    try:
        return ts.astimezone(UTC)
    except OverflowError:
        return None


def as_int(value: Any) -> int | None:
    """An int from an int or a decimal/hex string (forwarded events carry System ints as text); None for
    anything else, and for text of an int too long to write in decimal (`sys.get_int_max_str_digits`)."""
    if type(value) is int:  # the common case, before the slower isinstance tests
        return value  # type: ignore[no-any-return]
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if not text.lower().startswith("0x"):
                return int(text)  # refuses more digits than sys.get_int_max_str_digits() (ValueError)
            number = int(text, 16)  # hex has no such limit, but the int must still be writable in decimal
        except ValueError:
            return None
        limit = sys.get_int_max_str_digits()  # 0: no limit
        # 3 bits stay under one decimal digit (log2 10 = 3.32): a value within this bound is writable
        return None if limit and number.bit_length() > 3 * limit else number
    return None


def as_str(value: Any) -> str | None:
    """A non-empty string form of a scalar, None for null/empty/containers."""
    if type(value) is str:  # the common case, before the slower isinstance tests
        return value or None  # type: ignore[no-any-return]
    if value is None or isinstance(value, dict | list):
        return None
    try:
        text = value if isinstance(value, str) else str(value)
    except ValueError:  # an integer of more digits than Python writes (sys.get_int_max_str_digits)
        return None
    return text or None


def put(fields: dict[str, Any], name: str, value: Any, *, qualifier: str) -> None:
    """Set `fields[name]`, or `fields[qualifier_name]` when the name is already taken.

    Nothing is overwritten and nothing dropped: a colliding field keeps its value under a name
    that says where it came from (`UserData_Channel`, `RenderingInfo_Level`).
    """
    if name not in fields:
        fields[name] = value
        return
    alt = f"{qualifier}_{name}"
    n = 1
    while alt in fields:
        n += 1
        alt = f"{qualifier}_{name}_{n}"
    fields[alt] = value


def flatten_leaves(node: Any, fields: dict[str, Any], *, qualifier: str, name: str | None = None) -> None:
    """Put the leaves of an XML-as-JSON subtree into `fields` under their leaf names.

    `#text` stands for the element itself, `#attributes` children become leaves named after the
    attribute; `xmlns` declarations are markup, not data, and are left out.
    """
    if isinstance(node, Mapping):
        for key, child in node.items():
            if key == "#attributes" and isinstance(child, Mapping):
                for attr, value in child.items():
                    if attr != "xmlns" and not attr.startswith("xmlns:"):
                        put(fields, attr, value, qualifier=qualifier)
            elif key == "#text":
                if name is not None:
                    put(fields, name, child, qualifier=qualifier)
            else:
                flatten_leaves(child, fields, qualifier=qualifier, name=key)
    elif name is not None:
        put(fields, name, node, qualifier=qualifier)


def flatten_dotted(node: Mapping[str, Any], fields: dict[str, Any], prefix: str = "") -> None:
    """Put nested JSON objects into `fields` under dotted names (`host.name`); lists stay values."""
    for key, value in node.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flatten_dotted(value, fields, f"{name}.")
        else:
            fields[name] = value
