"""Time `investigate` stage by stage on the reference EVTX corpus, and the re-run that finds nothing new.

Run: .venv/bin/python benchmarks/investigate_case.py [--rules DIR] [--no-kb] [--cache] [--json OUT]
(defaults: EVTX-ATTACK-SAMPLES, SigmaHQ rules/windows, the Enterprise ATT&CK bundle from the reference data;
`--cache` keeps compiled rules and partition plans in the CLI's cache folder, as `casefile investigate` does:
run it twice to time a warm start)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from casefile.case.attribution import kb_attributor
from casefile.case.investigate import investigate
from casefile.case.store import Case
from casefile.config import Settings, shared_data_dir
from casefile.report import REPORTS


class StageTimer:
    """Records how long each investigate stage took."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._name: str | None = None
        self._start = time.perf_counter()

    def stage(self, name: str, total: int | None) -> None:
        self._close()
        self._name, self._start = name, time.perf_counter()

    def advance(self, amount: int = 1) -> None:
        pass

    def _close(self) -> None:
        if self._name is not None:
            self.times[self._name] = self.times.get(self._name, 0.0) + time.perf_counter() - self._start

    def done(self) -> dict[str, float]:
        self._close()
        self._name = None
        return {k: round(v, 2) for k, v in self.times.items()}


def main() -> int:
    data = shared_data_dir()
    if data is None:
        print("reference data not found (set CASEFILE_SHARED_DATA)", file=sys.stderr)
        return 2
    ap = argparse.ArgumentParser()
    ap.add_argument("--evidence", type=Path, default=data / "evtx" / "EVTX-ATTACK-SAMPLES")
    ap.add_argument("--rules", type=Path, default=data / "sigma" / "rules" / "windows")
    ap.add_argument("--no-kb", action="store_true")
    ap.add_argument("--cache", action="store_true", help="use the CLI's rule and plan cache folder")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    attributor = None if args.no_kb else kb_attributor([data / "attack" / "enterprise-attack.json.gz"])
    out: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "case"
        for run in ("first", "rerun"):
            timer = StageTimer()
            t0 = time.perf_counter()
            result = investigate(
                [args.evidence], root, rules=[args.rules], attributor=attributor, progress=timer,
                rule_cache=Settings.from_env().cache_dir if args.cache else None,
            )
            wall = time.perf_counter() - t0
            out[run] = {
                "wall_s": round(wall, 2),
                "stages_s": timer.done(),
                "files_added": result.files_added,
                "events_added": result.events_added,
                "detections_added": result.detections_added,
                "clusters": result.clusters,
            }
        with Case.open(root, read_only=True) as case:
            renders = {}
            for name, writer in REPORTS:
                t0 = time.perf_counter()
                text = writer(case)
                renders[name] = {"s": round(time.perf_counter() - t0, 3), "bytes": len(text.encode())}
            out["reports"] = renders
        out["case_db_bytes"] = (root / "case.duckdb").stat().st_size
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
