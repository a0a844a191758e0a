"""The case as a STIX 2.1 bundle with deterministic ids: the same case always gives the same bundle.

Ids are uuid5 over stable keys: ATT&CK objects over their ATT&CK id (so two cases share them), case
objects over the case's own id. Timestamps come from the case (its creation time, detection times),
never from the clock.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections import defaultdict
from typing import Any

from stix2patterns.validator import validate as validate_pattern  # type: ignore[import-untyped]

from casefile.case.store import Case, StoredDetection
from casefile.case.timeline import tactics_for
from casefile.errors import IntelError
from casefile.models import DetectionKind
from casefile.share.models import Atom, AtomKind
from casefile.share.patterns import atom_pattern, normalise, quote
from casefile.share.store import stix_time

#: Namespace of every casefile STIX id (uuid5(NAMESPACE_URL, "https://casefile/stix")).
NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://casefile/stix")
#: Groups below this probability are not put in the bundle as attributed.
MIN_ATTRIBUTION_PROBABILITY = 0.05


def stix_id(kind: str, *key: str) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, '|'.join((kind, *key)))}"


def indicator_pattern(value: str) -> str:
    """A STIX pattern for an indicator value, by its shape (hash, IP or CIDR, URL, domain, else file name).

    A value that already is a valid STIX pattern (an IOC hit on a CIDR or multi-value indicator carries the
    indicator's whole pattern) is returned unchanged.
    """
    v = value.strip()
    if v.startswith("[") and validate_pattern(v, ret_errs=False, print_errs=False):
        return v
    try:
        # The intel store's own tests, here and for domains below: what it matches on is exported as such.
        return atom_pattern(Atom(AtomKind.HASH, normalise(AtomKind.HASH, v)))
    except IntelError:
        pass
    try:
        ip = ipaddress.ip_address(v)
        return f"[{'ipv4' if ip.version == 4 else 'ipv6'}-addr:value = {quote(v)}]"
    except ValueError:
        pass
    if "/" in v and "://" not in v:
        try:
            net = ipaddress.ip_network(v, strict=False)
            return f"[{'ipv4' if net.version == 4 else 'ipv6'}-addr:value = {quote(str(net))}]"
        except ValueError:
            pass
    if "://" in v:
        return f"[url:value = {quote(v)}]"
    try:
        # a name the store matched on (an `_` label, a punycode TLD) must not come back as a file name,
        # which nothing matches
        return atom_pattern(Atom(AtomKind.DOMAIN, normalise(AtomKind.DOMAIN, v)))
    except IntelError:
        return f"[file:name = {quote(v)}]"


def _attack_ref(tid: str) -> dict[str, str]:
    path = tid.replace(".", "/")
    return {
        "source_name": "mitre-attack",
        "external_id": tid,
        "url": f"https://attack.mitre.org/techniques/{path}",
    }


def case_bundle(case: Case) -> dict[str, Any]:
    """The whole case as a STIX 2.1 bundle (a plain dict, ready for json.dumps)."""
    created = stix_time(case.created_at)
    cid = case.case_id
    common = {"spec_version": "2.1", "created": created, "modified": created}
    objects: dict[str, dict[str, Any]] = {}

    def add(obj: dict[str, Any]) -> str:
        objects[obj["id"]] = obj
        return str(obj["id"])

    author = add(
        {
            "type": "identity",
            "id": stix_id("identity", "casefile"),
            **common,
            "name": "casefile",
            "identity_class": "system",
        }
    )
    common["created_by_ref"] = author
    victim = add(
        {
            "type": "identity",
            "id": stix_id("identity", cid, "victim"),
            **common,
            "name": f"Victim of case {case.name}",
            "identity_class": "organization",
        }
    )

    catalog = case.techniques()
    software_names = case.software()
    rule_texts = case.rule_texts()
    detections = case.detections()

    # ATT&CK techniques and software seen in detections.
    technique_refs: dict[str, str] = {}
    software_refs: dict[str, str] = {}
    for sd in detections:
        rule = sd.detection.rule
        for tid in rule.techniques:
            if tid in technique_refs:
                continue
            info = catalog.get(tid)
            tactics = tactics_for(rule.tactics, (tid,), catalog) if info is None else info.tactics
            obj: dict[str, Any] = {
                "type": "attack-pattern",
                "id": stix_id("attack-pattern", tid),
                **common,
                "name": info.name if info else tid,
                "external_references": [_attack_ref(tid)],
            }
            if tactics:
                obj["kill_chain_phases"] = [
                    {"kill_chain_name": "mitre-attack", "phase_name": t} for t in tactics
                ]
            technique_refs[tid] = add(obj)
        for sid in rule.software:
            if sid in software_refs:
                continue
            name, kind = software_names.get(sid, (sid, "tool"))
            sobj: dict[str, Any] = {
                "type": kind,
                "id": stix_id(kind, sid),
                **common,
                "name": name,
                "external_references": [
                    {
                        "source_name": "mitre-attack",
                        "external_id": sid,
                        "url": f"https://attack.mitre.org/software/{sid}",
                    }
                ],
            }
            if kind == "malware":
                sobj["is_family"] = True
            software_refs[sid] = add(sobj)

    # One indicator per rule/indicator that fired, one sighting of it per host.
    hits: dict[tuple[str, str], list[StoredDetection]] = defaultdict(list)
    for sd in detections:
        d = sd.detection
        key = ("ioc", d.indicator) if d.kind is DetectionKind.IOC and d.indicator else ("rule", d.rule.id)
        hits[key].append(sd)
    indicator_refs: dict[tuple[str, str], str] = {}
    for key, group in sorted(hits.items()):
        d0 = group[0].detection
        stamps = sorted(s.detection.timestamp for s in group if s.detection.timestamp)
        valid_from = stix_time(stamps[0]) if stamps else created
        if key[0] == "ioc":
            pattern, ptype = indicator_pattern(key[1]), "stix"
            name = f"Indicator {key[1]}" + (f" ({d0.source})" if d0.source else "")
        else:
            text = rule_texts.get(key[1])
            if text is None:
                continue  # the rule text is not in the case: no honest pattern to give
            pattern, ptype, name = text, "sigma", d0.rule.title
        ind: dict[str, Any] = {
            "type": "indicator",
            "id": stix_id("indicator", *key),
            **common,
            "name": name,
            "pattern": pattern,
            "pattern_type": ptype,
            "valid_from": valid_from,
            "indicator_types": ["malicious-activity"],
        }
        if d0.rule.description:
            ind["description"] = d0.rule.description
        tids = [t for t in d0.rule.techniques if t in technique_refs]
        if tids:
            ind["kill_chain_phases"] = [
                {"kill_chain_name": "mitre-attack", "phase_name": t}
                for t in tactics_for(d0.rule.tactics, tids, catalog)
            ]
        indicator_refs[key] = add(ind)
        for tid in tids:
            add(_relationship(common, indicator_refs[key], "indicates", technique_refs[tid]))
        add(_sighting(common, cid, key, indicator_refs[key], victim, group, created))

    # Clusters become campaigns; attribution becomes attributed-to with the probability as confidence.
    attributions = case.attributions()
    clusters = case.clusters()
    for cl in clusters:
        desc = (
            f"Activity cluster of {len(cl.detection_ids)} detections on hosts {', '.join(cl.hosts)}; "
            f"accounts {', '.join(cl.accounts) or 'none'}."
        )
        camp: dict[str, Any] = {
            "type": "campaign",
            "id": stix_id("campaign", cid, cl.id),
            **common,
            "name": f"Activity cluster {cl.id}",
            "description": desc,
        }
        if cl.first_seen:
            camp["first_seen"] = stix_time(cl.first_seen)
        if cl.last_seen:
            camp["last_seen"] = stix_time(cl.last_seen)
        camp_ref = add(camp)
        for tid in cl.techniques:
            if tid in technique_refs:
                add(_relationship(common, camp_ref, "uses", technique_refs[tid]))
        for sid in cl.software:
            if sid in software_refs:
                add(_relationship(common, camp_ref, "uses", software_refs[sid]))
        attribution = attributions.get(cl.id)
        for g in attribution.groups if attribution else ():
            if g.probability < MIN_ATTRIBUTION_PROBABILITY:
                continue
            iset: dict[str, Any] = {
                "type": "intrusion-set",
                "id": stix_id("intrusion-set", g.group_id),
                **common,
                "name": g.name,
                "external_references": [
                    {
                        "source_name": "mitre-attack",
                        "external_id": g.group_id,
                        "url": f"https://attack.mitre.org/groups/{g.group_id}",
                    }
                ],
            }
            if g.aliases:
                iset["aliases"] = list(g.aliases)
            iset_ref = add(iset)
            rel = _relationship(common, camp_ref, "attributed-to", iset_ref)
            rel["confidence"] = max(0, min(100, round(g.probability * 100)))
            rel["description"] = "; ".join(
                f"{e.kind} {e.id} {e.name} (+{e.weight:.2f})" for e in g.evidence_for[:10]
            )
            add(rel)

    report_refs = sorted(o for o in objects if o != author)
    stamps = sorted(sd.detection.timestamp for sd in detections if sd.detection.timestamp)
    published = stix_time(stamps[-1]) if stamps else created
    case_attr = attributions.get("case")
    top = case_attr.groups[0] if case_attr and case_attr.groups else None
    description = (
        f"casefile case {case.name}: {len(case.evidence_files())} evidence files, "
        f"{len(detections)} detections, {len(clusters)} activity clusters."
    )
    if top is not None:
        description += f" Most likely group: {top.name} ({top.group_id}, p={top.probability:.2f})."
    report = {
        "type": "report",
        "id": stix_id("report", cid),
        **common,
        "name": f"casefile case {case.name}",
        "description": description,
        "report_types": ["incident"],
        "published": max(published, created),
        "object_refs": report_refs,
    }
    add(report)
    return {
        "type": "bundle",
        "id": stix_id("bundle", cid),
        "objects": sorted(objects.values(), key=lambda o: (o["type"], o["id"])),
    }


def _relationship(common: dict[str, Any], src: str, rel: str, dst: str) -> dict[str, Any]:
    return {
        "type": "relationship",
        "id": stix_id("relationship", src, rel, dst),
        **common,
        "relationship_type": rel,
        "source_ref": src,
        "target_ref": dst,
    }


def _sighting(
    common: dict[str, Any],
    cid: str,
    key: tuple[str, str],
    indicator: str,
    victim: str,
    group: list[StoredDetection],
    created: str,
) -> dict[str, Any]:
    stamps = sorted(s.detection.timestamp for s in group if s.detection.timestamp)
    hosts = sorted({s.detection.computer for s in group if s.detection.computer})
    sighting: dict[str, Any] = {
        "type": "sighting",
        "id": stix_id("sighting", cid, *key),
        **common,
        "sighting_of_ref": indicator,
        "count": len(group),
        "where_sighted_refs": [victim],
        "description": f"Seen on {', '.join(hosts) or 'unknown hosts'}",
    }
    if stamps:
        sighting["first_seen"] = stix_time(stamps[0])
        sighting["last_seen"] = stix_time(stamps[-1])
    return sighting
