"""Findings out: a case's STIX 2.1 bundle as a file, and the same bundle as a MISP feed.

The MISP feed is a conversion of the bundle's objects only (report -> event, indicators ->
attributes with their sightings, ATT&CK techniques and groups -> galaxy tags), so whatever builds
the bundle decides what is shared, in one place.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from casefile.errors import IntelError
from casefile.registry import Registry
from casefile.share.models import Atom, AtomKind
from casefile.share.patterns import parse_pattern
from casefile.share.store import TLP_BY_MARKING_ID

#: Exporters: (bundle, output path) -> the path written.
Exporter = Callable[[Mapping[str, Any], Path], Path]
EXPORTERS: Registry[Exporter] = Registry("exporter")

_MISP_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://casefile/misp")
#: Indicator pattern languages -> the MISP attribute type that carries such a rule.
_PATTERN_TYPES = {
    "stix": "stix2-pattern",
    "sigma": "sigma",
    "yara": "yara",
    "snort": "snort",
    "suricata": "snort",
    "pcre": "pattern-in-traffic",
}
_HASH_TYPES = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}


def _epoch(stamp: Any) -> str:
    if not isinstance(stamp, str):
        return "0"
    ts = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return str(int(ts.astimezone(UTC).timestamp()))


def _uuid_of(stix_id: str, *extra: str) -> str:
    """The uuid part of a STIX id, or a uuid5 over it plus `extra` when one object gives several."""
    if not extra:
        return stix_id.split("--", 1)[-1]
    return str(uuid.uuid5(_MISP_NAMESPACE, "|".join((stix_id, *extra))))


def _misp_type(kind: AtomKind, value: str) -> tuple[str, str]:
    if kind is AtomKind.HASH:
        return _HASH_TYPES.get(len(value), "sha256"), "Payload delivery"
    if kind is AtomKind.IP:
        return "ip-dst", "Network activity"
    if kind is AtomKind.DOMAIN:
        return "domain", "Network activity"
    return "url", "Network activity"


def bundle_to_misp_event(bundle: Mapping[str, Any], *, org: str = "casefile") -> dict[str, Any]:
    """One MISP event (`{"Event": {...}}`) holding the bundle's indicators, sightings and ATT&CK tags."""
    objects = [o for o in bundle.get("objects", []) if isinstance(o, dict)]
    if not objects:
        raise IntelError(f"bundle {bundle.get('id')}: no objects to export")
    by_type: dict[str, list[dict[str, Any]]] = {}
    for o in objects:
        by_type.setdefault(str(o.get("type")), []).append(o)
    report = next(iter(by_type.get("report", [])), None)
    anchor = report or objects[0]
    event_uuid = _uuid_of(str(anchor["id"])) if report else _uuid_of(str(bundle.get("id", "bundle")), "event")
    created = str(anchor.get("published") or anchor.get("modified") or anchor.get("created") or "")
    sightings: dict[str, list[dict[str, Any]]] = {}
    for s in by_type.get("sighting", []):
        sightings.setdefault(str(s.get("sighting_of_ref")), []).append(s)

    attributes: list[dict[str, Any]] = []
    for ind in sorted(by_type.get("indicator", []), key=lambda o: str(o["id"])):
        attributes.extend(_indicator_attributes(ind, sightings.get(str(ind["id"]), [])))

    tags = [
        {"name": f'misp-galaxy:mitre-attack-pattern="{name}"'}
        for name in sorted(_galaxy_name(o) for o in by_type.get("attack-pattern", []) if _attack_id(o))
    ]
    tags += [
        {"name": f'misp-galaxy:threat-actor="{o.get("name")}"'}
        for o in sorted(by_type.get("intrusion-set", []), key=lambda o: str(o.get("name")))
    ]
    tlps = sorted(
        {
            TLP_BY_MARKING_ID[m]
            for o in objects
            for m in o.get("object_marking_refs") or ()
            if m in TLP_BY_MARKING_ID
        }
    )
    tags += [{"name": t.lower()} for t in tlps[-1:]]  # the most restrictive marking present
    org_obj = {"name": org, "uuid": str(uuid.uuid5(_MISP_NAMESPACE, "org|" + org))}
    event: dict[str, Any] = {
        "uuid": event_uuid,
        "info": str((report or {}).get("name") or f"casefile export {bundle.get('id')}"),
        "date": created[:10] if created else "1970-01-01",
        "timestamp": _epoch(created),
        "publish_timestamp": _epoch(created),
        "published": True,
        "analysis": "2",
        "threat_level_id": "1",
        "distribution": "0",
        "Orgc": org_obj,
        "Tag": tags,
        "Attribute": attributes,
    }
    if report and report.get("description"):
        attributes.append(
            {
                "uuid": _uuid_of(str(report["id"]), "description"),
                "type": "text",
                "category": "Other",
                "value": str(report["description"]),
                "to_ids": False,
                "timestamp": _epoch(created),
                "comment": "case summary",
            }
        )
    return {"Event": event}


def _galaxy_name(obj: Mapping[str, Any]) -> str:
    """MISP's ATT&CK galaxy value, "Name - T1234" (just the id when the bundle names it by id)."""
    tid, name = _attack_id(obj), str(obj.get("name") or "")
    return f"{name} - {tid}" if name and name != tid else str(tid)


def _attack_id(obj: Mapping[str, Any]) -> str | None:
    for ref in obj.get("external_references") or ():
        if isinstance(ref, dict) and ref.get("source_name") == "mitre-attack" and ref.get("external_id"):
            return str(ref["external_id"])
    return None


def _indicator_attributes(ind: Mapping[str, Any], seen: list[dict[str, Any]]) -> list[dict[str, Any]]:
    oid = str(ind["id"])
    stamp = _epoch(ind.get("modified") or ind.get("created"))
    pattern_type = str(ind.get("pattern_type", "stix"))
    atoms: list[Atom] = []
    if pattern_type == "stix":
        try:
            atoms, _note = parse_pattern(str(ind.get("pattern", "")))
        except IntelError:
            atoms = []
    sighting_rows = [
        {
            "type": "0",
            "date_sighting": _epoch(s.get("last_seen") or s.get("modified")),
            "source": str(s.get("description") or "casefile"),
            "uuid": _uuid_of(str(s["id"])),
        }
        for s in sorted(seen, key=lambda s: str(s["id"]))
    ]
    base = {
        "to_ids": True,
        "timestamp": stamp,
        "comment": str(ind.get("name") or ind.get("description") or ""),
    }
    if ind.get("valid_from"):
        base["first_seen"] = ind["valid_from"]
    if not atoms:  # keep the pattern itself, so nothing is lost
        return [
            {
                **base,
                "uuid": _uuid_of(oid),
                "type": _PATTERN_TYPES.get(pattern_type, "text"),
                "category": "Artifacts dropped" if pattern_type in ("sigma", "yara") else "External analysis",
                "value": str(ind.get("pattern", "")),
                "to_ids": False,
                "Sighting": sighting_rows,
            }
        ]
    out = []
    for n, atom in enumerate(atoms):
        mtype, category = _misp_type(atom.kind, atom.value)
        out.append(
            {
                **base,
                "uuid": _uuid_of(oid) if len(atoms) == 1 else _uuid_of(oid, str(n)),
                "type": mtype,
                "category": category,
                "value": atom.value,
                "Sighting": sighting_rows,
            }
        )
    return out


def write_misp_feed(bundle: Mapping[str, Any], out_dir: Path, *, org: str = "casefile") -> Path:
    """Write the bundle as a MISP feed folder (manifest.json, <event uuid>.json, hashes.csv)."""
    data = bundle_to_misp_event(bundle, org=org)
    event = data["Event"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{event['uuid']}.json").write_text(
        json.dumps(data, indent=1, sort_keys=True), encoding="utf-8"
    )
    manifest = {
        event["uuid"]: {
            k: event[k]
            for k in (
                "info",
                "date",
                "timestamp",
                "publish_timestamp",
                "analysis",
                "threat_level_id",
                "Orgc",
                "Tag",
            )
        }
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True), encoding="utf-8")
    lines = sorted(
        f"{hashlib.md5(str(a['value']).encode('utf-8', 'surrogatepass'), usedforsecurity=False).hexdigest()},"
        f"{event['uuid']}"
        for a in event["Attribute"]
    )
    (out_dir / "hashes.csv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out_dir


def write_stix(bundle: Mapping[str, Any], path: Path) -> Path:
    """Write the bundle as one JSON file (sorted keys: the same case gives the same bytes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(bundle, indent=1, sort_keys=True), encoding="utf-8")
    return path


EXPORTERS.register("stix", write_stix)
EXPORTERS.register("misp", write_misp_feed)


def export_case(case_path: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Export a case folder's STIX bundle as `fmt` (stix: <case>/export/case.stix.json, misp:
    <case>/export/misp/); returns the path written."""
    from casefile.case import Case
    from casefile.report.stix import case_bundle

    exporter = EXPORTERS.get(fmt)
    case_dir = Path(case_path)
    default = case_dir / "export" / ("case.stix.json" if fmt == "stix" else "misp")
    with Case.open(case_dir, read_only=True) as case:
        bundle = case_bundle(case)
    return exporter(bundle, Path(out) if out else default)
