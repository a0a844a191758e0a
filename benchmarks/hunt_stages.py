"""Where one hunt worker's time goes: the EVTX corpus once, in this process, stage by stage.

    .venv/bin/python benchmarks/hunt_stages.py [--passes 4] [--isolate] [--forget]

Builds one `FileHunter` (the worker of `casefile hunt`) with every SigmaHQ rule, hunts the corpus once to
build the partition plans and predicates (that first pass's time is printed: what a worker pays once),
then times `--passes` more passes and prints the best, events/s, detections, confirmations, and
per-stage seconds of one more pass (timers around each stage, which cost far less than cProfile's
per-call overhead): parsing and normalising every record, the pre-filter (partition, anchor lookups,
candidate selection), confirming the candidates, and reading alone over the same files.

`--isolate` parses EVTX in a child process, as `casefile hunt` does with one worker (docs/ingest.md);
the CPU seconds of this process are printed too, since the parse then runs on another core.

A worker remembers the anchors each value hit across batches (`vector.MEMO_BYTES`), so the passes after
the first find every value known, as a hunt of logs that repeat themselves would; `--forget` empties that
memo before each pass, as if every value were new to the worker (the other bound).
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from casefile.config import Settings, shared_data_dir
from casefile.hunt import parallel, vector
from casefile.hunt.rules import load_rules
from casefile.ingest import discover, read_records

TIMES: defaultdict[str, float] = defaultdict(float)
COUNTS: Counter[str] = Counter()


def timed(func: Callable[..., Any], label: str) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            TIMES[label] += time.perf_counter() - start
            COUNTS[label] += 1

    return wrapper


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--isolate", action="store_true", help="parse EVTX in a child process (one-worker hunt)")
    ap.add_argument("--forget", action="store_true", help="empty the anchor memo before each pass")
    args = ap.parse_args(argv)
    shared = shared_data_dir()
    if shared is None:
        print("reference data not found: set CASEFILE_SHARED_DATA", file=sys.stderr)
        return 2
    sigma = shared / "sigma"
    rules = load_rules(
        [sigma / "rules", sigma / "rules-emerging-threats", sigma / "rules-threat-hunting"],
        cache_dir=Settings.from_env().cache_dir,
    )
    dup = "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES/"
    files = sorted(f for f in (shared / "evtx").rglob("*.evtx") if dup not in f.as_posix())
    evidence = discover(files)
    hunter = parallel.FileHunter(rules.rules, isolate=args.isolate)
    start = time.perf_counter()
    hunter.hunt(evidence)  # plans and predicates built here, as in a worker's first task
    first = time.perf_counter() - start
    gc.freeze()  # as a worker does once its rules are loaded
    walls, cpus = [], []
    for _ in range(args.passes):
        if args.forget:
            hunter.hunter._forget()
        start, cpu = time.perf_counter(), time.process_time()
        result = hunter.hunt(evidence)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    events = sum(result.events)
    best = min(walls)
    print(f"rules {len(rules)}, files {len(evidence)}, events {events}, detections {len(result.detections)}")
    print(f"best of {args.passes} passes: {best:.2f} s, {events / best:,.0f} events/s per process")
    print("passes: " + ", ".join(f"{w:.2f}" for w in walls))
    print("CPU of this process: " + ", ".join(f"{c:.2f}" for c in cpus))
    print(f"first pass (partition plans and predicates built as they are met): {first:.2f} s")

    # One more pass with timers around the stages.
    if args.forget:
        hunter.hunter._forget()
    cls: Any = vector.BatchHunter
    cls._candidates = timed(cls._candidates, "pre-filter (partition, anchors)")
    cls._confirm = timed(cls._confirm, "confirming candidates")
    cls.run = timed(cls.run, "batches in all")
    records = hunter.hunter.records
    hunter.hunter.records = SimpleNamespace(
        fields=timed(records.fields, "parsing and normalising"),
        channel_and_id=records.channel_and_id,
        event=timed(records.event, "Events of records with candidates"),
        keyword_text=records.keyword_text,
        layout_key=records.layout_key,
    )
    start = time.perf_counter()
    result = hunter.hunt(evidence)
    print(f"\ntimed pass: {time.perf_counter() - start:.2f} s")
    print(f"  {'confirmations':40} {COUNTS['confirming candidates']:>8}")
    for label, seconds in TIMES.items():
        print(f"  {label:40} {seconds:8.2f} s")

    start = time.perf_counter()
    n = sum(1 for ev in evidence for _raw in read_records(ev, lambda w: None, reader=hunter.reader))
    print(f"  {'reading alone (' + str(n) + ' records)':40} {time.perf_counter() - start:8.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
