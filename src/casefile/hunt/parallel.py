"""The fast hunt path: worker processes read groups of files as raw JSON and hunt them in batches.

Each worker owns one `VectorIndex` (programs by partition, with their guards); the parent only hands
out file groups in order and merges what comes back, so the detections, their order and the event
counts are those of the serial engine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import faulthandler
import functools
import gc
import itertools
import json
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from casefile.errors import InputError
from casefile.heap import collect_less, load_pickle, long_lived
from casefile.hunt.cache import PlanStore
from casefile.hunt.output import JsonlLines, LineBlock, RuleLine, pack_lines
from casefile.hunt.rules import CompiledRule, RuleSet
from casefile.hunt.vector import BatchHunter, RawJson, VectorIndex
from casefile.ingest import EvidenceFile, open_evidence, read_file, read_records, with_next
from casefile.ingest.pipeline import SHAPE_ERRORS, defeated
from casefile.ingest.plugins import READERS, SPLIT_HEAD, PartReader
from casefile.ingest.readers.evtx import COMPRESSED_ERRORS, EvtxReader
from casefile.ingest.shapes.evtx_json import EvtxJsonShape
from casefile.models import Detection, IngestWarning

#: Records hunted per batch: a batch's records stay a few tens of MB. (The anchors each value hit are
#: remembered across batches, up to `vector.MEMO_BYTES`.)
BATCH_RECORDS = 20_000
#: Evidence bytes per task handed to a worker (a larger file is split where its reader can: `_groups`).
TASK_BYTES = 16 * 1024 * 1024
#: A compressed file (zip member, gzip) larger than a task is unpacked to be split only up to this size.
COPY_LIMIT = 16 << 30
#: What unpacking a compressed file may raise (it is then read as it always was, and its reader reports it);
#: zipfile raises RuntimeError and NotImplementedError for members it cannot read (encrypted, unknown method).
_COPY_ERRORS = (InputError, *COMPRESSED_ERRORS, RuntimeError, NotImplementedError)
#: Tasks in flight per worker; bounds the results waiting in the parent.
IN_FLIGHT = 2
#: Detections a task holds before it moves them to a file of its hunt's spill folder: a file that is not
#: split (compressed, a JSON array, damaged EVTX) is one task however large, and a few hundred bytes per
#: detection would otherwise grow with it, in the worker and then in the parent.
SPILL_HITS = 20_000
#: A worker that goes this many seconds without finishing a batch or starting a file ends itself. Crafted
#: (or damaged) EVTX bytes can send the parser into an endless loop that holds the GIL, which nothing in
#: the worker can interrupt; the parent then hunts the files it had given out one at a time, to name the
#: file that stops a worker and go on without it. A batch takes about a second.
STALL_SECONDS = 120.0


class _Unparsed(dict[str, Any]):
    """A raw EVTX record left as JSON text (the reader's `decode` hook); it is empty as a dict."""

    __slots__ = ("text",)

    text: str | bytes


def _keep_text(text: str | bytes) -> _Unparsed:
    d = _Unparsed()
    d.text = text
    return d


class _Texts(dict[str, Any]):
    """The records of one EVTX chunk as (number, JSON text) pairs (the reader's `decode_chunk` hook: a text
    that is not ASCII as UTF-8 bytes); it is empty as a dict."""

    __slots__ = ("texts",)

    texts: list[tuple[int, str | bytes]]


def _keep_texts(texts: list[tuple[int, str | bytes]]) -> _Texts:
    d = _Texts()
    d.texts = texts
    return d


def _none(fields: dict[str, Any]) -> None:
    return None


_fast_fields: Callable[[str | bytes], dict[str, Any] | None] | None
_keyword_text: Callable[[dict[str, Any]], bytes | None]
_layout_key: Callable[[dict[str, Any]], str | None]
try:  # Cython proper: only a compiled install has it
    from casefile.ingest.shapes._evtx_fast import fields_of as _fast_fields
    from casefile.ingest.shapes._evtx_fast import keyword_text as _keyword_text
    from casefile.ingest.shapes._evtx_fast import layout_key as _layout_key
except ImportError:
    _fast_fields, _keyword_text, _layout_key = None, _none, _none


def _fields(raw: RawJson, on_warning: Callable[[IngestWarning], None]) -> dict[str, Any] | None:
    """A raw record's fields as the serial path's Event holds them (same JSON decoding, same shape, same
    warnings); the hunt makes the record's Event (`EvtxJsonShape.event`) only when a rule might match it.

    Most records are read straight from their text where the compiled `_evtx_fast` is installed; it gives
    up (None) on the rest. orjson parses about twice as fast as `json`, and to the same objects for what the
    evtx parser writes (its integers are at most 64 bits, which orjson keeps as int; wider ones it would make
    floats). What orjson refuses (NaN, lone surrogates, deep nesting) `json` decides, with its own error
    message.
    """
    if _fast_fields is not None:
        fields = _fast_fields(raw.text)
        if fields is not None:
            return fields
    try:
        data = orjson.loads(raw.text)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(raw.text)
        except (ValueError, RecursionError) as exc:
            on_warning(IngestWarning(raw.source, f"EVTX record is not valid JSON: {exc}", raw.index))
            return None
    if not isinstance(data, dict):
        on_warning(IngestWarning(raw.source, f"EVTX record is a JSON {type(data).__name__}", raw.index))
        return None
    try:  # what `normalise` does with the reader's label, evtx-json
        return EvtxJsonShape.fields(data)
    except SHAPE_ERRORS as exc:
        on_warning(defeated(raw.source, raw.index, exc))
        return None


class EvtxRecords:
    """Raw EVTX records as a worker hunts them (`vector.RecordShape`): the evtx-json shape's fields, partition
    and Event."""

    fields = staticmethod(_fields)
    channel_and_id = staticmethod(EvtxJsonShape.channel_and_id)
    event = staticmethod(EvtxJsonShape.event)
    keyword_text = staticmethod(_keyword_text)
    layout_key = staticmethod(_layout_key)


#: What a hunt delivers: a detection, or a run of them written as their JSONL lines (`FileHunter`'s
#: `lines_except`).
Hit = Detection | LineBlock
#: What a task holds as it goes: also lines one by one, packed into blocks before they leave it.
_Found = Detection | RuleLine | LineBlock


@dataclass
class TaskResult:
    """What one group of files gave: detections in order, warnings, events per file. `spilled`: files of
    pickled lists of detections (`Spill`) that come, in order, before `detections`; `held`: how many
    detections `detections` holds (a `LineBlock` holds many). Lines are packed into blocks (`pack`)
    before a result leaves its worker or goes to a file."""

    detections: list[_Found]
    warnings: list[IngestWarning]
    events: list[int]
    spilled: list[str] = dataclasses.field(default_factory=list)
    held: int = 0

    def hits(self) -> Iterator[Hit]:
        """The detections, those of the spilled files first (read back, then deleted)."""
        for path in self.spilled:  # each holds one list (`Spill`)
            try:
                with open(path, "rb") as fh:
                    chunk: list[Hit] = pickle.load(fh)
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            yield from chunk
        yield from pack_lines(self.detections)

    def pack(self) -> None:
        """Packs each run of lines into one `LineBlock` (`pack_lines`): one object to send, and to write."""
        self.detections = pack_lines(self.detections)  # type: ignore[assignment]


class Spill:
    """Moves a task's detections to files in `folder` once it holds `at` of them (see `SPILL_HITS`)."""

    def __init__(self, folder: str | None, at: int = SPILL_HITS) -> None:
        self.folder = folder
        self.at = at

    def __call__(self, result: TaskResult, force: bool = False) -> None:
        """Moves `result.detections` to a new file of `result.spilled` if they are `at` or more (or any, with
        `force`). Without a folder, they stay."""
        if self.folder is None or not result.detections or (result.held < self.at and not force):
            return
        fd, path = tempfile.mkstemp(prefix="hits-", suffix=".pickle", dir=self.folder)
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(pack_lines(result.detections), fh, pickle.HIGHEST_PROTOCOL)
        result.spilled.append(path)
        result.detections.clear()
        result.held = 0


def _add_and_spill(add: Callable[[list[Any]], None], spill: Spill, out: TaskResult, found: list[Any]) -> None:
    add(found)
    out.held += len(found)
    spill(out)


class FileHunter:
    """Hunts file groups in the current process (a worker, or the parent with one worker)."""

    def __init__(
        self,
        rules: Sequence[CompiledRule],
        *,
        batch_records: int = BATCH_RECORDS,
        fields_of: frozenset[str] | None = None,
        isolate: bool = False,
        plans: PlanStore | None = None,
        lines_except: frozenset[str] | None = None,
        spill: Spill | None = None,
    ) -> None:
        """`isolate`: parse EVTX in a child process (`EvtxReader`), for a hunter in a process that must not
        hang on a parser that loops; a worker has its stall timer instead, and parses in its own process.
        `plans`: partition plans kept on disk for these rules (`PlanStore`). `lines_except`: if given,
        detections of other rules are delivered as their JSONL lines, each run of them one `LineBlock`: a
        line costs a fraction of what a Detection costs to send, receive and then encode in the parent, and
        a block of them one write there. `spill`: where a task's
        detections go once it holds many (none: they stay)."""
        self.index = VectorIndex(rules, plans)
        self.lines = JsonlLines()
        self.hunter = BatchHunter(
            self.index, EvtxRecords(), fields_of=fields_of,
            lines=self.lines if lines_except is not None else None, lines_except=lines_except or frozenset(),
        )
        self.reader = EvtxReader(threads=1, decode=_keep_text, isolate=isolate, decode_chunk=_keep_texts)
        self.batch_records = batch_records
        self.lines_except = lines_except
        self.spill = spill if spill is not None else Spill(None)
        #: Called at each file and batch: re-arms a worker's stall timer (see STALL_SECONDS).
        self.alive: Callable[[], None] = _nothing

    def hunt(self, evidence: Sequence[EvidenceFile]) -> TaskResult:
        warnings: list[IngestWarning] = []
        warn = warnings.append
        detections: list[_Found] = []
        add = detections.extend if self.lines_except is None else self._as_lines(detections)
        events = [0] * len(evidence)
        out = TaskResult(detections, warnings, events)
        # (not closures: compiled, they would tie this call's scope to themselves, and a worker freezes what a
        # task leaves: see tests/hunt/test_cycles.py) Batches come with their lines made (`BatchHunter`).
        deliver = functools.partial(_add_and_spill, add, self.spill, out)
        deliver_batch = functools.partial(_add_and_spill, detections.extend, self.spill, out)

        batch: list[RawJson] = []
        owner: list[int] = []  # file position of each batch record

        alive = self.alive

        def flush() -> None:
            alive()
            result = self.hunter.run(batch, warn)
            deliver_batch(result.detections)
            counts = Counter(owner)  # records per file position, then less those that did not normalise
            for ri in result.not_events:
                counts[owner[ri]] -= 1
            for pos, n in counts.items():
                events[pos] += n
            batch.clear()
            owner.clear()

        for pos, (ev, following) in enumerate(with_next(evidence)):
            alive()
            if ev.format != self.reader.name:
                flush()
                for event in read_file(ev, warn):
                    events[pos] += 1
                    if not events[pos] % self.batch_records:
                        alive()
                    deliver(self.hunter.match_event(event))
                continue
            path = ev.path
            limit = self.batch_records
            # (the file read next matters only where chunks are parsed apart: see `EvtxReader`)
            ahead = following if self.reader.isolate else None
            for raw in read_records(ev, warn, reader=self.reader, following=ahead):
                data = raw.data
                texts: Iterable[tuple[int, str | bytes]]
                if type(data) is _Texts:  # a chunk's records (most)
                    texts = data.texts
                else:
                    texts = ((raw.index, data.text if isinstance(data, _Unparsed) else json.dumps(data)),)
                for number, text in texts:
                    batch.append(RawJson(text, number, path))
                    owner.append(pos)
                    if len(batch) >= limit:
                        flush()
        flush()
        out.pack()
        return out

    def _as_lines(self, out: list[_Found]) -> Callable[[list[Detection]], None]:
        """Adds detections to `out`, those of rules outside `lines_except` as their lines."""
        keep = self.lines_except or frozenset()
        utf8 = self.lines.utf8

        def deliver(found: list[Detection]) -> None:
            for d in found:
                rule_id = d.rule.id
                out.append(d if rule_id in keep else (rule_id, utf8(d)))

        return deliver


def event_hunter(
    rules: Sequence[CompiledRule], *, plan_cache: Path | None = None, source: RuleSet | None = None
) -> BatchHunter:
    """The fast path for events handed over one at a time (`BatchHunter.match_event`), as a case's ingest
    hunts them: the detections, in order, that `engine.match_event` gives with a `RuleIndex` of `rules`.

    `plan_cache`: a folder where partition plans are kept between runs (`PlanStore`); `source`: the rule
    set `rules` were taken from (see `rules_pickle`)."""
    plans = None
    if plan_cache is not None:
        plans = PlanStore.for_rules(plan_cache, rules_pickle(rules, source))
    return BatchHunter(VectorIndex(rules, plans), EvtxRecords())


def rules_pickle(rules: Sequence[CompiledRule], source: RuleSet | None = None) -> bytes:
    """A pickle that loads to `rules` (`load_pickled_rules`): the pickle `source` was loaded from when
    `rules` are all of its rules (`RuleSet.pickled`), else a new one (0.1-0.2 s for every SigmaHQ rule).
    Workers load it, and the partition plans' folder is named by it."""
    if (
        source is not None and source.pickled is not None and len(rules) == len(source.rules)
        and all(a is b for a, b in zip(rules, source.rules, strict=True))
    ):
        return source.pickled
    return pickle.dumps(tuple(rules), pickle.HIGHEST_PROTOCOL)


def load_pickled_rules(data: bytes) -> tuple[CompiledRule, ...]:
    """The rules of a `rules_pickle`."""
    loaded = load_pickle(data)
    return tuple(loaded.rules if isinstance(loaded, RuleSet) else loaded)


def _groups(
    evidence: Iterable[EvidenceFile], task_bytes: int, split: bool = False, copies: _Copies | None = None
) -> Iterator[list[EvidenceFile]]:
    """Files in groups of about `task_bytes`, in order; with `split`, a file larger than that in parts of
    about that, each its own group, where its reader splits it (`PartReader.parts`: an intact EVTX file,
    NDJSON, CSV), so that workers share a large file. Parts may be found as the file is read through. A
    compressed one is split from a plain copy (`copies`)."""
    group: list[EvidenceFile] = []
    size = 0
    for ev in evidence:
        parts = None
        if split:
            plain = copies.plain(ev, task_bytes) if copies is not None else None
            if plain is not None:
                ev = plain  # its parts, or the copy whole: what the worker would have unpacked
            parts = _parts(ev, task_bytes)
        if parts is not None:
            if group:
                yield group
                group, size = [], 0
            for part in parts:
                yield [dataclasses.replace(ev, part=part)]
            continue
        group.append(ev)
        size += ev.size
        if size >= task_bytes:
            yield group
            group, size = [], 0
    if group:
        yield group


class _Copies:
    """Plain copies of large compressed files (zip members, gzip), unpacked by this process into the hunt's
    private folder so that they can be split between workers: a compressed file is read from its start,
    so it would otherwise be one task, hunted by one worker. A copy is removed once its file is done."""

    def __init__(self, folder: str | None, limit: int = COPY_LIMIT) -> None:
        self.folder = folder
        self.limit = limit
        self._originals: dict[str, EvidenceFile] = {}  # copy's path -> the file it holds

    def plain(self, ev: EvidenceFile, task_bytes: int) -> EvidenceFile | None:
        """A plain copy of `ev` (same `path`, which events and warnings name), or None: not compressed, no
        larger than a task, of a reader that cannot split, or not unpacked whole (damaged, larger than
        `limit` or than half the room free in the folder): its worker then reads it as it always did, and
        reports what is wrong."""
        if self.folder is None or (ev.member is None and not ev.gzip):
            return None
        reader = READERS.get(ev.format)
        if not isinstance(reader, PartReader):
            return None
        try:
            # Half the room at most, whatever the file says of its size (a gzip trailer can lie): the rest
            # is left to the hunt, and a temporary folder may be memory (tmpfs).
            budget = min(self.limit, shutil.disk_usage(self.folder).free // 2)
        except OSError:
            return None
        if not task_bytes < _unpacked_size(ev) <= budget:
            return None  # (a zip member's size is known: one past the budget is not unpacked in vain)
        path = None
        try:
            with open_evidence(ev) as stream:
                head = stream.read(SPLIT_HEAD)
                if not reader.may_split(head):
                    return None  # (a JSON array, UTF-16 CSV, damaged EVTX: unpacked for nothing)
                fd, path = tempfile.mkstemp(prefix="copy-", dir=self.folder)
                with os.fdopen(fd, "wb") as out:
                    block, size = head, 0
                    while block:
                        size += len(block)
                        if size > budget:
                            raise OSError(f"larger than {budget} bytes")
                        out.write(block)
                        block = stream.read(1 << 20)
        except _COPY_ERRORS:
            if path is not None:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            return None
        self._originals[path] = ev
        return EvidenceFile(ev.path, size, ev.format, path)

    def original(self, ev: EvidenceFile) -> EvidenceFile:
        """The file `ev` stands for: itself, or the file a copy holds (the copy is then removed)."""
        original = self._originals.pop(ev.on_disk, None)
        if original is None:
            return ev
        with contextlib.suppress(OSError):
            os.unlink(ev.on_disk)
        return original


def _unpacked_size(ev: EvidenceFile) -> int:
    """About how many bytes a compressed file unpacks to: a zip member's size is its own; a gzip stream ends
    with its size modulo 4 GiB (a single-member stream, as logs are written)."""
    if not ev.gzip:
        return ev.size
    try:
        with open(ev.on_disk, "rb") as fh:
            if ev.member is not None or fh.seek(0, os.SEEK_END) < 18:
                return ev.size  # (a gzip member of a zip: its size is the compressed one's, a lower bound)
            fh.seek(-4, os.SEEK_END)
            wrapped = int.from_bytes(fh.read(4), "little")
    except OSError:
        return ev.size
    return max(ev.size, wrapped)


class _PerFile:
    """A `done` callback that is told the parts of a file (consecutive) and tells the file once (the file a
    copy holds, for a copy's: `copies`)."""

    def __init__(self, done: Callable[[EvidenceFile, int], None], copies: _Copies | None = None) -> None:
        self.done = done
        self.copies = copies
        self.pending: tuple[EvidenceFile, int] | None = None  # a split file's parts so far

    def __call__(self, ev: EvidenceFile, events: int) -> None:
        if self.pending is not None:
            whole, counted = self.pending
            if ev.part is not None and ev.on_disk == whole.on_disk and ev.path == whole.path:
                self.pending = (whole, counted + events)
                return
            self.pending = None
            self._tell(whole, counted)
        if ev.part is None:
            self._tell(ev, events)
        else:
            self.pending = (dataclasses.replace(ev, part=None), events)

    def flush(self) -> None:
        if self.pending is not None:
            whole, counted = self.pending
            self.pending = None
            self._tell(whole, counted)

    def _tell(self, ev: EvidenceFile, events: int) -> None:
        self.done(self.copies.original(ev) if self.copies is not None else ev, events)


def _parts(ev: EvidenceFile, task_bytes: int) -> Iterable[tuple[int, ...]] | None:
    """The parts of a plain file larger than a task, if its reader splits it (`PartReader.parts`)."""
    if ev.member is not None or ev.gzip or ev.size <= task_bytes:
        return None
    reader = READERS.get(ev.format)
    return reader.parts(ev.on_disk, task_bytes) if isinstance(reader, PartReader) else None


def _nothing() -> None:
    pass


class _StallTimer:
    """Ends this process if `alive` is not called for `seconds` (faulthandler's timer is a C thread: it
    fires even while the parser holds the GIL). Re-arming costs about 0.25 ms, so it is done at most once
    a second: the limit is then between `seconds - 1` and `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.armed_at: float | None = None
        self.sink = open(os.devnull, "w")  # noqa: SIM115  (for the process's life: the timer writes to it)

    def alive(self) -> None:
        now = time.monotonic()
        if self.armed_at is None or now - self.armed_at >= 1.0:
            self.armed_at = now
            faulthandler.dump_traceback_later(self.seconds, exit=True, file=self.sink)

    def stop(self) -> None:
        faulthandler.cancel_dump_traceback_later()
        self.armed_at = None


# Worker-process state, set by the pool initializer.
_worker: FileHunter | None = None
_timer: _StallTimer | None = None


def _init_worker(
    rules: str | bytes, batch_records: int, fields_of: frozenset[str] | None, stall_seconds: float,
    plans: PlanStore | None, lines_except: frozenset[str] | None, spill: Spill,
) -> None:
    """`rules`: the file holding a `rules_pickle`, or the pickle itself."""
    global _worker, _timer
    loaded = load_pickled_rules(Path(rules).read_bytes() if isinstance(rules, str) else rules)
    _worker = FileHunter(
        loaded, batch_records=batch_records, fields_of=fields_of, plans=plans, lines_except=lines_except,
        spill=spill,
    )
    _timer = _StallTimer(stall_seconds)
    _worker.alive = _timer.alive
    # The rule set is most of the worker's objects and lives as long as it: out of the collector's sight,
    # the full collections that the batches' allocations trigger do not walk it again and again; and those
    # come less often (`collect_less`).
    gc.freeze()
    collect_less()


def _worker_task(evidence: list[EvidenceFile]) -> TaskResult:
    assert _worker is not None and _timer is not None, "worker used without its initializer"
    try:
        return _worker.hunt(evidence)
    finally:
        _timer.stop()  # an idle worker waits for its next task
        # What the task leaves (partition plans built as their partitions are first met, memo entries) lives
        # as long as the worker: out of the collector's sight too. A pass makes no reference cycles (none
        # found by gc.collect() after a pass over the corpus), so nothing freed later is held for good.
        gc.freeze()


def vector_hits(
    evidence: Iterable[EvidenceFile],
    rules: Sequence[CompiledRule],
    *,
    workers: int,
    warn: Callable[[IngestWarning], None],
    done: Callable[[EvidenceFile, int], None],
    batch_records: int = BATCH_RECORDS,
    task_bytes: int = TASK_BYTES,
    fields_of: frozenset[str] | None = None,
    stall_seconds: float = STALL_SECONDS,
    plan_cache: Path | None = None,
    source: RuleSet | None = None,
    lines_except: frozenset[str] | None = None,
    spill_hits: int = SPILL_HITS,
) -> Iterator[Hit]:
    """Base-rule detections of `rules` over `evidence`, in the serial engine's order.

    Reports warnings and per-file event counts through `warn` and `done`, file by file in order. Only
    detections of the rule ids in `fields_of` carry their event's fields, if it is given. `workers=0`
    picks one per CPU, or none beside this process when the evidence is one task: starting workers
    (spawning, loading the rules in each) costs more than a few files take. With workers, an intact EVTX
    file larger than `task_bytes` is handed out in parts (`_groups`), told done as one file. A worker that
    stalls (`stall_seconds`) or dies costs only the file (or part) it was on, named in a warning; in this
    process (one worker) EVTX chunks are parsed in a child process, stopped if one loops (`EvtxReader`).
    With `plan_cache` (a folder) the partition plans built are kept there for the next hunt with the same
    rules (`PlanStore`). `source`: the rule set `rules` were taken from, whose pickle the workers then load
    if it holds just these rules (`rules_pickle`). With `lines_except`, the detections of other rules come
    as their JSONL lines, encoded where they are found, each run of them one `LineBlock`. A task that holds
    `spill_hits` detections moves them to a file (`Spill`), read back here in order: memory does not grow
    with a file that is not split.
    """
    # Large files are split between workers only where there are several (parts are parsed in the worker,
    # which has its stall timer; hunting alone, this process parses EVTX apart instead). Their parts' counts
    # are told as one file's.
    split = workers > 1 or (workers == 0 and (os.cpu_count() or 1) > 1)
    with _spill_folder() as folder:  # (also where compressed files are unpacked to be split: `_Copies`)
        copies = _Copies(folder)
        per_file = _PerFile(done, copies)
        done = per_file
        groups: Iterator[list[EvidenceFile]] = _groups(evidence, task_bytes, split, copies)
        if workers == 0:
            first = list(itertools.islice(groups, 2))
            workers = (os.cpu_count() or 1) if len(first) > 1 else 1
            groups = itertools.chain(first, groups)
        # pickled once here (if at all), not once per worker process started; the plans' folder is named by it
        pickled = rules_pickle(rules, source) if workers > 1 or plan_cache else b""
        plans = PlanStore.for_rules(plan_cache, pickled) if plan_cache is not None else None
        spill = Spill(folder, spill_hits)
        if workers <= 1:
            hunter = FileHunter(
                rules, batch_records=batch_records, fields_of=fields_of, isolate=True, plans=plans,
                lines_except=lines_except, spill=spill,
            )
            try:
                with long_lived() as settle:
                    for group in groups:
                        result = hunter.hunt(group)
                        settle()  # the partition plans the group's files needed, as a worker does
                        yield from _deliver(group, result, warn, done)
                per_file.flush()
            finally:
                hunter.reader.close()
            return
        yield from _in_workers(
            groups, workers, pickled, stall_seconds, warn, per_file, spill,
            (batch_records, fields_of, stall_seconds, plans, lines_except, spill),
        )


@contextlib.contextmanager
def _spill_folder() -> Iterator[str | None]:
    """A new private folder for the hunt's spilled detections (`Spill`) and unpacked copies (`_Copies`),
    removed with what it holds at the end; None where no temporary folder can be made (detections then stay
    in memory, and compressed files are not split)."""
    try:
        folder = tempfile.mkdtemp(prefix="casefile-hits-")
    except OSError:
        yield None
        return
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _in_workers(
    groups: Iterator[list[EvidenceFile]],
    workers: int,
    pickled: bytes,
    stall_seconds: float,
    warn: Callable[[IngestWarning], None],
    per_file: _PerFile,
    spill: Spill,
    initargs: tuple[Any, ...],
) -> Iterator[Hit]:
    """`vector_hits` in worker processes (`initargs`: `_init_worker`'s after the rules)."""
    # The workers read the rules from a file: a spawned worker's arguments are written into a pipe that
    # it reads only once it has imported what it needs, so megabytes of them would start the workers one
    # after the other (about 0.2 s each). Without a writable temporary folder they go that slower way.
    rules_file = _private_copy(pickled)
    try:
        # the rule set is this process's too; what flows through it is the workers' detections
        with long_lived():
            yield from _pooled(
                groups, workers, (rules_file or pickled, *initargs), stall_seconds, warn, per_file, spill
            )
        per_file.flush()
    finally:
        if rules_file is not None:
            with contextlib.suppress(OSError):
                os.unlink(rules_file)


def _private_copy(data: bytes) -> str | None:
    """`data` in a new temporary file only this user can read or write (its path), or None if none can be
    written."""
    try:
        fd, path = tempfile.mkstemp(prefix="casefile-rules-", suffix=".pickle")
    except OSError:
        return None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return None
    return path


def _pooled(
    groups: Iterator[list[EvidenceFile]],
    workers: int,
    initargs: tuple[Any, ...],
    stall_seconds: float,
    warn: Callable[[IngestWarning], None],
    done: Callable[[EvidenceFile, int], None],
    spill: Spill,
) -> Iterator[Hit]:
    """`vector_hits` with worker processes (`initargs`: `_init_worker`'s)."""

    def pool_of(n: int) -> ProcessPoolExecutor:
        # spawn, not fork: the parent may run threads (progress display, DuckDB) that fork would copy
        return ProcessPoolExecutor(
            max_workers=n, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
            initargs=initargs,
        )

    pending: deque[tuple[list[EvidenceFile], Future[TaskResult] | None]] = deque()
    while True:
        pool = pool_of(workers)
        try:
            for group in groups:
                pending.append((group, None))  # before submitting, which a broken pool refuses
                pending[-1] = (group, pool.submit(_worker_task, group))
                if len(pending) >= workers * IN_FLIGHT:
                    yield from _deliver(pending[0][0], _result(pending[0][1]), warn, done)
                    pending.popleft()
            while pending:
                yield from _deliver(pending[0][0], _result(pending[0][1]), warn, done)
                pending.popleft()
            return
        except BrokenProcessPool:
            pass  # some worker stalled or died, on a file not known: see below
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        # The groups given out are delivered as their tasks finished or, if they did not, hunted again
        # one file at a time by one worker; then the rest goes on with a new pool.
        alone = _OneByOne(pool_of, stall_seconds, spill)
        try:
            while pending:
                group, fut = pending.popleft()
                try:
                    result = _result(fut)
                except (BrokenProcessPool, CancelledError):
                    result = alone.hunt(group)
                yield from _deliver(group, result, warn, done)
        finally:
            alone.close()


def _result(fut: Future[TaskResult] | None) -> TaskResult:
    if fut is None:
        raise BrokenProcessPool("the task was not submitted")
    return fut.result()


class _OneByOne:
    """Hunts groups one file at a time in a one-worker pool (started on first use, shared by the groups of
    one recovery: each start loads the rules and builds plans again); a file that stops its worker is
    reported and counted as no events, and the pool is replaced."""

    def __init__(
        self, pool_of: Callable[[int], ProcessPoolExecutor], stall_seconds: float, spill: Spill
    ) -> None:
        self.pool_of = pool_of
        self.stall_seconds = stall_seconds
        self.spill = spill
        self.pool: ProcessPoolExecutor | None = None

    def hunt(self, group: list[EvidenceFile]) -> TaskResult:
        out = TaskResult([], [], [])
        for ev in group:
            if self.pool is None:
                self.pool = self.pool_of(1)
            try:
                result = self.pool.submit(_worker_task, [ev]).result()
            except BrokenProcessPool:
                self.close()
                what, its, it = "not hunted", "its", "it"
                reader = READERS.get(ev.format)
                if ev.part is not None and isinstance(reader, PartReader):
                    what, its, it = f"{reader.part_name(ev.part)} not hunted", "their", "them"
                result = TaskResult([], [IngestWarning(
                    ev.path,
                    f"{what}: the worker reading {it} stopped responding for {self.stall_seconds:g} s or "
                    f"died (the EVTX parser looping or crashing on crafted or damaged bytes?); {its} "
                    f"detections, if any, are lost and the hunt went on without {it}",
                )], [0])
            if result.spilled:  # what `out` holds comes before the file's spilled detections
                self.spill(out, force=True)
                out.spilled.extend(result.spilled)
            out.detections.extend(result.detections)
            out.held += result.held
            out.warnings.extend(result.warnings)
            out.events.extend(result.events)
        return out

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None


def _deliver(
    group: list[EvidenceFile],
    result: TaskResult,
    warn: Callable[[IngestWarning], None],
    done: Callable[[EvidenceFile, int], None],
) -> Iterator[Hit]:
    for w in result.warnings:
        warn(w)
    yield from result.hits()
    for ev, n in zip(group, result.events, strict=True):
        done(ev, n)


__all__ = [
    "BATCH_RECORDS", "SPILL_HITS", "FileHunter", "Hit", "Spill", "TaskResult", "event_hunter", "vector_hits",
]
