"""`casefile investigate`: evidence in, whole case out (hunt, correlate, cluster, attribute, report).

Each evidence file is hunted and stored in its own transaction, keyed by SHA-256, so re-running on
the same folder only adds what is new, and a run killed half way is finished by the next run.
Case-wide steps (correlation, clustering, attribution, reports) are recomputed from the case.
"""

from __future__ import annotations

import contextlib
import hashlib
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import duckdb

from casefile.case.clusters import cluster_detections
from casefile.case.store import Case, Clock, EvidenceBatch, utc_now
from casefile.errors import ConfigError
from casefile.heap import long_lived
from casefile.hunt import RuleSet, event_hunter, load_rules
from casefile.hunt.correlation import correlate, input_rule_ids, suppressed_rule_ids
from casefile.ingest import EvidenceFile, discover, read_file, with_next
from casefile.models import Detection, DetectionKind, IngestWarning, Level


class StageProgress(Protocol):
    """What investigate reports progress to (the CLI adapts rich progress bars to it)."""

    def stage(self, name: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class _NoProgress:
    def stage(self, name: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


@dataclass(frozen=True)
class InvestigateResult:
    """What one run did to the case."""

    case_dir: Path
    files_found: int
    files_added: int
    files_already_in_case: int
    events_added: int
    detections_added: int
    correlation_detections: int
    indicator_hits: int
    rules_loaded: int
    rules_skipped: int
    clusters: int
    attributed: bool
    warnings: list[IngestWarning] = field(default_factory=list)
    reports: list[Path] = field(default_factory=list)


def evidence_sha256(evidence: EvidenceFile, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of the evidence bytes as collected (a zip member's own bytes, a .gz file as stored); of a zip
    member whose data is damaged, of the bytes read before the damage (reading it reports the damage)."""
    h = hashlib.sha256()
    if evidence.member is None:
        with evidence.location.open("rb") as fh:
            while block := fh.read(chunk):
                h.update(block)
        return h.hexdigest()
    # For a zip member, hash the member (decompressed by the zip, still gzip if it was gzip).
    # Damaged data ends the hash, not the file: its records before the damage are read and hunted as
    # `casefile hunt` does, and what could be read identifies it, the same on every run.
    damage = contextlib.suppress(zipfile.BadZipFile, EOFError, zlib.error)
    with zipfile.ZipFile(evidence.location) as archive, archive.open(evidence.member) as fh, damage:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hunt_into_case(
    case: Case,
    evidence: Sequence[EvidenceFile],
    ruleset: RuleSet,
    *,
    min_level: Level = Level.INFORMATIONAL,
    progress: StageProgress | None = None,
    plan_cache: Path | None = None,
) -> tuple[int, int, int, int, list[IngestWarning]]:
    """Hunt every file not yet in the case, in transactions of up to GROUP_FILES files (GROUP_BYTES).

    Events are hunted through the fast path's pre-filter (`event_hunter`; its partition plans kept in
    `plan_cache` if given), which gives the reference engine's detections in its order.
    Returns (files added, files already there, events added, detections added, warnings).
    """
    bar = progress or _NoProgress()
    correlations = list(ruleset.correlations)
    suppressed = suppressed_rule_ids(correlations)
    needed = input_rule_ids(correlations)
    hunter = event_hunter(
        [r for r in ruleset.rules if r.info.level >= min_level or r.info.id in needed], plan_cache=plan_cache,
        source=ruleset,
    )
    added = already = events = detections = 0
    warnings: list[IngestWarning] = []
    bar.stage("Hashing evidence", len(evidence))
    todo: list[tuple[EvidenceFile, str]] = []
    seen: set[str] = set()
    for ef in evidence:
        try:
            sha = evidence_sha256(ef)
        except (OSError, zipfile.BadZipFile, KeyError) as exc:  # the archive changed since it was listed
            warnings.append(IngestWarning(ef.path, f"cannot read file: {exc}; skipped"))
            bar.advance()
            continue
        if case.has_evidence(sha) or sha in seen:
            already += 1
        else:
            seen.add(sha)
            todo.append((ef, sha))
        bar.advance()
    bar.stage("Hunting evidence", sum(ef.size for ef, _ in todo))
    fired: dict[str, str | None] = {}
    with long_lived() as settle:
        for group_files in _groups(list(with_next(todo))):
            stored: list[tuple[EvidenceFile, EvidenceBatch]] = []
            with case.evidence_group() as group:
                for (ef, sha), after in group_files:
                    following = after[0] if after is not None else None
                    with group.evidence(sha, ef.path, ef.size, ef.format) as batch:
                        for ev in read_file(ef, batch.warnings.append, following=following):
                            batch.add_event(ev)
                            for d in hunter.match_event(ev):
                                if d.rule.id in needed:
                                    batch.correlation_inputs.append(d)
                                if d.rule.id not in suppressed and d.rule.level >= min_level:
                                    batch.detections.append(d)
                                    fired.setdefault(d.rule.id, d.rule.path)
                    stored.append((ef, batch))
            for ef, batch in stored:  # committed: counted, and shown as done
                added += 1
                events += batch.event_count
                detections += len(batch.detections)
                warnings.extend(batch.warnings)
                bar.advance(ef.size)
            settle()  # the partition plans the group's events needed live as long as the hunt
    _keep_rule_texts(case, ruleset, fired)
    return added, already, events, detections, warnings


#: Files stored per transaction (`Case.evidence_group`), and their bytes at most (a bigger file goes alone):
#: a killed run loses at most one group, which the next run hunts again.
GROUP_FILES = 256
GROUP_BYTES = 16 * 1024 * 1024

_Item = tuple[tuple[EvidenceFile, str], "tuple[EvidenceFile, str] | None"]


def _groups(items: list[_Item]) -> Iterator[list[_Item]]:
    group: list[_Item] = []
    size = 0
    for item in items:
        ef = item[0][0]
        if group and (len(group) >= GROUP_FILES or size + ef.size > GROUP_BYTES):
            yield group
            group, size = [], 0
        group.append(item)
        size += ef.size
    if group:
        yield group


def _keep_rule_texts(case: Case, ruleset: RuleSet, fired: dict[str, str | None]) -> None:
    rows = []
    for rule_id, path in sorted(fired.items()):
        rule = ruleset.rule(rule_id)
        if path is None or rule is None:
            continue
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError:
            continue  # the case still has the rule's metadata; only the STIX pattern is left out
        rows.append((rule_id, rule.info.title, path, text))
    case.add_rule_texts(rows)


def correlate_case(case: Case, ruleset: RuleSet) -> tuple[int, list[IngestWarning]]:
    """Run the correlations over every stored input hit of the case; replace the old results."""
    correlations = list(ruleset.correlations)
    if not correlations:
        return 0, []
    warnings: list[IngestWarning] = []
    hits = correlate(correlations, case.correlation_inputs(), on_warning=warnings.append)
    case.replace_case_detections(DetectionKind.CORRELATION.value, hits)
    return len(hits), warnings


def cluster_case(case: Case, *, window: timedelta = timedelta(hours=2)) -> int:
    clusters = cluster_detections([(sd.id, sd.detection) for sd in case.detections()], window=window)
    case.set_clusters(clusters)
    return len(clusters)


Attributor = Callable[[Case, StageProgress], list[IngestWarning]]
#: Finds indicator hits (Detections of kind IOC) in the case's columnar `events` table; the sharing
#: stage provides one (`casefile.share.match_indicators` over the intel store), wired by the CLI.
IndicatorMatcher = Callable[[duckdb.DuckDBPyConnection], list[Detection]]


def match_case_indicators(case: Case, matcher: IndicatorMatcher) -> int:
    """Replace the case's indicator hits with what `matcher` finds over all its events now."""
    hits = [d for d in matcher(case.connection) if d.kind is DetectionKind.IOC]
    case.replace_case_detections(DetectionKind.IOC.value, hits)
    return len(hits)


def investigate(
    evidence: Sequence[str | Path],
    case_dir: str | Path,
    *,
    rules: Sequence[str | Path],
    placeholders: Mapping[str, list[str]] | None = None,
    rule_cache: Path | None = None,
    attributor: Attributor | None = None,
    indicators: IndicatorMatcher | None = None,
    min_level: Level = Level.INFORMATIONAL,
    window: timedelta = timedelta(hours=2),
    write_outputs: bool = True,
    progress: StageProgress | None = None,
    on_warning: Callable[[IngestWarning], None] | None = None,
    clock: Clock = utc_now,
    case_id: str | None = None,
) -> InvestigateResult:
    """Add `evidence` to the case at `case_dir` (created if needed) and rebuild its results.

    `rules`, `placeholders` and `rule_cache` are what `casefile hunt` takes (see `load_rules`).
    `attributor` (see `casefile.case.attribution.kb_attributor`) attributes the clusters; without
    it attribution is skipped with a warning and everything else still runs. `indicators` matches
    known indicators against every event of the case (re-run each time: the intel may be newer).
    """
    from casefile.report import write_reports

    bar = progress or _NoProgress()
    if not rules:
        raise ConfigError("no Sigma rules: pass --rules DIR (or install them with `casefile rules update`)")
    warnings: list[IngestWarning] = []

    def warn(w: IngestWarning) -> None:
        warnings.append(w)
        if on_warning is not None:
            on_warning(w)

    bar.stage("Loading rules", None)
    ruleset = load_rules(rules, placeholders=placeholders, cache_dir=rule_cache)
    if not ruleset.rules and not ruleset.correlations:
        raise ConfigError(f"no usable Sigma rules under {', '.join(map(str, rules))}")
    discovered: list[IngestWarning] = []
    files = discover(evidence, on_warning=discovered.append)
    for w in discovered:
        warn(w)
    with Case.open_or_create(case_dir, clock=clock, case_id=case_id) as case:
        case.add_warnings(discovered, stage="discover")
        # Rules that could not be used are part of what the case did not look for: say so.
        skipped = [
            IngestWarning(r.path, f"rule {r.rule_id or r.title or ''} skipped: {r.reason}")
            for r in ruleset.skipped
        ]
        case.add_warnings(skipped, stage="rules", replace=True)
        added, already, events, detections, ingest_warnings = hunt_into_case(
            case, files, ruleset, min_level=min_level, progress=bar, plan_cache=rule_cache
        )
        for w in ingest_warnings:
            warn(w)
        bar.stage("Correlating", None)
        n_corr, corr_warnings = correlate_case(case, ruleset)
        case.add_warnings(corr_warnings, stage="correlate", replace=True)
        for w in corr_warnings:
            warn(w)
        n_ioc = 0
        if indicators is not None:
            bar.stage("Matching indicators", None)
            n_ioc = match_case_indicators(case, indicators)
        bar.stage("Clustering", None)
        before = {c.id for c in case.clusters()}
        n_clusters = cluster_case(case, window=window)
        attributed = False
        if attributor is None:
            skip = [
                IngestWarning(
                    case.name,
                    "no ATT&CK knowledge base (pass --kb BUNDLE or run `casefile rules update`): "
                    "attribution skipped",
                )
            ]
            if case.attributions() and {c.id for c in case.clusters()} != before:
                # Results for clusters that no longer exist would mislead: drop them, and say so.
                case.set_attributions({}, attack_version=case.attack_version)
                skip.append(IngestWarning(case.name, "earlier attribution dropped: the clusters changed"))
            case.add_warnings(skip, stage="attribute", replace=True)
            for w in skip:
                warn(w)
        else:
            attr_warnings = attributor(case, bar)
            case.add_warnings(attr_warnings, stage="attribute", replace=True)
            for w in attr_warnings:
                warn(w)
            attributed = bool(case.attributions())
        reports: list[Path] = []
        if write_outputs:
            bar.stage("Writing reports", None)
            reports = write_reports(case)
        return InvestigateResult(
            case_dir=case.root,
            files_found=len(files),
            files_added=added,
            files_already_in_case=already,
            events_added=events,
            detections_added=detections,
            correlation_detections=n_corr,
            indicator_hits=n_ioc,
            rules_loaded=len(ruleset),
            rules_skipped=len(ruleset.skipped),
            clusters=n_clusters,
            attributed=attributed,
            warnings=warnings,
            reports=reports,
        )


__all__ = [
    "Attributor",
    "IndicatorMatcher",
    "InvestigateResult",
    "StageProgress",
    "cluster_case",
    "correlate_case",
    "evidence_sha256",
    "hunt_into_case",
    "investigate",
    "match_case_indicators",
]
