"""Attribution as Bayesian model comparison over ATT&CK's own reports.

Each group is a generative model of the features (techniques and software) an incident report shows: a
feature is drawn from the group's profile with probability 1 - mixture, in proportion to how many of the
group's cited reports support (group uses feature), or else from the background distribution of all groups.
The background alone is the "no known group" hypothesis. A seen feature adds log(p_g(f) / q(f)): a technique
half of all groups use says little, a tool only one group uses says a lot. What the group shows in most of its
reports but that was not seen adds log((1 - r_g(f)) / (1 - r(f))) (per-report rates), scaled by
`absence_weight` because evidence is always partial. A stated victim and the time of activity (against the
publication years of the group's reports) add their own log-likelihood ratios. Posteriors are a softmax of
scores / temperature with a fitted prior logit for "unknown" (see docs/attribution.md).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

from casefile.attack.aliases import sector_key, victim_country_code
from casefile.attack.kb import TECHNIQUE_ID, KnowledgeBase
from casefile.attack.models import Use
from casefile.attribute.models import (
    Attribution,
    Evidence,
    EvidenceItem,
    GroupHypothesis,
    SponsorHypothesis,
    TechniqueSighting,
)

_NOT_FEATURE = re.compile(r"^(?:[GC]\d{4}|intrusion-set--|campaign--)")


@dataclass(frozen=True, slots=True)
class ModelParams:
    """Model constants; the defaults were fitted by benchmarks/attribution.py (see docs/attribution.md)."""

    mixture: float = 0.8  # share of a group's features drawn from the background (profiles are incomplete)
    absence_weight: float = 0.1
    temperature: float = 1.0
    unknown_logit: float = -2.0  # prior log-odds of "no known group" against all groups together
    #: scores are divided by n_features ** length_power: features of one incident are not independent
    length_power: float = 0.0
    #: the unknown prior logit grows by unknown_slope * log(n_features): more features, more chances that a
    #: group's profile fits by accident (fitted on calibration units, see docs/attribution.md)
    unknown_slope: float = 0.0
    #: sponsor ranking: weight of the country-level model (profiles pooled per sponsor) against the summed
    #: group probabilities, and the country model's temperature
    sponsor_weight: float = 0.0
    sponsor_temperature: float = 1.0
    indicator_lr: float = 20.0  # likelihood ratio of an indicator match naming the group
    #: victimology (stated victim country/sector against the galaxy's CFR lists): share of a group's victims
    #: drawn from the background rather than its known list (the lists are short and incomplete); chosen by
    #: benchmarks/attribution_victims.py on 10 campaigns, see docs/attribution.md
    victim_mixture: float = 0.7
    #: time of activity against the publication years of the group's reports: share of the incident's year
    #: drawn from the background (1 ignores time), and the kernel's scale in years; fitted by protocol (a)'s
    #: calibration like the constants above (see docs/attribution.md)
    time_mixture: float = 0.1
    time_scale: float = 1.0
    against_listed: int = 5  # how many evidence_against items each hypothesis explains


@dataclass(frozen=True, slots=True)
class Profiles:
    """Per-group report counts of each feature, and the background rate of each feature."""

    counts: Mapping[str, Mapping[str, int]]  # group -> feature -> reports citing it
    reports: Mapping[str, int]  # group -> number of distinct reports
    totals: Mapping[str, int]  # group -> sum of its counts
    background: Mapping[str, float]  # feature -> share of all counts (the "unknown" model)
    floor: float  # background share of a known feature no group uses
    rates: Mapping[str, float]  # feature -> mean per-report rate over groups (for absence)
    #: group -> publication year -> distinct dated reports behind its profile (time of activity)
    years: Mapping[str, Mapping[int, int]] = field(default_factory=dict)

    @property
    def groups(self) -> tuple[str, ...]:
        return tuple(sorted(self.counts))


def build_profiles(uses: Iterable[Use], report_years: Mapping[str, int] | None = None) -> Profiles:
    """Profiles from group `uses` relationships (techniques, software); an uncited one counts once.

    With `report_years` (citation key -> publication year), each group also gets the years of the reports
    behind its profile, which the time-of-activity evidence weighs."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)
    reports: dict[str, set[str]] = defaultdict(set)
    for u in uses:
        if _NOT_FEATURE.match(u.target):
            continue  # groups and campaigns are not features (ally bundles may link them with `uses`)
        n = max(1, len(u.reports))
        counts[u.source][u.target] = counts[u.source].get(u.target, 0) + n
        reports[u.source].update(u.reports or {f"uncited:{u.source}:{u.target}"})
    n_reports = {g: max(1, len(reports[g]), max(counts[g].values())) for g in counts}
    totals = {g: sum(feats.values()) for g, feats in counts.items()}
    rate: dict[str, float] = defaultdict(float)
    mass: dict[str, int] = defaultdict(int)
    for g, feats in counts.items():
        for f, c in feats.items():
            rate[f] += c / n_reports[g]
            mass[f] += c
    n_groups = max(1, len(counts))
    grand = max(1, sum(totals.values()))
    background = {f: (m + 0.5) / grand for f, m in mass.items()}
    rates = {f: (r + 0.5) / (n_groups + 1) for f, r in rate.items()}
    years: dict[str, dict[int, int]] = {}
    if report_years:
        for g in counts:
            dated = [report_years[r] for r in reports[g] if r in report_years]
            if dated:
                years[g] = {y: dated.count(y) for y in sorted(set(dated))}
    return Profiles(dict(counts), n_reports, totals, background, 0.5 / grand, rates, years)


def incident_years(first_seen: date | None, last_seen: date | None) -> tuple[int, ...]:
    """The calendar years an incident spans (one end may be missing); () when neither is known."""
    ends = [d.year for d in (first_seen, last_seen) if d is not None]
    if not ends:
        return ()
    return tuple(range(min(ends), max(ends) + 1))


def _laplace(distance: int, scale: float) -> float:
    """Discrete Laplace kernel over whole years (sums to 1 over all integers)."""
    a = math.exp(-1 / scale)
    return (1 - a) / (1 + a) * a ** abs(distance)


def time_densities(
    profiles: Profiles, years: Sequence[int], scale: float
) -> tuple[dict[str, float], float]:
    """How likely each dated group is to be active in `years` (kernel density over its report years,
    averaged over the span), and the same for the background: the mean over dated groups."""
    if not years or not profiles.years:
        return {}, 0.0
    dens = {}
    for g, by_year in profiles.years.items():
        n = sum(by_year.values())
        dens[g] = sum(
            sum(c * _laplace(t - y, scale) for y, c in by_year.items()) / n for t in years
        ) / len(years)
    return dens, sum(dens.values()) / len(dens)


def time_weights(densities: Mapping[str, float], background: float, time_mixture: float) -> dict[str, float]:
    """Log-likelihood ratio of the time of activity per dated group; undated groups are the background."""
    if time_mixture >= 1 or background <= 0:
        return {}
    b = time_mixture
    return {g: math.log(((1 - b) * d + b * background) / background) for g, d in densities.items()}


@dataclass(frozen=True, slots=True)
class GroupScore:
    group_id: str
    present: float  # sum of log-likelihood ratios of seen features
    absent: float  # sum over the group's unseen features (before absence_weight)
    items_for: tuple[tuple[str, float], ...]
    items_against: tuple[tuple[str, float], ...]


def score_groups(
    profiles: Profiles,
    features: Iterable[str],
    *,
    mixture: float,
    explain: bool = False,
    confidence: Mapping[str, float] | None = None,
) -> list[GroupScore]:
    """Log-likelihood ratios of every profiled group against the background for a set of seen features.

    A feature with `confidence` c < 1 (it may be a false positive) is soft evidence: its ratio r becomes
    c * r + (1 - c), the likelihood ratio of "seen with probability c" (at c = 0 it weighs nothing).
    """
    seen = sorted(set(features))
    seen_set = set(seen)
    qs = [profiles.background.get(f, profiles.floor) for f in seen]
    soft = [min(1.0, max(0.0, (confidence or {}).get(f, 1.0))) for f in seen]
    out = []
    for g in profiles.groups:
        feats = profiles.counts[g]
        share = (1 - mixture) / profiles.totals[g]
        pos = 0.0
        items_for: list[tuple[str, float]] = []
        for f, q, c in zip(seen, qs, soft, strict=True):
            ratio = (share * feats.get(f, 0) + mixture * q) / q
            w = math.log(ratio if c >= 1.0 else c * ratio + (1.0 - c))
            pos += w
            if explain:
                items_for.append((f, w))
        neg = 0.0
        items_against: list[tuple[str, float]] = []
        r_g = profiles.reports[g]
        for f, c in feats.items():
            if f in seen_set:
                continue
            p = min(c / r_g, 0.95)
            w = math.log((1 - p) / (1 - min(profiles.rates.get(f, 0.0), 0.95)))
            neg += w
            if explain:
                items_against.append((f, w))
        out.append(GroupScore(g, pos, neg, tuple(items_for), tuple(items_against)))
    return out


def posterior(
    scores: list[GroupScore],
    params: ModelParams,
    bonus: Mapping[str, float] | None = None,
    n_features: int = 1,
) -> tuple[dict[str, float], float]:
    """Group probabilities and the "unknown" probability (they sum to 1)."""
    if not scores:
        return {}, 1.0
    prior = -math.log(len(scores))
    bonus = bonus or {}
    scale = params.temperature * max(1, n_features) ** params.length_power
    logits = {
        s.group_id: (s.present + params.absence_weight * s.absent) / scale
        + bonus.get(s.group_id, 0.0) / params.temperature
        + prior
        for s in scores
    }
    b = unknown_logit(params, n_features)
    top = max([*logits.values(), b])
    z = math.exp(b - top) + sum(math.exp(v - top) for v in logits.values())
    probs = {g: math.exp(v - top) / z for g, v in logits.items()}
    return probs, math.exp(b - top) / z


def unknown_logit(params: ModelParams, n_features: int) -> float:
    """Prior log-odds of "no known group" for an incident with `n_features` profiled features."""
    return params.unknown_logit + params.unknown_slope * math.log(max(1, n_features))


def sponsor_uses(uses: Iterable[Use], sponsors: Mapping[str, str | None]) -> list[Use]:
    """Group `uses` relabelled with the group's sponsor country (unsponsored groups left out)."""
    out = []
    for u in uses:
        c = sponsors.get(u.source)
        if c:
            out.append(Use(c, u.target, u.reports, u.created, u.via))
    return out


def country_posterior(country_scores: Mapping[str, float], params: ModelParams) -> dict[str, float]:
    """Softmax over sponsor countries of the pooled-profile log-likelihood ratios (uniform prior)."""
    if not country_scores:
        return {}
    logits = {c: v / params.sponsor_temperature for c, v in country_scores.items()}
    top = max(logits.values())
    z = sum(math.exp(v - top) for v in logits.values())
    return {c: math.exp(v - top) / z for c, v in logits.items()}


def combine_sponsors(
    group_sum: Mapping[str, float], country_post: Mapping[str, float], weight: float
) -> dict[str, float]:
    """Known-country probabilities: a mixture of summed group probabilities and the country model.

    The mass of known countries (1 - unknown - unsponsored groups) is kept; only its split changes.
    """
    mass = sum(group_sum.values())
    if mass <= 0 or weight <= 0 or not country_post:
        return dict(group_sum)
    countries = set(group_sum) | set(country_post)
    return {
        c: (1 - weight) * group_sum.get(c, 0.0) + weight * mass * country_post.get(c, 0.0) for c in countries
    }


def evidence_features(evidence: Evidence, kb: KnowledgeBase) -> tuple[list[str], list[str], list[str]]:
    """(profiled feature ids, unprofiled technique ids, unresolved software names) of the evidence."""
    feats: list[str] = []
    unprofiled: list[str] = []
    unresolved: list[str] = []
    for s in evidence.techniques:
        tid = s.technique_id.strip().upper()
        if kb.is_known_technique_id(tid):
            feats.append(tid)
        elif TECHNIQUE_ID.match(tid):
            unprofiled.append(tid)  # newer than the KB: a known-unknown, reported and weighed as neutral
        else:
            unresolved.append(s.technique_id)
    for name in evidence.software:
        sid = kb.find_software(name)
        if sid is None:
            unresolved.append(name)
        else:
            feats.append(sid)
    return sorted(set(feats)), sorted(set(unprofiled)), unresolved


def _label(kb: KnowledgeBase, feature: str) -> str:
    t = kb.technique(feature)
    if t is not None:
        return t.name
    s = kb.software(feature)
    return s.name if s is not None else feature


def _item(
    kb: KnowledgeBase,
    profiles: Profiles,
    group: str,
    feature: str,
    weight: float,
    seen: bool,
    sighting: TechniqueSighting | None = None,
) -> EvidenceItem:
    kind = "technique" if TECHNIQUE_ID.match(feature) else "software"
    c = profiles.counts[group].get(feature, 0)
    r = profiles.reports[group]
    share = profiles.rates.get(feature, 0.0)
    if seen:
        detail = f"seen; in {c} of the group's {r} reports; mean rate over groups {share:.3f}"
        if sighting is not None and (sighting.count > 1 or sighting.hosts > 1 or sighting.confidence < 1):
            detail += (
                f"; {sighting.count} detection{'s' if sighting.count != 1 else ''} on {sighting.hosts} "
                f"host{'s' if sighting.hosts != 1 else ''}, confidence {sighting.confidence:.2f}"
            )
    else:
        detail = f"not seen; the group shows it in {c} of {r} reports"
    return EvidenceItem(kind, feature, _label(kb, feature), round(weight, 4), detail)


def attribute(
    evidence: Evidence,
    kb: KnowledgeBase,
    *,
    top: int = 10,
    params: ModelParams | None = None,
    profiles: Profiles | None = None,
) -> Attribution:
    """Rank known groups (and "no known group") for one activity cluster's evidence; every score explained."""
    params = params or ModelParams()
    profiles = profiles or build_profiles(kb.group_uses, kb.report_years)
    feats, unprofiled, _unresolved = evidence_features(evidence, kb)
    sightings: dict[str, TechniqueSighting] = {}
    for sight in evidence.techniques:
        tid = sight.technique_id.strip().upper()
        if tid not in sightings or sight.confidence > sightings[tid].confidence:
            sightings[tid] = sight
    confidence = {tid: x.confidence for tid, x in sightings.items() if x.confidence < 1.0}
    scores = score_groups(profiles, feats, mixture=params.mixture, explain=True, confidence=confidence)
    bonus: dict[str, float] = {}
    indicator_items: dict[str, list[EvidenceItem]] = defaultdict(list)
    for name in evidence.indicator_groups:
        for gid in kb.find_groups(name):
            bonus[gid] = bonus.get(gid, 0.0) + math.log(params.indicator_lr)
            indicator_items[gid].append(
                EvidenceItem(
                    "indicator", gid, name, round(math.log(params.indicator_lr), 4), "indicator match"
                )
            )
    if not feats and not bonus:
        scores = []  # no profiled evidence: nothing can point at a known group (victimology alone cannot)
    # Context beside the features: the stated victim and the time of activity (each an explained item).
    context_items = victim_evidence(evidence, kb, params) if scores else {}
    if scores:
        years = incident_years(evidence.first_seen, evidence.last_seen)
        for gid, item in time_evidence(profiles, years, params).items():
            context_items.setdefault(gid, []).append(item)
    for gid, items in context_items.items():
        bonus[gid] = bonus.get(gid, 0.0) + sum(i.weight for i in items)
    probs, unknown = posterior(scores, params, bonus, len(feats))
    ranked = sorted(scores, key=lambda s: (-probs[s.group_id], s.group_id))
    hypotheses = []
    for s in ranked[: max(0, top)]:
        g = kb.group(s.group_id)
        for_items = [
            _item(kb, profiles, s.group_id, f, w, True, sightings.get(f)) for f, w in s.items_for if w > 0
        ]
        against = [
            _item(kb, profiles, s.group_id, f, w, True, sightings.get(f)) for f, w in s.items_for if w <= 0
        ]
        absent = sorted(s.items_against, key=lambda fw: fw[1])[: params.against_listed]
        against += [_item(kb, profiles, s.group_id, f, w * params.absence_weight, False) for f, w in absent]
        hypotheses.append(
            GroupHypothesis(
                group_id=s.group_id,
                name=g.name if g else s.group_id,
                sponsor=g.sponsor if g else None,
                probability=probs[s.group_id],
                evidence_for=tuple(
                    sorted(for_items, key=lambda i: -i.weight)
                    + indicator_items.get(s.group_id, [])
                    + [i for i in context_items.get(s.group_id, ()) if i.weight > 0]
                ),
                evidence_against=tuple(
                    sorted(against + [i for i in context_items.get(s.group_id, ()) if i.weight <= 0],
                           key=lambda i: i.weight)
                ),
                aliases=g.aliases if g else (),
            )
        )
    return Attribution(
        groups=tuple(hypotheses),
        sponsors=sponsor_ranking(
            kb, probs, unknown, _country_scores(kb, feats, params, bool(scores)), params
        ),
        unknown_probability=unknown,
        kb_version=kb.attack_version,
        unprofiled_techniques=tuple(unprofiled),
    )


def victim_evidence(
    evidence: Evidence, kb: KnowledgeBase, params: ModelParams
) -> dict[str, list[EvidenceItem]]:
    """Log-likelihood ratios of the stated victim country and sector for every group with victimology.

    Per attribute, a group with a known list draws a victim from its list (uniformly) with probability
    1 - `victim_mixture`, else from the background: how often each value is listed over all groups, with
    add-one smoothing (a country no group lists keeps a small share). Groups without a list, and the
    "no known group" hypothesis, are the background itself: their ratio is 1 and they get no item.
    """
    out: dict[str, list[EvidenceItem]] = defaultdict(list)
    sector = sector_key(evidence.victim_sector) if evidence.victim_sector else None
    country = victim_country_code(evidence.victim_country)
    stated = (
        ("country", country, {g: v.victims for g, v in kb.groups.items()}),
        ("sector", sector, {g: v.sectors for g, v in kb.groups.items()}),
    )
    for kind, value, listed in stated:
        if not value:
            continue
        lists = {gid: values for gid, values in listed.items() if values}
        if not lists:
            continue
        counts: dict[str, int] = defaultdict(int)
        for values in lists.values():
            for v in values:
                counts[v] += 1
        q = (counts.get(value, 0) + 1) / (sum(counts.values()) + len(counts) + 1)
        beta = params.victim_mixture
        plural = {"country": "countries", "sector": "sectors"}
        for gid, values in lists.items():
            hit = value in values
            p = (1 - beta) * (1 / len(values) if hit else 0.0) + beta * q
            w = math.log(p / q)
            detail = (
                f"{'among' if hit else 'not among'} the {len(values)} {plural[kind]} the group is known to "
                f"target (MISP galaxy, CFR); {counts.get(value, 0)} of {len(lists)} groups with a list "
                "name it"
            )
            item = EvidenceItem("victim", f"{kind}:{value}", f"victim {kind} {value}", round(w, 4), detail)
            out[gid].append(item)
    return dict(out)


def time_evidence(profiles: Profiles, years: Sequence[int], params: ModelParams) -> dict[str, EvidenceItem]:
    """One `time` item per dated group: the incident's years against the years of the group's reports."""
    dens, background = time_densities(profiles, years, params.time_scale)
    weights = time_weights(dens, background, params.time_mixture)
    if not weights:
        return {}
    span = f"{years[0]}" if len(years) == 1 else f"{years[0]}-{years[-1]}"
    out = {}
    for gid, w in weights.items():
        by_year = profiles.years[gid]
        near = sum(c for y, c in by_year.items() if years[0] - 1 <= y <= years[-1] + 1)
        detail = (
            f"active {span}; the group's {sum(by_year.values())} dated reports were published "
            f"{min(by_year)}-{max(by_year)}, {near} of them within a year of it"
        )
        out[gid] = EvidenceItem("time", f"years:{span}", f"time of activity {span}", round(w, 4), detail)
    return out


def _country_scores(
    kb: KnowledgeBase, feats: Sequence[str], params: ModelParams, any_evidence: bool
) -> dict[str, float]:
    if params.sponsor_weight <= 0 or not any_evidence or not feats:
        return {}
    sponsors = {g.id: g.sponsor for g in kb.groups.values()}
    prof = build_profiles(sponsor_uses(kb.group_uses, sponsors))
    return {s.group_id: s.present for s in score_groups(prof, feats, mixture=params.mixture)}


def sponsor_ranking(
    kb: KnowledgeBase,
    probs: Mapping[str, float],
    unknown: float,
    country_scores: Mapping[str, float] | None = None,
    params: ModelParams | None = None,
) -> tuple[SponsorHypothesis, ...]:
    """Sponsor countries ranked by their groups' summed probability, mixed with the country-level model
    (`ModelParams.sponsor_weight`) when `country_scores` are given; the rest is "unknown"."""
    params = params or ModelParams()
    known: dict[str, float] = defaultdict(float)
    rest = unknown
    for gid, p in probs.items():
        g = kb.group(gid)
        if g and g.sponsor:
            known[g.sponsor] += p
        else:
            rest += p
    country = country_posterior(country_scores or {}, params)
    by_country = combine_sponsors(known, country, params.sponsor_weight)
    by_country["unknown"] = rest
    return tuple(
        SponsorHypothesis(c, p) for c, p in sorted(by_country.items(), key=lambda cp: (-cp[1], cp[0]))
    )
