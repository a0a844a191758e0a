"""Measure the ingest path on the reference corpus: read, normalise, batch, store, query.

    .venv/bin/python benchmarks/ingest_columnar.py [--data DIR] [--db PATH] [--repeat N]

Reads the EVTX corpus and the OTRF JSON zips, times each stage, writes the DuckDB events table,
and compares field lookups on the `fields` MAP with the same lookups on a JSON text column
(the alternative layout), with and without a log-source filter, and against a table holding
only that log source (the table-per-source layout). Prints a table to stdout.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb

from casefile.config import shared_data_dir
from casefile.ingest import discover, read_file, read_records
from casefile.ingest.columnar import to_batches, write_batches
from casefile.models import Event, IngestWarning

SYSMON = "Microsoft-Windows-Sysmon/Operational"
QUERIES = {
    "MAP, source filter": (
        "SELECT count(*) FROM events WHERE channel = ? AND event_id = ? AND fields['CommandLine'] ILIKE ?",
        [SYSMON, 1, "%powershell%"],
    ),
    "JSON, source filter": (
        "SELECT count(*) FROM events_json WHERE channel = ? AND event_id = ? "
        "AND json_extract_string(fields, '$.CommandLine') ILIKE ?",
        [SYSMON, 1, "%powershell%"],
    ),
    "table per source": (
        "SELECT count(*) FROM events_sysmon_1 WHERE fields['CommandLine'] ILIKE ?",
        ["%powershell%"],
    ),
    "MAP, all events": ("SELECT count(*) FROM events WHERE fields['CommandLine'] ILIKE ?", ["%powershell%"]),
    "JSON, all events": (
        "SELECT count(*) FROM events_json WHERE json_extract_string(fields, '$.CommandLine') ILIKE ?",
        ["%powershell%"],
    ),
    "MAP, any value (IOC)": (
        "SELECT count(*) FROM (SELECT unnest(map_values(fields)) AS v FROM events) WHERE v = ?",
        ["168.63.129.16"],
    ),
}


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=shared_data_dir())
    ap.add_argument("--db", type=Path, default=None, help="DuckDB file to write (default: a temp file)")
    ap.add_argument("--repeat", type=int, default=5, help="runs per query (the median is printed)")
    args = ap.parse_args()
    if args.data is None:
        print("reference data not found: pass --data or set CASEFILE_SHARED_DATA", file=sys.stderr)
        return 2
    warnings: list[IngestWarning] = []
    inputs = {"EVTX corpus": [args.data / "evtx"], "OTRF JSON zips": [args.data / "json"]}
    all_events: list[Event] = []
    print(f"{'stage':38} {'events':>8} {'seconds':>8} {'events/s':>9}")
    for label, paths in inputs.items():
        files = discover(paths, on_warning=warnings.append)
        raws, t_read = _timed(lambda f=files: [(e, list(read_records(e, warnings.append))) for e in f])
        count = sum(len(r) for _, r in raws)
        print(f"{label + ': read records':38} {count:8d} {t_read:8.2f} {count / t_read:9.0f}")
        events, t_all = _timed(lambda f=files: [ev for e in f for ev in read_file(e, warnings.append)])
        print(f"{label + ': read + normalise':38} {len(events):8d} {t_all:8.2f} {len(events) / t_all:9.0f}")
        all_events.extend(events)
    n = len(all_events)
    batches, t_batch = _timed(lambda: list(to_batches(all_events)))
    print(f"{'to_batches (' + str(len(batches)) + ' batches)':38} {n:8d} {t_batch:8.2f} {n / t_batch:9.0f}")
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "events.duckdb"
        if db.exists():
            db.unlink()
        with duckdb.connect(str(db)) as con:
            _, t_write = _timed(lambda: write_batches(con, batches))
            con.execute("CHECKPOINT")
            print(f"{'write_batches':38} {n:8d} {t_write:8.2f} {n / t_write:9.0f}")
            size = os.path.getsize(db)
            # The alternative layout, for comparison: the same fields as one JSON text column.
            con.execute(
                "CREATE TABLE events_json AS SELECT * EXCLUDE (fields, fields_typed), "
                "to_json(fields)::VARCHAR AS fields FROM events"
            )
            # The other layout choice: one table per log source (here only the queried one).
            con.execute(
                "CREATE TABLE events_sysmon_1 AS SELECT * FROM events WHERE channel = ? AND event_id = ?",
                [SYSMON, 1],
            )
            con.execute("CHECKPOINT")
            print(
                f"\nDuckDB file: {size / 1e6:.1f} MB with the events table "
                f"({os.path.getsize(db) / 1e6:.1f} MB with the JSON and per-source copies added)"
            )
            print(f"\n{'query':24} {'rows':>7} {'median ms':>10}")
            for label, (sql, params) in QUERIES.items():
                times = []
                for _ in range(args.repeat):
                    row, t = _timed(lambda s=sql, p=params: con.execute(s, p).fetchall())
                    times.append(t)
                times.sort()
                print(f"{label:24} {row[0][0]:7d} {times[len(times) // 2] * 1000:10.1f}")
    print(f"\n{len(warnings)} ingest warnings (files in no log format, damaged input)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
