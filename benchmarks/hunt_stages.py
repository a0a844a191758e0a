"""Where one hunt worker's time goes: the EVTX corpus once, in this process, stage by stage.

    .venv/bin/python benchmarks/hunt_stages.py [--passes 4]

Builds one `FileHunter` (the worker of `casefile hunt`) with every SigmaHQ rule, hunts the corpus once to
build the partition plans, then times `--passes` more passes and prints the best, events/s, detections,
confirmations, and per-stage seconds of the last pass (timers around each stage, which cost far less than
cProfile's per-call overhead): reading, normalising candidates, confirming them, the pre-filter with its
DuckDB queries, and the DuckDB routing and extraction queries alone over the same records.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

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


def timed_iter(func: Callable[..., Iterator[Any]], label: str) -> Callable[..., Iterator[Any]]:
    def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
        it = func(*args, **kwargs)
        while True:
            start = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                TIMES[label] += time.perf_counter() - start
                return
            TIMES[label] += time.perf_counter() - start
            yield item

    return wrapper


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--passes", type=int, default=4)
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
    hunter = parallel.FileHunter(rules.rules)
    hunter.hunt(evidence)  # plans and predicates built here, as in a worker's first task
    walls = []
    for _ in range(args.passes):
        start = time.perf_counter()
        result = hunter.hunt(evidence)
        walls.append(time.perf_counter() - start)
    events = sum(result.events)
    best = min(walls)
    print(f"rules {len(rules)}, files {len(evidence)}, events {events}, detections {len(result.detections)}")
    print(f"best of {args.passes} passes: {best:.2f} s, {events / best:,.0f} events/s per process")
    print("passes: " + ", ".join(f"{w:.2f}" for w in walls))

    # One more pass with timers around the stages.
    cls: Any = vector.BatchHunter
    cls._prefilter = timed_iter(cls._prefilter, "pre-filter incl. its DuckDB queries")
    cls._confirm = timed(cls._confirm, "confirming candidates")
    cls.run = timed(cls.run, "batches in all")
    hunter.hunter.normalise = timed(parallel._normalise, "normalising candidates")
    start = time.perf_counter()
    hunter.hunt(evidence)
    print(f"\ntimed pass: {time.perf_counter() - start:.2f} s")
    print(f"  {'confirmations':40} {COUNTS['confirming candidates']:>8}")
    for label, seconds in TIMES.items():
        print(f"  {label:40} {seconds:8.2f} s")

    # Reading alone, then the DuckDB queries alone, over the same records.
    start = time.perf_counter()
    records = [
        vector.RawJson(getattr(raw.data, "text", ""), raw.index, ev.path)
        for ev in evidence
        for raw in read_records(ev, lambda w: None, reader=hunter.reader)
    ]
    print(f"  {'reading (evtx parser, record text)':40} {time.perf_counter() - start:8.2f} s")
    con = hunter.hunter.con
    start = time.perf_counter()
    batch = pa.table(
        {
            "ri": pa.array(range(len(records)), pa.int64()),
            "j": pa.array([r.text.encode() for r in records], pa.binary()).cast(pa.string()),
        }
    )
    con.register("batch", batch)
    groups = con.sql(hunter.index.route_sql).fetchall()
    print(f"  {'DuckDB routing query':40} {time.perf_counter() - start:8.2f} s")
    start = time.perf_counter()
    queries = rows = 0
    for ch, eid, ok, _shape, part_rows, _keys, _kws in groups:
        plan = hunter.index.plan(ch, eid) if ok else None
        if plan is None or plan.sql is None or not plan.entries:
            continue
        con.register("part", batch.take(pa.array(part_rows, pa.int64())))
        con.sql(plan.sql).to_arrow_table()
        queries, rows = queries + 1, rows + len(part_rows)
    label = f"DuckDB extraction ({queries} queries, {rows} rows)"
    print(f"  {label:40} {time.perf_counter() - start:8.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
