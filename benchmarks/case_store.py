"""Write and read back N detections (and N warnings) of one evidence file in a case.

Run: .venv/bin/python benchmarks/case_store.py [--n 20000]
(DuckDB's executemany took 229 s for 20,000 detections on the dev machine; Arrow inserts take about 1 s.)
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from casefile.case.store import Case, EvidenceBatch
from casefile.models import Detection, DetectionKind, IngestWarning, Level, RuleInfo


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()
    rule = RuleInfo("r-1", "Rule", Level.HIGH, None, None, ("attack.execution", "attack.t1059.001"))
    t0 = datetime(2022, 7, 15, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp, Case.create(Path(tmp) / "case") as case:
        batch = EvidenceBatch("a" * 64, "x.evtx", 1, "evtx")
        for i in range(args.n):
            fields = {"CommandLine": "powershell -enc " + "A" * 200, "User": "CORP\\adm", "EventID": 1}
            batch.detections.append(
                Detection(
                    rule,
                    DetectionKind.SIGMA,
                    t0 + timedelta(seconds=i),
                    "H1",
                    "Sysmon",
                    1,
                    i,
                    "x.evtx",
                    {"CommandLine": fields["CommandLine"]},
                    fields,
                )
            )
            batch.warnings.append(IngestWarning("x.evtx", "damaged record", i))
        start = time.perf_counter()
        case.add_evidence(batch)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        n = len(case.detections())
        read_s = time.perf_counter() - start
    print(json.dumps({"detections": n, "write_s": round(write_s, 2), "read_s": round(read_s, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
