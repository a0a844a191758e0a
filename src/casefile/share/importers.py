"""Reading partners' intel: STIX 2.1 bundles/envelopes, MISP feed folders and events, CSV lists.

Each format is a reader registered by name; a reader turns one source into items (indicators,
other STIX objects, or per-object issues) and `import_intel` stores them. A bad object is an issue
naming the source, the object and the reason; the rest of the source is imported.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casefile.errors import IntelError
from casefile.models import STIX_TYPE
from casefile.registry import Registry
from casefile.share.models import Atom, AtomKind, ImportResult, IndicatorInput, IntelIssue, Skipped
from casefile.share.patterns import atom_pattern, guess_atom, normalise, shown
from casefile.share.store import TLP_BY_MARKING_ID, IntelStore, tlp_name

#: Namespace of ids casefile gives indicators that did not come as STIX (CSV rows, MISP attributes).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://casefile/intel")

Item = IndicatorInput | dict[str, Any] | IntelIssue | Skipped
#: A reader: (source name, content, base folder for feeds) -> items.
Reader = Callable[[str, Any], Iterator[Item]]

READERS: Registry[Reader] = Registry("intel format")


@dataclass(frozen=True, slots=True)
class ImportOptions:
    """Defaults for what a source does not say itself."""

    source: str | None = None  # name to record (default: the file name or URL)
    tlp: str | None = None  # marking for rows/objects without one
    user: str | None = None  # for URLs: HTTP Basic user (with `token` as password)
    token: str | None = None  # for URLs: Bearer token (or Basic password with `user`)
    added_after: str | None = None  # for TAXII collections: only objects added after this


#: A TAXII 2.1 collection URL (".../collections/<id>/" or its ".../objects/").
_TAXII_COLLECTION = re.compile(r"^(https?://.+/collections/[^/]+)/(?:objects/?)?$")
TAXII_MEDIA = "application/taxii+json;version=2.1"
#: Pages read from one TAXII collection at most (a server that never ends its `more` is cut off).
MAX_TAXII_PAGES = 10_000


def parse_time(value: Any) -> datetime | None:
    """A STIX/MISP/CSV timestamp (ISO 8601 or epoch seconds) as aware UTC; None when empty."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, int | float) or (isinstance(value, str) and value.strip().isdigit()):
            return datetime.fromtimestamp(int(value), tz=UTC)
        if not isinstance(value, str):
            raise IntelError(f"not a timestamp: {value!r}")
        ts = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
    except ValueError:
        raise IntelError(f"not a timestamp: {value!r}") from None
    except (OverflowError, OSError):  # epoch 10**20, NaN, or an offset that leaves years 1-9999 in UTC
        raise IntelError(f"timestamp outside the years 1-9999: {value!r}") from None


# -- STIX ---------------------------------------------------------------------------------------
def _stix_tlp(obj: Mapping[str, Any], markings: Mapping[str, str]) -> str | None:
    refs = obj.get("object_marking_refs")
    for ref in refs if isinstance(refs, list) else ():
        if not isinstance(ref, str):
            continue
        name = markings.get(ref) or TLP_BY_MARKING_ID.get(ref)
        if name:
            return name
    return None


def _marking_names(objects: list[Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for o in objects:
        if not isinstance(o, dict) or o.get("type") != "marking-definition":
            continue
        definition = o.get("definition")
        text = None
        if o.get("definition_type") == "tlp" and isinstance(definition, dict):
            text = str(definition.get("tlp", ""))
        elif isinstance(o.get("name"), str):
            text = o["name"]
        name = tlp_name(text) if text else None
        if name and isinstance(o.get("id"), str):
            out[o["id"]] = name
    return out


def read_stix(source: str, data: Any) -> Iterator[Item]:
    """Objects of a STIX 2.1 bundle or TAXII envelope (a parsed JSON object)."""
    if not isinstance(data, dict) or not isinstance(data.get("objects", []), list):
        yield IntelIssue(source, "-", "not a STIX bundle or TAXII envelope (no 'objects' list)")
        return
    objects: list[Any] = data.get("objects") or []
    markings = _marking_names(objects)
    for n, obj in enumerate(objects):
        try:
            yield _stix_item(source, n, obj, markings)
        except (TypeError, ValueError, AttributeError) as exc:  # a field of an unexpected shape
            oid = obj["id"] if isinstance(obj, dict) and isinstance(obj.get("id"), str) else f"objects[{n}]"
            yield IntelIssue(source, oid, f"unreadable object: {type(exc).__name__}: {exc}")


def _stix_item(source: str, n: int, obj: Any, markings: Mapping[str, str]) -> Item:
    if not (isinstance(obj, dict) and isinstance(obj.get("type"), str) and isinstance(obj.get("id"), str)):
        return IntelIssue(source, f"objects[{n}]", "not a STIX object (needs string 'type' and 'id')")
    otype, oid = obj["type"], obj["id"]
    if STIX_TYPE.fullmatch(otype) is None or not oid.startswith(f"{otype}--"):
        return IntelIssue(source, f"objects[{n}]", f"not a STIX object: type {otype!r}, id {oid!r}")
    try:
        uuid.UUID(oid[len(otype) + 2:])
    except ValueError:
        return IntelIssue(source, f"objects[{n}]", f"id {oid!r} does not end in a UUID")
    if obj.get("spec_version", "2.1") != "2.1":
        return IntelIssue(source, oid, f"spec_version {obj.get('spec_version')!r} is not 2.1")
    if otype != "indicator":
        return obj
    if not isinstance(obj.get("pattern"), str):
        return IntelIssue(source, oid, "indicator without a string 'pattern'")
    if obj.get("pattern_type", "stix") != "stix":
        return obj  # a Sigma/YARA/Snort indicator: kept as it is, not matched as an indicator
    try:
        first = parse_time(obj.get("valid_from") or obj.get("created"))
        last = parse_time(obj.get("modified")) or first
    except IntelError as exc:
        return IntelIssue(source, oid, str(exc))
    labels = obj.get("labels") or ()
    return IndicatorInput(
        id=oid,
        pattern=obj["pattern"],
        name=_text(obj.get("name")),
        description=_text(obj.get("description")),
        source=source,
        tlp=_stix_tlp(obj, markings),
        first_seen=first,
        last_seen=last,
        labels=tuple(str(x) for x in labels) if isinstance(labels, list) else (),
        raw=obj,
    )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# -- MISP ---------------------------------------------------------------------------------------
#: MISP attribute types casefile can match, by the atom kind their value becomes.
MISP_TYPES: dict[str, AtomKind] = {
    "md5": AtomKind.HASH,
    "sha1": AtomKind.HASH,
    "sha256": AtomKind.HASH,
    "sha512": AtomKind.HASH,
    "imphash": AtomKind.HASH,
    "ip-dst": AtomKind.IP,
    "ip-src": AtomKind.IP,
    "domain": AtomKind.DOMAIN,
    "hostname": AtomKind.DOMAIN,
    "url": AtomKind.URL,
    "uri": AtomKind.URL,
    "link": AtomKind.URL,
}
_MISP_COMPOSITE = {  # "filename|sha256" -> the part that is matchable
    "filename|md5": 1,
    "filename|sha1": 1,
    "filename|sha256": 1,
    "filename|sha512": 1,
    "filename|imphash": 1,
    "ip-dst|port": 0,
    "ip-src|port": 0,
    "domain|ip": 0,
    "hostname|port": 0,
}
_MISP_HASH_NAMES = {
    "md5": "MD5",
    "sha1": "SHA-1",
    "sha256": "SHA-256",
    "sha512": "SHA-512",
    "imphash": "IMPHASH",
}


def _misp_tlp(tags: Any) -> str | None:
    for tag in _listed(tags):
        name = tag.get("name") if isinstance(tag, dict) else None
        if isinstance(name, str) and name.lower().startswith("tlp:"):
            found = tlp_name(name)
            if found:
                return found
    return None


def read_misp_event(source: str, data: Any) -> Iterator[Item]:
    """Indicators of one MISP event (`{"Event": {...}}`): attributes flagged to_ids, objects' too."""
    event = data.get("Event") if isinstance(data, dict) else None
    if not isinstance(event, dict):
        yield IntelIssue(source, "-", "not a MISP event (no 'Event' object)")
        return
    event_tlp = _misp_tlp(event.get("Tag"))
    event_info = _text(event.get("info"))
    attributes: list[Any] = []
    for where, holder in [("Event", event)] + [
        (f"Object[{k}]", o) for k, o in enumerate(_listed(event.get("Object"))) if isinstance(o, dict)
    ]:
        found = holder.get("Attribute")
        if isinstance(found, list):
            attributes.extend(found)
        elif found is not None:
            yield IntelIssue(source, where, "'Attribute' is not a list of attributes")
    for n, attr in enumerate(attributes):
        try:
            yield _misp_item(source, n, attr, event_tlp, event_info)
        except (TypeError, ValueError, AttributeError) as exc:  # a field of an unexpected shape
            yield IntelIssue(source, f"Attribute[{n}]", f"unreadable attribute: {type(exc).__name__}: {exc}")


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _misp_item(source: str, n: int, attr: Any, event_tlp: str | None, event_info: str | None) -> Item:
    if not isinstance(attr, dict):
        return IntelIssue(source, f"Attribute[{n}]", "not a MISP attribute object")
    ident = str(attr.get("uuid") or f"Attribute[{n}]")
    atype, value = str(attr.get("type", "")), attr.get("value")
    to_ids = attr.get("to_ids", True)
    if not isinstance(to_ids, bool):  # "0" and "false" are true in Python: never guess a detection flag
        return IntelIssue(source, ident, f"to_ids {to_ids!r} is not true or false")
    if not to_ids:
        return Skipped("MISP attribute not flagged to_ids")
    if not isinstance(value, str):
        return IntelIssue(source, ident, "attribute value is not a string")
    if atype in _MISP_COMPOSITE:
        parts = value.split("|")
        if len(parts) != 2:
            return IntelIssue(source, ident, f"{atype} value {shown(value)} is not two '|'-separated parts")
        value = parts[_MISP_COMPOSITE[atype]]
        atype = atype.split("|")[_MISP_COMPOSITE[atype]]
    kind = MISP_TYPES.get(atype)
    if kind is None:  # filenames, mutexes, registry keys ...: not an error, but counted
        return Skipped(f"MISP attribute type {atype} (not matched by casefile)")
    try:
        atom = Atom(kind, normalise(kind, value, _MISP_HASH_NAMES.get(atype)))
        stamp = parse_time(attr.get("timestamp"))
        first = parse_time(attr.get("first_seen")) or stamp
        last = parse_time(attr.get("last_seen")) or stamp
    except IntelError as exc:
        return IntelIssue(source, ident, str(exc))
    return IndicatorInput(
        id=f"indicator--{attr['uuid']}" if _is_uuid(attr.get("uuid")) else _indicator_id(atom),
        pattern=atom_pattern(atom, _MISP_HASH_NAMES.get(atype)),
        name=f"{atype}: {value}",
        description=_text(attr.get("comment")) or event_info,
        source=source,
        tlp=_misp_tlp(attr.get("Tag")) or event_tlp,
        first_seen=first,
        last_seen=last,
        labels=(f"misp:{attr.get('category')}",) if attr.get("category") else (),
        atoms=(atom,),
    )


def read_misp_feed(source: str, folder: Any) -> Iterator[Item]:
    """A MISP feed folder: `manifest.json` naming events, one `<uuid>.json` file per event."""
    base = Path(folder)
    manifest_path = base / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        yield IntelIssue(str(manifest_path), "-", f"cannot read MISP feed manifest: {exc}")
        return
    if not isinstance(manifest, dict):
        yield IntelIssue(str(manifest_path), "-", "MISP feed manifest is not an object of event uuids")
        return
    for event_uuid in sorted(manifest):
        if not _is_uuid(event_uuid):
            yield IntelIssue(str(manifest_path), event_uuid, "manifest key is not an event uuid")
            continue
        path = base / f"{event_uuid}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            yield IntelIssue(source, event_uuid, f"cannot read event file {path.name}: {exc}")
            continue
        yield from read_misp_event(f"{source}/{event_uuid}", data)


# -- CSV ----------------------------------------------------------------------------------------
def read_csv(source: str, text: Any) -> Iterator[Item]:
    """A CSV list: a `value` (or `indicator`) column, optional `type`, `tlp`, `first_seen`,
    `last_seen`, `description`/`comment`, `source`; without a header, one value per line."""
    rows = list(csv.reader(io.StringIO(str(text))))
    if not rows:
        return
    header = [h.strip().lower() for h in rows[0]]
    value_col = next((header.index(c) for c in ("value", "indicator", "ioc") if c in header), None)
    if value_col is None:
        header, body, start = ["value"], rows, 1
        value_col = 0
    else:
        body, start = rows[1:], 2
    for line, row in enumerate(body, start=start):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        cells = {h: (row[i].strip() if i < len(row) else "") for i, h in enumerate(header)}
        value = row[value_col].strip() if value_col < len(row) else ""
        try:
            atom = guess_atom(value, cells.get("type") or None)
            first = parse_time(cells.get("first_seen"))
            last = parse_time(cells.get("last_seen")) or first
            tlp = tlp_name(cells["tlp"]) if cells.get("tlp") else None
            if cells.get("tlp") and tlp is None:
                raise IntelError(f"unknown TLP marking {cells['tlp']!r}")
        except IntelError as exc:
            yield IntelIssue(source, f"line {line}", str(exc))
            continue
        yield IndicatorInput(
            id=_indicator_id(atom),
            pattern=atom_pattern(atom),
            name=value,
            description=cells.get("description") or cells.get("comment") or None,
            source=cells.get("source") or source,
            tlp=tlp,
            first_seen=first,
            last_seen=last,
            atoms=(atom,),
        )


def _indicator_id(atom: Atom) -> str:
    return f"indicator--{uuid.uuid5(NAMESPACE, f'{atom.kind.value}:{atom.value}')}"


def _is_uuid(value: Any) -> bool:
    try:
        uuid.UUID(str(value))
    except ValueError:
        return False
    return True


READERS.register("stix", read_stix)
READERS.register("misp-event", read_misp_event)
READERS.register("misp-feed", read_misp_feed)
READERS.register("csv", read_csv)


# -- dispatch -----------------------------------------------------------------------------------
def detect(data: Any) -> str:
    """The reader for parsed JSON content."""
    if isinstance(data, dict) and "Event" in data:
        return "misp-event"
    return "stix"


def _sources(target: str | Path, opts: ImportOptions) -> Iterator[tuple[str, str, Any] | IntelIssue]:
    """(name, reader, content) for a file, folder, http(s) URL or TAXII 2.1 collection."""
    text_target = str(target)
    if text_target.startswith(("http://", "https://")):
        taxii = _TAXII_COLLECTION.match(text_target)
        yield _fetch_taxii(taxii.group(1), opts) if taxii else _fetch(text_target, opts)
        return
    path = Path(target)
    if path.is_dir():
        if (path / "manifest.json").is_file():
            yield (str(path), "misp-feed", path)
            return
        # A MISP feed inside the tree is read as a feed: its event files are named by its manifest,
        # and its hashes.csv holds hashes of attribute values, not indicators.
        feeds = sorted(m.parent for m in path.rglob("manifest.json"))
        for feed in feeds:
            yield (str(feed), "misp-feed", feed)
        for child in sorted(path.rglob("*")):
            in_feed = any(child.is_relative_to(feed) for feed in feeds)
            if not in_feed and child.is_file() and child.suffix.lower() in (".json", ".csv", ".txt"):
                yield from _file_source(child)
        return
    if not path.exists():
        raise IntelError(f"{path}: no such file, folder or URL")
    yield from _file_source(path)


def _file_source(path: Path) -> Iterator[tuple[str, str, Any] | IntelIssue]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        yield IntelIssue(str(path), "-", f"cannot read: {exc}")
        return
    if path.suffix.lower() in (".csv", ".txt"):
        yield (str(path), "csv", text)
        return
    try:
        data = json.loads(text)
    except ValueError as exc:
        yield IntelIssue(str(path), "-", f"not JSON: {exc}")
        return
    yield (str(path), detect(data), data)


def _auth(opts: ImportOptions) -> tuple[dict[str, str], tuple[str, str] | None]:
    if opts.token and opts.user:
        return {}, (opts.user, opts.token)
    return ({"Authorization": f"Bearer {opts.token}"} if opts.token else {}), None


def _fetch_taxii(collection: str, opts: ImportOptions) -> tuple[str, str, Any] | IntelIssue:
    """Every object of a TAXII 2.1 collection, paged with `next` (optionally `added_after`)."""
    import httpx

    headers, basic = _auth(opts)
    headers["Accept"] = TAXII_MEDIA
    objects: list[Any] = []
    params: dict[str, str] = {"limit": "1000"}
    if opts.added_after:
        params["added_after"] = opts.added_after
    url = f"{collection}/objects/"
    try:
        with httpx.Client(headers=headers, auth=basic, timeout=60, follow_redirects=True) as client:
            for _ in range(MAX_TAXII_PAGES):
                resp = client.get(url, params=params)
                resp.raise_for_status()
                page = resp.json()
                if not isinstance(page, dict):
                    return IntelIssue(collection, "-", "TAXII server sent something other than an envelope")
                objects.extend(page.get("objects") or [])
                if not page.get("more") or not page.get("next"):
                    break
                params["next"] = str(page["next"])
            else:
                return IntelIssue(
                    collection, "-", f"TAXII collection still had more after {MAX_TAXII_PAGES} pages"
                )
    except httpx.HTTPError as exc:
        return IntelIssue(collection, "-", f"cannot fetch from TAXII server: {exc}")
    except ValueError as exc:
        return IntelIssue(collection, "-", f"TAXII server sent invalid JSON: {exc}")
    return (collection, "stix", {"objects": objects})


def _fetch(url: str, opts: ImportOptions) -> tuple[str, str, Any] | IntelIssue:
    import httpx

    headers, basic = _auth(opts)
    try:
        resp = httpx.get(url, headers=headers, auth=basic, timeout=60, follow_redirects=True)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        return IntelIssue(url, "-", f"cannot fetch: {exc}")
    if "csv" in resp.headers.get("content-type", "") or url.lower().endswith(".csv"):
        return (url, "csv", resp.text)
    try:
        data = resp.json()
    except ValueError as exc:
        return IntelIssue(url, "-", f"not JSON: {exc}")
    return (url, detect(data), data)


def import_intel(store: IntelStore, target: str | Path, options: ImportOptions | None = None) -> ImportResult:
    """Import a file, folder (MISP feed or a tree of bundles/CSVs) or URL into the store.

    Per-object problems are collected in the result's `issues`; the rest is imported. Each source
    is read whole and written in a few set-based statements, as one transaction.
    """
    opts = options or ImportOptions()
    total = ImportResult(source=opts.source or str(target))
    for entry in _sources(target, opts):
        if isinstance(entry, IntelIssue):
            total.issues.append(entry)
            continue
        name, reader, content = entry
        result = ImportResult(source=opts.source or name)
        indicators: list[IndicatorInput] = []
        objects: list[dict[str, Any]] = []
        for item in READERS.get(reader)(opts.source or name, content):
            if isinstance(item, IntelIssue):
                result.issues.append(item)
            elif isinstance(item, Skipped):
                result.skipped[item.reason] = result.skipped.get(item.reason, 0) + 1
            elif isinstance(item, IndicatorInput):
                if item.tlp is None and opts.tlp is not None:
                    item = replace(item, tlp=opts.tlp)
                indicators.append(item)
            else:
                objects.append(item)
        with store.transaction():
            new, merged, issues = store.add_indicators(indicators)
            store.add_objects(objects, result.source)
        result.indicators_new, result.indicators_merged, result.objects = new, merged, len(objects)
        result.issues.extend(issues)
        total.add(result)
    return total
