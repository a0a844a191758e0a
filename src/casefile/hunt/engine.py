"""Run compiled rules over events: route each event to the programs that can see it, evaluate, emit."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar, cast

from casefile.errors import InputError
from casefile.hunt.correlation import correlate, input_rule_ids, suppressed_rule_ids
from casefile.hunt.evaluate import EventView, Predicate, compile_node, route_key
from casefile.hunt.output import JsonlLines, LineBlock, split_lines
from casefile.hunt.rules import CompiledRule, RuleSet
from casefile.ingest import EvidenceFile, count_files, iter_discover, read_file, with_next
from casefile.models import Detection, DetectionKind, Event, IngestWarning, Level, RuleInfo


class _Entry(NamedTuple):
    """One compiled program in the index (a tuple: unpacked in the hot loop)."""

    info: RuleInfo
    predicate: Predicate


class RuleIndex:
    """Programs by (lower-cased channel, event id), built once per hunt.

    An event is offered to the programs under (channel, its id), (channel, any id) and, for rules
    routed to any channel (`product: windows` alone), (any, any) and (any, its id).
    """

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self._table: dict[tuple[str | None, int | None], list[_Entry]] = defaultdict(list)
        for rule in rules:
            for program in rule.programs:
                entry = _Entry(rule.info, compile_node(program.condition))
                channels: tuple[str | None, ...] = tuple(c.lower() for c in program.route.channels) or (None,)
                ids: tuple[int | None, ...] = program.route.event_ids or (None,)
                for ch in channels:
                    for eid in ids:
                        self._table[(ch, eid)].append(entry)
        self._cache: dict[tuple[str | None, int | None], tuple[_Entry, ...]] = {}

    def candidates(self, channel: str | None, event_id: int | None) -> tuple[_Entry, ...]:
        key = (channel, event_id)
        hit = self._cache.get(key)
        if hit is None:
            ch = channel.lower() if channel else None
            keys: list[tuple[str | None, int | None]] = [(None, None), (None, event_id)]
            if ch is not None:
                keys += [(ch, None), (ch, event_id)]
            seen: set[int] = set()
            out: list[_Entry] = []
            for k in dict.fromkeys(keys):
                for e in self._table.get(k, ()):
                    if id(e) not in seen:
                        seen.add(id(e))
                        out.append(e)
            hit = tuple(out)
            self._cache[key] = hit
        return hit


def _detection(info: RuleInfo, event: Event, matched: dict[str, Any]) -> Detection:
    return Detection(
        rule=info,
        kind=DetectionKind.SIGMA,
        timestamp=event.timestamp,
        computer=event.computer,
        channel=event.channel,
        event_id=event.event_id,
        record_id=event.record_id,
        file=event.source_file,
        matched=matched,
        fields=dict(event.fields),
    )


def match_event(
    index: RuleIndex, event: Event, *, min_level: Level = Level.INFORMATIONAL
) -> Iterator[Detection]:
    """Detections of the indexed rules on one event (no correlation, no suppression)."""
    view = EventView(event.fields)
    check_level = min_level > Level.INFORMATIONAL
    for entry in index.candidates(*route_key(event.channel, event.event_id, event.fields)):
        info, predicate = entry
        if check_level and info.level < min_level:
            continue
        if predicate(view, None):
            matched: dict[str, Any] = {}
            predicate(view, matched)
            yield _detection(info, event, matched)


def _index(ruleset: RuleSet, min_level: Level) -> RuleIndex:
    """The rules worth evaluating: at or above min_level, or feeding a correlation."""
    needed = input_rule_ids(ruleset.correlations) if ruleset.correlations else frozenset()
    return RuleIndex([r for r in ruleset.rules if r.info.level >= min_level or r.info.id in needed])


#: A hunt's hits: detections, or also blocks of lines (`_hunt`'s `lines`).
_Hit = TypeVar("_Hit", Detection, Detection | LineBlock)


def _emit(
    hits: Iterable[_Hit],
    ruleset: RuleSet,
    min_level: Level,
    on_warning: Callable[[IngestWarning], None] | None,
) -> Iterator[_Hit]:
    """Report base hits (minus suppressed and below-level ones), then correlation hits.

    Hits already written as lines are reported as they come: only rules no correlation reads are written
    so, and those are suppressed by none and hunted only at `min_level` or above (`_hunt`)."""
    correlations = list(ruleset.correlations)
    suppressed = suppressed_rule_ids(correlations) if correlations else frozenset()
    needed = input_rule_ids(correlations) if correlations else frozenset()
    fed: list[Detection] = []
    for d in hits:
        if type(d) is LineBlock:
            yield d
            continue
        assert isinstance(d, Detection)
        if d.rule.id in needed:
            fed.append(d)
        if d.rule.id not in suppressed and d.rule.level >= min_level:
            yield d
    if correlations:
        for d in correlate(correlations, fed, on_warning=on_warning):
            if d.rule.level >= min_level:
                yield d


def hunt(
    events: Iterable[Event],
    ruleset: RuleSet,
    *,
    min_level: Level = Level.INFORMATIONAL,
    on_warning: Callable[[IngestWarning], None] | None = None,
) -> Iterator[Detection]:
    """Base-rule detections as the events stream, then correlation detections at the end.

    Rules referenced by a correlation with `generate: false` feed the correlation but are not
    emitted; `min_level` filters what is emitted (correlation inputs are evaluated regardless).
    """
    index = _index(ruleset, min_level)
    hits = (d for event in events for d in match_event(index, event))
    yield from _emit(hits, ruleset, min_level, on_warning)


@dataclass
class HuntStats:
    """Counts for the run summary."""

    files: int = 0
    events: int = 0
    warnings: int = 0
    rules_loaded: int = 0
    rules_skipped: int = 0
    detections: int = 0
    by_rule: dict[str, int] = field(default_factory=dict)


@dataclass
class HuntResult:
    detections: list[Detection]
    stats: HuntStats
    warnings: list[IngestWarning] = field(default_factory=list)


class Progress(Protocol):
    """What run_hunt reports progress to (the CLI adapts a rich progress bar to it), in files as
    `ingest.count_files` counts them: a zip archive is one file, done once all its members are."""

    def start(self, total_files: int | None) -> None:
        """The hunt begins; `total_files` is None until counted (`set_total`)."""
        ...

    def set_total(self, total_files: int) -> None: ...

    def file_done(self, path: str) -> None: ...


def iter_hunt(
    paths: Sequence[str | Path],
    ruleset: RuleSet,
    *,
    stats: HuntStats | None = None,
    min_level: Level = Level.INFORMATIONAL,
    on_warning: Callable[[IngestWarning], None] | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    vectorised: bool = True,
    event_fields: bool = True,
    plan_cache: Path | None = None,
    exclude: Sequence[str | Path] = (),
) -> Iterator[Detection]:
    """Detections of every evidence file under `paths` (but the files of `exclude`: the hunt's own
    output, say), yielded as they are found.

    Same detections and order as `run_hunt`, but nothing is kept: only counters in `stats` (filled
    as the iterator advances; complete once it is exhausted) and, for correlations, the base hits
    of the rules they reference. Warnings go to `on_warning` and are counted, not stored. With
    `workers > 1` at most a few file groups' results wait in the parent (bounded queue); `workers=0`
    takes one per CPU, or none beside this process for evidence that makes one task (the CLI's default).
    With `event_fields=False` the fast path leaves `Detection.fields` empty but for the rules
    correlations read, for callers that do not use it: workers then send far less. `plan_cache`: a
    folder where the fast path keeps the partition plans it builds, for the next hunt with these rules.
    """
    hits = _hunt(
        paths, ruleset, stats=stats, min_level=min_level, on_warning=on_warning, progress=progress,
        workers=workers, vectorised=vectorised, event_fields=event_fields, plan_cache=plan_cache,
        exclude=exclude, lines=False,
    )
    return cast("Iterator[Detection]", hits)  # without `lines`, every hit is a Detection


def iter_hunt_lines(
    paths: Sequence[str | Path],
    ruleset: RuleSet,
    *,
    stats: HuntStats | None = None,
    min_level: Level = Level.INFORMATIONAL,
    on_warning: Callable[[IngestWarning], None] | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    plan_cache: Path | None = None,
    exclude: Sequence[str | Path] = (),
) -> Iterator[str]:
    """The lines `output.write_jsonl` writes for `iter_hunt`'s detections (same options), without their
    newlines: `iter_hunt_jsonl`'s, one by one."""
    for chunk in iter_hunt_jsonl(
        paths, ruleset, stats=stats, min_level=min_level, on_warning=on_warning, progress=progress,
        workers=workers, plan_cache=plan_cache, exclude=exclude,
    ):
        yield from split_lines(chunk)


def iter_hunt_jsonl(
    paths: Sequence[str | Path],
    ruleset: RuleSet,
    *,
    stats: HuntStats | None = None,
    min_level: Level = Level.INFORMATIONAL,
    on_warning: Callable[[IngestWarning], None] | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    plan_cache: Path | None = None,
    exclude: Sequence[str | Path] = (),
) -> Iterator[bytes]:
    """What `output.write_jsonl` writes for `iter_hunt`'s detections (same options), as UTF-8 in chunks of
    whole lines (`output.write_utf8` writes them).

    The fast path's workers write the lines of the rules no correlation reads themselves (`JsonlLines`),
    a batch's run of them in one chunk (`LineBlock`): a line crosses to this process for a fraction of what
    a Detection costs to send, receive and encode, and a chunk is written here as it came.
    """
    encode = JsonlLines().utf8
    for hit in _hunt(
        paths, ruleset, stats=stats, min_level=min_level, on_warning=on_warning, progress=progress,
        workers=workers, vectorised=True, event_fields=False, plan_cache=plan_cache, exclude=exclude,
        lines=True,
    ):
        yield hit.text if type(hit) is LineBlock else encode(hit) + b"\n"  # type: ignore[union-attr,arg-type]


def _hunt(
    paths: Sequence[str | Path],
    ruleset: RuleSet,
    *,
    stats: HuntStats | None,
    min_level: Level,
    on_warning: Callable[[IngestWarning], None] | None,
    progress: Progress | None,
    workers: int,
    vectorised: bool,
    event_fields: bool,
    plan_cache: Path | None,
    exclude: Sequence[str | Path],
    lines: bool,
) -> Iterator[Detection | LineBlock]:
    """`iter_hunt`, and with `lines` the fast path's detections of rules no correlation reads as lines."""
    stats = stats if stats is not None else HuntStats()
    stats.rules_loaded = len(ruleset)
    stats.rules_skipped = len(ruleset.skipped)

    def warn(w: IngestWarning) -> None:
        stats.warnings += 1
        if on_warning is not None:
            on_warning(w)

    report = _FileProgress(progress)
    # Files are found as the hunt goes (workers start on the first ones, and memory does not grow with
    # the number of files); the progress bar's total is counted beside it, without opening them.
    evidence: Iterable[EvidenceFile] = _counted(
        iter_discover(paths, on_warning=warn, on_skip=report.skipped, exclude=exclude), stats
    )
    counting = report.start(paths, exclude)

    def done(ev: EvidenceFile, events: int) -> None:
        stats.events += events
        report.done(ev)

    if vectorised:  # same detections, order and counts; see casefile/hunt/vector.py
        from casefile.hunt.parallel import vector_hits

        needed = input_rule_ids(ruleset.correlations) if ruleset.correlations else frozenset()
        rules = [r for r in ruleset.rules if r.info.level >= min_level or r.info.id in needed]
        hits: Iterable[Detection | LineBlock] = vector_hits(
            evidence, rules, workers=workers, warn=warn, done=done,
            fields_of=None if event_fields else needed, plan_cache=plan_cache, source=ruleset,
            lines_except=needed if lines else None,
        )
    else:  # the reference path: the whole list first, as it always did
        listed = list(evidence)
        if (workers or os.cpu_count() or 1) > 1 and len(listed) > 1:
            hits = _parallel_hits(listed, ruleset, min_level, workers or os.cpu_count() or 1, warn, done)
        else:
            hits = _sequential_hits(listed, _index(ruleset, min_level), warn, done)
    by_rule = stats.by_rule
    for d in _emit(hits, ruleset, min_level, warn):
        ids = d.rule_ids if type(d) is LineBlock else (d.rule.id,)  # type: ignore[union-attr]
        stats.detections += len(ids)
        for rule_id in ids:
            by_rule[rule_id] = by_rule.get(rule_id, 0) + 1
        yield d
    report.finish(counting)


def _counted(evidence: Iterable[EvidenceFile], stats: HuntStats) -> Iterator[EvidenceFile]:
    for ev in evidence:
        stats.files += 1
        yield ev


class _FileProgress:
    """Turns a hunt's evidence files into `Progress` files: one per file on disk (a zip's members
    together), and the files discovery skips."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress
        self.current: str | None = None  # the file on disk whose evidence is being delivered

    def start(self, paths: Sequence[str | Path], exclude: Sequence[str | Path]) -> threading.Thread | None:
        """Starts the bar, and the count of its total in a thread (the walk is mostly system calls)."""
        progress = self.progress
        if progress is None:
            return None
        progress.start(None)

        def count() -> None:
            # a folder that changes or goes during the count leaves the bar without a total, nothing more
            with contextlib.suppress(OSError, InputError):
                progress.set_total(count_files(paths, exclude))

        thread = threading.Thread(target=count, name="casefile-count-files", daemon=True)
        thread.start()
        return thread

    def skipped(self, path: str) -> None:
        if self.progress is not None:
            self.progress.file_done(path)

    def done(self, ev: EvidenceFile) -> None:
        if self.progress is not None and ev.on_disk != self.current:
            if self.current is not None:
                self.progress.file_done(self.current)
            self.current = ev.on_disk

    def finish(self, counting: threading.Thread | None) -> None:
        if self.progress is not None and self.current is not None:
            self.progress.file_done(self.current)
            self.current = None
        if counting is not None:
            counting.join()


def run_hunt(
    paths: Sequence[str | Path],
    ruleset: RuleSet,
    *,
    min_level: Level = Level.INFORMATIONAL,
    on_warning: Callable[[IngestWarning], None] | None = None,
    progress: Progress | None = None,
    workers: int = 1,
    vectorised: bool = True,
) -> HuntResult:
    """Read every evidence file under `paths`, hunt with `ruleset`, keep every detection.

    Ingest warnings (damaged files/records) are collected in the result and passed to
    `on_warning`; the run goes on. With `workers > 1`, files are hunted in that many processes
    (each compiles the rule set once); detections come out in the same order as with one.
    `vectorised` hunts EVTX through the batched pre-filter (`hunt/vector.py`), the reference
    evaluator confirming every hit; False evaluates every routed program on every event.
    Holds every detection in memory: for large evidence, stream with `iter_hunt` instead.
    """
    stats = HuntStats()
    warnings: list[IngestWarning] = []

    def warn(w: IngestWarning) -> None:
        warnings.append(w)
        if on_warning is not None:
            on_warning(w)

    detections = list(
        iter_hunt(
            paths, ruleset, stats=stats, min_level=min_level, on_warning=warn, progress=progress,
            workers=workers, vectorised=vectorised,
        )
    )
    return HuntResult(detections, stats, warnings)


def _file_hits(
    ev: EvidenceFile, index: RuleIndex, warn: Callable[[IngestWarning], None],
    following: EvidenceFile | None = None,
) -> tuple[list[Detection], int]:
    hits: list[Detection] = []
    n = 0
    for event in read_file(ev, warn, following=following):
        n += 1
        hits.extend(match_event(index, event))
    return hits, n


def _sequential_hits(
    evidence: Sequence[EvidenceFile],
    index: RuleIndex,
    warn: Callable[[IngestWarning], None],
    done: Callable[[EvidenceFile, int], None],
) -> Iterator[Detection]:
    for ev, following in with_next(evidence):
        hits, n = _file_hits(ev, index, warn, following)
        yield from hits
        done(ev, n)


# Worker-process state: each worker compiles the rule set once (set by its pool initializer).
_worker_index: RuleIndex | None = None


def _init_worker(ruleset: RuleSet, min_level: Level) -> None:
    global _worker_index
    _worker_index = _index(ruleset, min_level)


def _worker_file(ev: EvidenceFile) -> tuple[list[Detection], list[IngestWarning], int]:
    assert _worker_index is not None, "worker used without its initializer"
    warnings: list[IngestWarning] = []
    hits, n = _file_hits(ev, _worker_index, warnings.append)
    return hits, warnings, n


def _parallel_hits(
    evidence: Sequence[EvidenceFile],
    ruleset: RuleSet,
    min_level: Level,
    workers: int,
    warn: Callable[[IngestWarning], None],
    done: Callable[[EvidenceFile, int], None],
) -> Iterator[Detection]:
    # spawn, not fork: the parent may run threads (progress display, servers) that fork would copy
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(ruleset, min_level)
    ) as pool:
        for ev, (hits, file_warnings, n) in zip(evidence, pool.map(_worker_file, evidence), strict=True):
            for w in file_warnings:
                warn(w)
            yield from hits
            done(ev, n)


__all__ = [
    "HuntResult", "HuntStats", "Progress", "RuleIndex", "hunt", "iter_hunt", "iter_hunt_jsonl",
    "iter_hunt_lines", "match_event", "run_hunt",
]
