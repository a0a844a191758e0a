"""Benchmark `casefile hunt` with every SigmaHQ rule over the EVTX corpus, against the bare parse.

    .venv/bin/python benchmarks/hunt.py --events 2000000      # repeat the corpus to >= 2 M events
    .venv/bin/python benchmarks/hunt.py --repeat 4 --jobs 2

The corpus is every EVTX file under <shared>/evtx, the hayabusa folder's copy of
EVTX-ATTACK-SAMPLES counted once. It is repeated N times through a folder of hard links (rep0001/,
rep0002/, ...), so the CLI reads N times the files exactly as a user's run would. Printed:
events, wall seconds, events/s, peak RSS (sum over the CLI's process tree, sampled every 100 ms),
detections (lines of the JSONL output), warm start-up (the CLI on one file with the rule cache
filled), and the bare parse rate of the same file list with `evtx.PyEvtxParser(...).records_json()`
alone: the floor, and the ratio hunt/parse that issue #3 tracks. CPU seconds of the hunt (the CLI and
its workers) and of the bare parse are printed too: on a shared machine they move less than wall time.
`compiled_modules` counts the hot modules running as compiled builds (casefile.native); run with
CASEFILE_PURE_PYTHON=1 to measure the same code as Python.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from evtx import PyEvtxParser

from casefile.config import shared_data_dir
from casefile.native import compiled_modules


def corpus(shared: Path) -> list[Path]:
    dup = "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES/"
    return sorted(f for f in (shared / "evtx").rglob("*.evtx") if dup not in f.as_posix())


def compiled_in_cli() -> int:
    """How many modules of a hunt run as compiled builds in this environment (see casefile.native)."""
    for name in ("casefile.hunt.engine", "casefile.hunt.parallel", "casefile.hunt.output"):
        importlib.import_module(name)
    return len(compiled_modules())


def bare_parse(files: list[Path], repeat: int) -> tuple[int, float]:
    """Events and seconds for the evtx package alone over the file list, `repeat` times."""
    n = 0
    start = time.perf_counter()
    for _ in range(repeat):
        for f in files:
            try:
                for _record in PyEvtxParser(str(f)).records_json():
                    n += 1
            except (OSError, RuntimeError) as exc:  # damaged samples: the hunt reports them too
                print(f"bare parse: {f}: {exc}", file=sys.stderr)
    return n, time.perf_counter() - start


def link_farm(files: list[Path], root: Path, repeat: int, base: Path) -> None:
    """`repeat` copies of the corpus as hard links (copies across file systems).

    Not symlinks: discovery de-duplicates paths that resolve to the same file.
    """
    for i in range(repeat):
        for f in files:
            link = root / f"rep{i + 1:04d}" / f.relative_to(base)
            link.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, link)
            except OSError:
                shutil.copyfile(f, link)


def _tree_rss(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            status = (d / "status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(d.name))
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                rss[int(d.name)] = int(line.split()[1]) * 1024
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += rss.get(p, 0)
        todo.extend(children.get(p, []))
    return total


def run_cli(
    args: list[str], env: dict[str, str]
) -> tuple[float, int, float, subprocess.CompletedProcess[str]]:
    """Wall seconds, peak process-tree RSS, CPU seconds and the completed process of one `casefile` run.

    The CPU seconds (user and system, of the CLI and the workers it waited for) move less than the wall
    time when other jobs share the machine."""
    before = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("casefile")), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            stop.wait(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    stop.set()
    sampler.join()
    cpu = _children_cpu() - before
    return wall, peak, cpu, subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=0, help="corpus repetitions (default: from --events)")
    ap.add_argument("--events", type=int, default=2_000_000, help="at least this many events")
    ap.add_argument("--jobs", type=int, default=2, help="casefile hunt --jobs")
    ap.add_argument("--home", type=Path, default=None, help="CASEFILE_HOME (rule cache); default: temporary")
    opts = ap.parse_args()
    shared = shared_data_dir()
    if shared is None:
        print("reference data not found: set CASEFILE_SHARED_DATA", file=sys.stderr)
        return 2
    files = corpus(shared)
    per_pass, _ = bare_parse(files, 1)
    repeat = opts.repeat or max(1, -(-opts.events // per_pass))
    sigma = shared / "sigma"
    rules = [str(sigma / d) for d in ("rules", "rules-emerging-threats", "rules-threat-hunting")]
    with tempfile.TemporaryDirectory(prefix="casefile-bench-") as tmp:
        tmp_path = Path(tmp)
        home = opts.home or tmp_path / "home"
        env = {**os.environ, "CASEFILE_HOME": str(home)}
        rule_args = [a for r in rules for a in ("--rules", r)]
        one = [str(files[0])]
        cold, _, _, proc = run_cli(["hunt", *one, *rule_args, "--format", "jsonl", "-o", os.devnull], env)
        warm, _, _, proc = run_cli(["hunt", *one, *rule_args, "--format", "jsonl", "-o", os.devnull], env)
        if proc.returncode != 0:
            print(proc.stderr, file=sys.stderr)
            return 1
        farm = tmp_path / "farm"
        link_farm(files, farm, repeat, shared / "evtx")
        parse_cpu = time.process_time()
        parse_events, parse_s = bare_parse(files, repeat)
        parse_cpu = time.process_time() - parse_cpu
        out = tmp_path / "detections.jsonl"
        args = ["hunt", str(farm), *rule_args, "--format", "jsonl", "-o", str(out), "--jobs", str(opts.jobs)]
        wall, peak, cpu, proc = run_cli(args, env)
        if proc.returncode != 0:
            print(proc.stderr[-4000:], file=sys.stderr)
            return 1
        with out.open(encoding="utf-8") as fh:
            detections = sum(1 for _ in fh)
        result = {
            "files": len(files) * repeat,
            "repeat": repeat,
            "events": parse_events,
            "jobs": opts.jobs,
            "hunt_wall_s": round(wall, 2),
            "hunt_events_per_s": round(parse_events / wall),
            "hunt_cpu_s": round(cpu, 1),
            "peak_rss_mb": round(peak / 2**20),
            "detections": detections,
            "bare_parse_s": round(parse_s, 2),
            "bare_parse_events_per_s": round(parse_events / parse_s),
            "hunt_over_parse": round(wall / parse_s, 1),
            "bare_parse_cpu_s": round(parse_cpu, 2),
            "hunt_cpu_over_parse_cpu": round(cpu / parse_cpu, 1),
            "start_cold_s": round(cold, 2),
            "start_warm_s": round(warm, 2),
            # the hot modules the CLI (started with this environment) runs compiled: see casefile.native
            "compiled_modules": compiled_in_cli(),
            # the CLI's summary line, not what native libraries print at interpreter exit
            "summary": next(
                (ln[ln.index("files "):] for ln in reversed(proc.stderr.splitlines()) if "files " in ln), ""
            ),
        }
    for k, v in result.items():
        print(f"{k:>24}: {v}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
