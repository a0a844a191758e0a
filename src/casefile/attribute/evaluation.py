"""Leak-free evaluation of the attribution engine on ATT&CK itself, with a plain TF-IDF ranking alongside.

A unit is evidence (feature ids) with its truth (group ids, or none for "unknown") and the reports whose
relationships must vanish from the profiles before scoring it. Protocols:
(a) campaigns: each campaign's features, profiles without any relationship citing one of its reports;
(b) leave-one-report-out over (group, report) pairs, plus leave-one-group-out units whose truth is unknown;
(c) time split: profiles from relationships created before the cutoff, campaigns and reports after it.
Calibration constants are fitted on units disjoint from the test units (other folds, or before the cutoff).
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date

from casefile.attack.kb import KnowledgeBase
from casefile.attack.models import Use
from casefile.attribute.engine import (
    ModelParams,
    Profiles,
    build_profiles,
    combine_sponsors,
    country_posterior,
    incident_years,
    posterior,
    score_groups,
    sponsor_uses,
    time_densities,
    time_weights,
    unknown_logit,
)

#: time-kernel scales (years) scored for every unit, so the fit can choose one without rescoring
TIME_SCALES: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    features: frozenset[str]
    truth: frozenset[str]  # empty: the right answer is "no known group"
    held_reports: frozenset[str] = frozenset()
    held_groups: frozenset[str] = frozenset()
    #: True: drop every relationship citing a held report (protocol a); False: drop only those citations (b)
    drop_relationships: bool = True
    #: calendar years of activity (a campaign's first to last seen, a report's publication year); () unknown
    years: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Scored:
    """A unit's raw scores, so calibration constants can be refitted without rescoring."""

    unit: Unit
    present: dict[str, float]
    absent: dict[str, float]
    baseline: dict[str, float]
    country: dict[str, float] = field(default_factory=dict)  # pooled per-sponsor profile scores
    #: time-kernel scale -> (per-group density of the unit's years, background density)
    time: dict[float, tuple[dict[str, float], float]] = field(default_factory=dict)
    _bonus: dict[tuple[float, float], dict[str, float]] = field(default_factory=dict, repr=False)

    def bonus(self, params: ModelParams) -> dict[str, float]:
        """Time-of-activity log-likelihood ratios under `params` (memoised: fits try many constants)."""
        key = (params.time_mixture, params.time_scale)
        if key not in self._bonus:
            dens, background = self.time.get(params.time_scale, ({}, 0.0))
            self._bonus[key] = time_weights(dens, background, params.time_mixture)
        return self._bonus[key]


@dataclass(frozen=True, slots=True)
class Metrics:
    n: int  # units with a known group
    n_unknown: int  # units whose truth is "no known group"
    top1: float
    top5: float
    top10: float
    mrr: float
    sponsor_top1: float
    sponsor_n: int
    ece: float
    unknown_recall: float  # share of unknown-truth units where "unknown" is the top answer
    false_unknown: float  # share of known-truth units where "unknown" is the top answer
    #: sponsor top-1 of the combined ranking (country-level model mixed in); sponsor_top1 is the old sum
    sponsor_top1_pooled: float = float("nan")


def _stable(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def _without(
    uses: Iterable[Use], reports: frozenset[str], groups: frozenset[str], drop: bool = True
) -> list[Use]:
    """`uses` minus held-out groups and reports (whole relationships, or only the held citations)."""
    out = []
    for u in uses:
        if u.source in groups:
            continue
        if not (u.reports & reports):
            out.append(u)
        elif not drop and (left := u.reports - reports):
            out.append(replace(u, reports=left))
    return out


def _tfidf(profiles: Profiles, features: frozenset[str]) -> dict[str, float]:
    """Cosine similarity of binary TF-IDF vectors: the plain ranking the engine is compared with."""
    n = len(profiles.counts)
    df: dict[str, int] = defaultdict(int)
    for feats in profiles.counts.values():
        for f in feats:
            df[f] += 1
    idf = {f: math.log(n / d) for f, d in df.items()}
    q = {f: idf.get(f, 0.0) for f in features}
    qn = math.sqrt(sum(v * v for v in q.values())) or 1.0
    out = {}
    for g, feats in profiles.counts.items():
        dot = sum(q[f] * idf[f] for f in features if f in feats)
        gn = math.sqrt(sum(idf[f] ** 2 for f in feats)) or 1.0
        out[g] = dot / (qn * gn)
    return out


def score_units(
    units: Sequence[Unit],
    uses: Sequence[Use],
    mixtures: Sequence[float],
    sponsors: Mapping[str, str | None] | None = None,
    report_years: Mapping[str, int] | None = None,
) -> dict[float, list[Scored]]:
    """Score each unit, per mixture weight, against profiles built without its held-out reports/groups;
    with `sponsors` (group -> country), also against per-country pooled profiles built the same way; with
    `report_years`, also its years of activity against the years of the reports left in each profile."""
    out: dict[float, list[Scored]] = {m: [] for m in mixtures}
    for u in units:
        kept = _without(uses, u.held_reports, u.held_groups, u.drop_relationships)
        prof = build_profiles(kept, report_years)
        time = {scale: time_densities(prof, u.years, scale) for scale in TIME_SCALES} if u.years else {}
        cprof = build_profiles(sponsor_uses(kept, sponsors)) if sponsors else None
        baseline = _tfidf(prof, u.features)
        for m in mixtures:
            scores = score_groups(prof, u.features, mixture=m)
            country = (
                {s.group_id: s.present for s in score_groups(cprof, u.features, mixture=m)}
                if cprof is not None and cprof.counts
                else {}
            )
            out[m].append(
                Scored(
                    u,
                    {s.group_id: s.present for s in scores},
                    {s.group_id: s.absent for s in scores},
                    baseline,
                    country,
                    time,
                )
            )
    return out


def _probs(s: Scored, params: ModelParams) -> tuple[dict[str, float], float]:
    from casefile.attribute.engine import GroupScore

    scores = [GroupScore(g, s.present[g], s.absent[g], (), ()) for g in s.present]
    return posterior(scores, params, s.bonus(params), n_features=len(s.unit.features))


def nll(scored: Sequence[Scored], params: ModelParams) -> float:
    """Mean negative log probability of the truth (its groups, or "unknown")."""
    total = 0.0
    lam = params.absence_weight
    for s in scored:
        b = unknown_logit(params, len(s.unit.features))
        temp = params.temperature * max(1, len(s.unit.features)) ** params.length_power
        if not s.present:
            total -= math.log(1.0)
            continue
        prior = -math.log(len(s.present))
        bonus = s.bonus(params)
        logits = {
            g: (v + lam * s.absent[g]) / temp + bonus.get(g, 0.0) / params.temperature + prior
            for g, v in s.present.items()
        }
        top = max(b, *logits.values())
        z = math.exp(b - top) + sum(math.exp(v - top) for v in logits.values())
        if s.unit.truth:
            p = sum(math.exp(logits[g] - top) for g in s.unit.truth if g in logits) / z
        else:
            p = math.exp(b - top) / z
        total -= math.log(max(p, 1e-12))
    return total / max(1, len(scored))


GRID: dict[str, tuple[float, ...]] = {
    "absence_weight": (0.0, 0.05, 0.1, 0.2, 0.4),
    "temperature": (0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0),
    "unknown_logit": (-6.0, -4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0),
    "length_power": (0.0, 0.25, 0.5, 0.75),
    "unknown_slope": (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0),
    "time_mixture": (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0),
    "time_scale": TIME_SCALES,
}

SPONSOR_GRID: dict[str, tuple[float, ...]] = {
    "sponsor_weight": (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
    "sponsor_temperature": (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 8.0),
}


def fit(
    scored: Sequence[Scored], base: ModelParams, rounds: int = 3, fixed: Iterable[str] = ()
) -> ModelParams:
    """Absence weight, temperature and the unknown prior by coordinate descent on mean log loss
    (constants named in `fixed` keep their value in `base`)."""
    skip = set(fixed)
    best, best_loss = base, nll(scored, base)
    for _ in range(rounds):
        changed = False
        for name, values in GRID.items():
            if name in skip:
                continue
            for v in values:
                cand = replace(best, **{name: v})  # type: ignore[arg-type]
                loss = nll(scored, cand)
                if loss < best_loss - 1e-9:
                    best, best_loss, changed = cand, loss, True
        if not changed:
            break
    return best


def _sponsor_probs(
    s: Scored, probs: Mapping[str, float], params: ModelParams, kb: KnowledgeBase, pooled: bool
) -> dict[str, float]:
    by_c: dict[str, float] = defaultdict(float)
    for g, p in probs.items():
        sp = kb.groups[g].sponsor if g in kb.groups else None
        if sp:
            by_c[sp] += p
    if not pooled:
        return dict(by_c)
    return combine_sponsors(by_c, country_posterior(s.country, params), params.sponsor_weight)


def sponsor_nll(scored: Sequence[Scored], params: ModelParams, kb: KnowledgeBase) -> float:
    """Mean negative log share of the true sponsor among the known countries (combined ranking)."""
    total, n = 0.0, 0
    for s in scored:
        true = {sp for g in s.unit.truth if g in kb.groups and (sp := kb.groups[g].sponsor)}
        if not true or not s.present:
            continue
        probs, _ = _probs(s, params)
        by_c = _sponsor_probs(s, probs, params, kb, pooled=True)
        mass = sum(by_c.values())
        p = sum(by_c.get(c, 0.0) for c in true) / mass if mass > 0 else 0.0
        total -= math.log(max(p, 1e-9))
        n += 1
    return total / max(1, n)


def fit_sponsor(scored: Sequence[Scored], base: ModelParams, kb: KnowledgeBase) -> ModelParams:
    """The country model's weight and temperature by log loss of the true sponsor (grid search)."""
    best, best_loss = base, sponsor_nll(scored, base, kb)
    for w in SPONSOR_GRID["sponsor_weight"]:
        for t in SPONSOR_GRID["sponsor_temperature"]:
            cand = replace(base, sponsor_weight=w, sponsor_temperature=t)
            loss = sponsor_nll(scored, cand, kb)
            if loss < best_loss - 1e-9:
                best, best_loss = cand, loss
    return best


def metrics(
    scored: Sequence[Scored], params: ModelParams, kb: KnowledgeBase, *, baseline: bool = False
) -> Metrics:
    """Ranking, sponsor and calibration metrics; `baseline` evaluates the TF-IDF ranking instead."""
    ranks: list[float] = []
    sponsor_hits: list[bool] = []
    pooled_hits: list[bool] = []
    conf: list[tuple[float, bool]] = []
    unknown_hits: list[bool] = []
    false_unknown: list[bool] = []
    for s in scored:
        if baseline:
            total = sum(s.baseline.values())
            # the plain ranking has no "unknown": no overlap at all is a tie between every group
            n_groups = max(1, len(s.baseline))
            probs = {g: (v / total if total > 0 else 1 / n_groups) for g, v in s.baseline.items()}
            unknown = 0.0
        else:
            probs, unknown = _probs(s, params)
        order = sorted(probs, key=lambda g: (-probs[g], g))
        top_group_p = probs[order[0]] if order else 0.0
        top_is_unknown = unknown >= top_group_p
        truth = s.unit.truth
        if truth:
            rank = _fair_rank(probs, truth)
            ranks.append(rank)
            false_unknown.append(top_is_unknown)
            conf.append((unknown, False) if top_is_unknown else (top_group_p, order[0] in truth))
            true_sponsors = {kb.groups[g].sponsor for g in truth if g in kb.groups and kb.groups[g].sponsor}
            if true_sponsors:
                for pooled, hits in ((False, sponsor_hits), (True, pooled_hits)):
                    by_c = _sponsor_probs(s, probs, params, kb, pooled and not baseline)
                    best = min(by_c, key=lambda c: (-by_c[c], c)) if by_c else None
                    hits.append(best in true_sponsors)
        else:
            unknown_hits.append(top_is_unknown)
            conf.append((unknown, True) if top_is_unknown else (top_group_p, False))
    n = len(ranks)

    def share(xs: Sequence[bool]) -> float:
        return sum(xs) / len(xs) if xs else float("nan")

    return Metrics(
        n=n,
        n_unknown=len(unknown_hits),
        top1=share([r <= 1 for r in ranks]),
        top5=share([r <= 5 for r in ranks]),
        top10=share([r <= 10 for r in ranks]),
        mrr=sum(1 / r for r in ranks) / n if n else float("nan"),
        sponsor_top1=share(sponsor_hits),
        sponsor_n=len(sponsor_hits),
        ece=expected_calibration_error(conf),
        unknown_recall=share(unknown_hits),
        false_unknown=share(false_unknown),
        sponsor_top1_pooled=share(pooled_hits),
    )


def _fair_rank(probs: dict[str, float], truth: frozenset[str]) -> float:
    """Expected rank of the best true group under random tie-breaking (ties must not favour any id)."""
    if not any(g in probs for g in truth):
        return float(len(probs) + 1)  # the true group has no profile left: ranked below every candidate
    t = max(probs[g] for g in truth if g in probs)
    greater = sum(v > t for v in probs.values())
    ties = sum(v == t for v in probs.values()) - 1
    return 1 + greater + ties / 2


def expected_calibration_error(conf: Sequence[tuple[float, bool]], bins: int = 10) -> float:
    """ECE of the top answer's probability against whether it was right (equal-width bins)."""
    if not conf:
        return float("nan")
    buckets: dict[int, list[tuple[float, bool]]] = defaultdict(list)
    for p, ok in conf:
        buckets[min(bins - 1, int(p * bins))].append((p, ok))
    return sum(
        len(b) / len(conf) * abs(sum(p for p, _ in b) / len(b) - sum(ok for _, ok in b) / len(b))
        for b in buckets.values()
    )


# ---- unit builders -------------------------------------------------------------------------------------


def campaign_units(
    kb: KnowledgeBase, truth_kb: KnowledgeBase | None = None, since: date | None = None
) -> list[Unit]:
    """One unit per campaign created on/after `since`: features, reports held out, groups as truth."""
    truth_kb = truth_kb or kb
    feats: dict[str, set[str]] = defaultdict(set)
    reports: dict[str, set[str]] = defaultdict(set)
    for u in truth_kb.campaign_uses:
        feats[u.source].add(u.target)
        reports[u.source].update(u.reports)
    units = []
    for cid in sorted(feats):
        c = truth_kb.campaigns.get(cid)
        if since is not None and (c is None or c.created < since):
            continue
        truth = frozenset(truth_kb.campaign_groups.get(cid, ()))
        years = incident_years(*((c.first_seen, c.last_seen) if c else (None, None)))
        units.append(
            Unit(f"campaign {cid}", frozenset(feats[cid]), truth, frozenset(reports[cid]), years=years)
        )
    return units


def report_units(
    uses: Sequence[Use],
    *,
    min_features: int = 2,
    exclude_reports: frozenset[str] = frozenset(),
    report_years: Mapping[str, int] | None = None,
    year_out: bool = False,
) -> list[Unit]:
    """Leave-one-report-out units: for each (group, report), the features that report supports (and, with
    `report_years`, its publication year as the time of activity).

    `year_out` also holds out the group's other reports of the same year: they are mostly about the same
    events, so the unit then looks like a campaign whose reports are all removed (calibration units)."""
    feats: dict[tuple[str, str], set[str]] = defaultdict(set)
    for u in uses:
        for r in u.reports - exclude_reports:
            feats[(u.source, r)].add(u.target)
    years = report_years or {}
    same_year: dict[tuple[str, int], set[str]] = defaultdict(set)
    if year_out:
        for g, r in feats:
            if r in years:
                same_year[(g, years[r])].add(r)
    return [
        Unit(
            f"{g} / {r}",
            frozenset(f),
            frozenset({g}),
            frozenset(same_year.get((g, years[r]), ()) if r in years else ()) | {r},
            drop_relationships=False,
            years=(years[r],) if r in years else (),
        )
        for (g, r), f in sorted(feats.items())
        if len(f) >= min_features
    ]


def group_out_units(
    uses: Sequence[Use],
    *,
    min_features: int = 2,
    per_group: int = 1,
    report_years: Mapping[str, int] | None = None,
) -> list[Unit]:
    """Leave-one-group-out units: a report of a group scored with that group removed; truth is "unknown"."""
    by_group: dict[str, list[Unit]] = defaultdict(list)
    for u in report_units(uses, min_features=min_features, report_years=report_years):
        by_group[next(iter(u.truth))].append(u)
    units = []
    for g, us in sorted(by_group.items()):
        us.sort(key=lambda x: _stable(x.name))
        units += [replace(x, truth=frozenset(), held_groups=frozenset({g})) for x in us[:per_group]]
    return units


def pooled_units(
    uses: Sequence[Use],
    *,
    reports: int = 3,
    per_group: int = 2,
    seed: int = 1,
    group_out: bool = False,
    report_years: Mapping[str, int] | None = None,
) -> list[Unit]:
    """Campaign-sized units: `reports` reports of one group pooled, all of them held out (citations only);
    with `group_out`, the whole group is held out and the truth is "unknown"."""
    import random

    by_group: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for u in uses:
        for r in u.reports:
            by_group[u.source][r].add(u.target)
    rnd = random.Random(seed)
    units = []
    for g in sorted(by_group):
        names = sorted(by_group[g])
        if len(names) <= reports:
            continue
        for _ in range(per_group):
            pick = frozenset(rnd.sample(names, reports))
            feats = frozenset().union(*(by_group[g][r] for r in pick))
            dated = [y for r in pick if (y := (report_years or {}).get(r)) is not None]
            unit = Unit(
                f"{g} / pooled {sorted(pick)}",
                feats,
                frozenset({g}),
                pick,
                drop_relationships=False,
                years=tuple(range(min(dated), max(dated) + 1)) if dated else (),
            )
            if group_out:
                unit = replace(unit, truth=frozenset(), held_groups=frozenset({g}))
            units.append(unit)
    return units


def sample(units: Sequence[Unit], limit: int | None) -> list[Unit]:
    """A deterministic subset (by hashed name) of at most `limit` units."""
    if limit is None or len(units) <= limit:
        return list(units)
    return sorted(units, key=lambda u: _stable(u.name))[:limit]
