"""The knowledge base: ATT&CK catalog lookups plus the `uses` relationships that attribution profiles use."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path

from casefile.attack.aliases import norm, resolve_names
from casefile.attack.models import Campaign, Group, Software, Tactic, Technique, Use
from casefile.attack.stix import load_parsed
from casefile.errors import KnowledgeBaseError

TECHNIQUE_ID = re.compile(r"^T\d{4}(?:\.\d{3})?$")
SOFTWARE_ID = re.compile(r"^S\d{4}$")


@dataclass(frozen=True)
class KnowledgeBase:
    """ATT&CK (plus any ally bundles), cut at `before`, with names and sponsors resolved."""

    attack_version: str | None
    techniques: dict[str, Technique]
    software_by_id: dict[str, Software]
    groups: dict[str, Group]
    campaigns: dict[str, Campaign]
    tactic_list: tuple[Tactic, ...]
    #: The groups' own `uses` relationships (and, when `include_campaigns`, inherited ones with `via` set).
    group_uses: tuple[Use, ...]
    campaign_uses: tuple[Use, ...]
    #: campaign id -> group ids it is attributed to
    campaign_groups: dict[str, tuple[str, ...]]
    before: date | None = None
    include_campaigns: bool = False
    #: "x-mitre-collection" or "inferred from content dates" (release table in casefile.attack.stix)
    attack_version_source: str | None = None
    #: citation key -> publication year of the report (where the reference gives one)
    report_years: dict[str, int] = field(default_factory=dict)
    _names: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False)
    _software_names: dict[str, str] = field(default_factory=dict, repr=False)

    def technique(self, tid: str) -> Technique | None:
        return self.techniques.get(tid.strip().upper())

    def tactics(self) -> tuple[Tactic, ...]:
        """Tactics in matrix order (kill chain)."""
        return self.tactic_list

    def software(self, sid: str) -> Software | None:
        return self.software_by_id.get(sid.strip().upper()) or self.software_by_id.get(sid.strip())

    def group(self, gid: str) -> Group | None:
        return self.groups.get(gid.strip().upper()) or self.groups.get(gid.strip())

    def find_groups(self, name: str) -> tuple[str, ...]:
        """Group ids a name or alias (any vendor) refers to; several when vendors disagree."""
        if self.group(name) is not None:
            return (self.group(name).id,)  # type: ignore[union-attr]
        return self._names.get(norm(name), ())

    def find_software(self, name: str) -> str | None:
        """Software id for an id, name or alias (case-insensitive), or None."""
        if (s := self.software(name)) is not None:
            return s.id
        return self._software_names.get(name.strip().casefold())

    def is_known_technique_id(self, tid: str) -> bool:
        return tid.strip().upper() in self.techniques


def load_knowledge_base(
    bundles: Sequence[Path],
    *,
    before: date | None = None,
    include_campaigns: bool = False,
    galaxy_dir: Path | None = None,
    vendor_map: Path | None = None,
    cache_dir: Path | None = None,
) -> KnowledgeBase:
    """Load ATT&CK from the first bundle and merge the rest (ally intrusion sets, malware, relationships).

    `before` keeps only relationships created before that day (replaying what was known then).
    `include_campaigns` adds the techniques and software of a group's attributed campaigns to its profile
    (the ATT&CK website's view); leave it off for evaluation, it leaks the campaign into its group.
    """
    if not bundles:
        raise KnowledgeBaseError("no ATT&CK bundle given: pass --kb BUNDLE or run `casefile rules update`")
    parsed = [load_parsed(Path(b), cache_dir) for b in bundles]
    techniques: dict[str, Technique] = {}
    software: dict[str, Software] = {}
    groups: dict[str, Group] = {}
    campaigns: dict[str, Campaign] = {}
    tactics: list[Tactic] = []
    uses: dict[tuple[str, str], Use] = {}
    attributed: dict[str, set[str]] = {}
    for p in parsed:
        for t in p.techniques:
            techniques.setdefault(t.id, t)
        for s in p.software:
            software.setdefault(s.id, s)
        for g in p.groups:
            if g.id in groups:  # an ally bundle may add aliases to a known group
                old = groups[g.id]
                groups[g.id] = replace(old, aliases=tuple(dict.fromkeys(old.aliases + g.aliases)))
            else:
                groups[g.id] = g
        for c in p.campaigns:
            campaigns.setdefault(c.id, c)
        known_tactics = {t.id for t in tactics}
        tactics += [t for t in p.tactics if t.id not in known_tactics]
    # STIX id -> catalog id over all bundles, for relationships that cross bundles
    by_stix = {
        x.stix_id: x.id
        for coll in (techniques.values(), software.values(), groups.values(), campaigns.values())
        for x in coll
        if x.stix_id
    }
    known = set(techniques) | set(software) | set(groups) | set(campaigns)
    for p in parsed:
        for u0 in p.uses:
            src, dst = by_stix.get(u0.source, u0.source), by_stix.get(u0.target, u0.target)
            if src not in known or dst not in known:
                continue  # an end no bundle defines (or one that is revoked/deprecated)
            u = replace(u0, source=src, target=dst)
            if before is not None and u.created >= before:
                continue
            key = (u.source, u.target)
            if key in uses:
                old_u = uses[key]
                uses[key] = replace(
                    old_u, reports=old_u.reports | u.reports, created=min(old_u.created, u.created)
                )
            else:
                uses[key] = u
        for c0, g0, created in p.attributed:
            cid, gid = by_stix.get(c0, c0), by_stix.get(g0, g0)
            if cid in campaigns and gid in groups and (before is None or created < before):
                attributed.setdefault(cid, set()).add(gid)
    group_uses = [u for u in uses.values() if u.source in groups]
    campaign_uses = [u for u in uses.values() if u.source in campaigns]
    if include_campaigns:
        own = {(u.source, u.target) for u in group_uses}
        for u in campaign_uses:
            for gid in sorted(attributed.get(u.source, ())):
                if (gid, u.target) not in own:
                    group_uses.append(Use(gid, u.target, u.reports, u.created, via=u.source))
    names = {gid: (g.name, *g.aliases) for gid, g in groups.items()}
    stix_ids = {g.stix_id.removeprefix("intrusion-set--"): gid for gid, g in groups.items() if g.stix_id}
    actor = resolve_names(names, stix_ids, galaxy_dir=galaxy_dir, vendor_map=vendor_map)
    for gid, g in list(groups.items()):
        groups[gid] = replace(
            g,
            aliases=g.aliases + actor.aliases.get(gid, ()),
            sponsor=actor.sponsors.get(gid, g.sponsor),
            victims=g.victims | actor.victims.get(gid, frozenset()),
            sectors=g.sectors | actor.sectors.get(gid, frozenset()),
        )
    name_index: dict[str, list[str]] = {}
    for gid, g in groups.items():
        for n in (g.name, *g.aliases):
            bucket = name_index.setdefault(norm(n), [])
            if gid not in bucket:
                bucket.append(gid)
    software_names: dict[str, str] = {}
    for s in software.values():
        for n in (s.name, *s.aliases):
            software_names.setdefault(n.casefold(), s.id)
    return KnowledgeBase(
        attack_version=parsed[0].version,
        techniques=techniques,
        software_by_id=software,
        groups=groups,
        campaigns=campaigns,
        tactic_list=tuple(tactics),
        group_uses=tuple(sorted(group_uses, key=lambda u: (u.source, u.target))),
        campaign_uses=tuple(sorted(campaign_uses, key=lambda u: (u.source, u.target))),
        campaign_groups={c: tuple(sorted(g)) for c, g in attributed.items()},
        before=before,
        include_campaigns=include_campaigns,
        attack_version_source=parsed[0].version_source,
        report_years={k: y for p in reversed(parsed) for k, y in p.report_years},
        _names={k: tuple(v) for k, v in name_index.items()},
        _software_names=software_names,
    )


def installed_bundles(attack_dir: Path) -> list[Path]:
    """The enterprise bundle `casefile rules update` installed; KnowledgeBaseError when there is none."""
    found = (
        sorted(p for p in attack_dir.glob("*") if p.is_file() and p.name.endswith((".json", ".json.gz")))
        if attack_dir.is_dir()
        else []
    )
    enterprise = [p for p in found if p.name.startswith("enterprise-attack")]
    if not enterprise:
        raise KnowledgeBaseError(
            f"{attack_dir}: no ATT&CK bundle installed; run `casefile rules update` or pass --kb BUNDLE"
        )
    return enterprise[:1]
