"""`workers=0` (the CLI's default): a pool of one worker per CPU only when the evidence makes more than
one task; the detections, their order and the per-file counts are those of one process either way."""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Generator, Iterable
from pathlib import Path
from typing import Any, cast

import pytest

from casefile.hunt import parallel
from casefile.hunt.parallel import TASK_BYTES, vector_hits
from casefile.ingest import discover
from casefile.models import Detection

from .conftest import WHOAMI_RULE, RuleFactory

EVENT = {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "ws1",
         "Image": "C:\\Windows\\System32\\whoami.exe"}


def _detections(hits: Iterable[object]) -> list[Detection]:
    """The hits, each a Detection (no lines were asked for)."""
    out = []
    for d in hits:
        assert isinstance(d, Detection), d
        out.append(d)
    return out


def test_auto_workers_start_a_pool_only_for_more_than_one_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rules_from: RuleFactory
) -> None:
    rules = rules_from(WHOAMI_RULE).rules
    for i in range(3):
        lines = [json.dumps({**EVENT, "EventRecordID": n}) for n in range(i + 1)]
        (tmp_path / f"e{i}.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    evidence = discover([tmp_path])

    def run(workers: int, task_bytes: int) -> tuple[list[Any], list[tuple[str, int]]]:
        done: list[tuple[str, int]] = []
        hits = vector_hits(
            evidence, rules, workers=workers, warn=lambda w: pytest.fail(str(w)),
            done=lambda ev, n: done.append((ev.path, n)), task_bytes=task_bytes,
        )
        return [(d.rule.id, d.file, d.record_id) for d in _detections(hits)], done

    serial = run(1, TASK_BYTES)
    assert len(serial[0]) == 6 and [n for _, n in serial[1]] == [1, 2, 3]
    started: list[str | None] = []
    real = multiprocessing.get_context

    def get_context(method: str | None = None) -> Any:
        started.append(method)
        return real(method)

    monkeypatch.setattr(multiprocessing, "get_context", get_context)  # (the module parallel spawns with)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert run(0, TASK_BYTES) == serial  # a few bytes: one task, hunted here
    assert started == []
    assert run(0, 1) == serial  # one file per task: two workers
    assert started == ["spawn"]


def test_workers_read_the_rules_from_a_file_removed_after_the_hunt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rules_from: RuleFactory
) -> None:
    """Spawned workers read the pickled rules from a private file (not from their start-up arguments, which
    would start them one after the other); it is removed when the hunt ends, also when it is abandoned,
    and a hunt with no temporary folder to write to goes on without it. So is the private folder tasks
    spill their detections to."""
    rules = rules_from(WHOAMI_RULE).rules
    for i in range(3):
        record = json.dumps({**EVENT, "EventRecordID": i})
        (tmp_path / f"e{i}.json").write_text(record + "\n", encoding="utf-8")
    evidence = discover([tmp_path])
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(spool))

    def hunt() -> Generator[Any, None, None]:
        hits = vector_hits(evidence, rules, workers=2, warn=lambda w: pytest.fail(str(w)),
                           done=lambda ev, n: None, task_bytes=1)
        return cast(Generator[Any, None, None], hits)  # (a generator: closed below)

    hits = hunt()
    first = next(hits)
    rules_file, spill_folder = sorted(spool.iterdir(), key=lambda p: p.name, reverse=True)
    assert rules_file.name.startswith("casefile-rules-") and spill_folder.name.startswith("casefile-hits-")
    assert oct(spill_folder.stat().st_mode & 0o777) == "0o700"
    assert [r.info.id for r in pickle.loads(rules_file.read_bytes())] == [r.info.id for r in rules]
    assert oct(rules_file.stat().st_mode & 0o777) == "0o600"  # a pickle others could rewrite would run code
    assert len([first, *hits]) == 3
    assert list(spool.iterdir()) == []
    abandoned = hunt()
    next(abandoned)
    assert len(list(spool.iterdir())) == 2
    abandoned.close()
    assert list(spool.iterdir()) == []
    # no temporary folder to write to: the rules go with the workers' start-up arguments instead
    spool.rmdir()
    assert len(list(hunt())) == 3


#: Runs `vector_hits` over a folder with N workers, tasks of M bytes and 3 s stall limits (and, if given,
#: tasks spilling at S detections, in batches of one record), and prints the detections (file, record),
#: each file's event count, the warnings and how many times this process spilled a recovered group's
#: detections ahead of a file's spilled ones, as JSON. In a child process under a time limit: if the limit
#: failed, a worker's endless loop would hang the test.
_HUNT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from casefile.hunt import parallel
    from casefile.hunt.rules import load_rules
    from casefile.ingest import discover
    from casefile.ingest.readers import evtx

    evtx.CHUNK_SECONDS = 3.0  # a chunk parsed apart (one worker: every chunk) is stopped after 3 s
    forced = []
    spill = parallel.Spill.__call__

    def counting(self, result, force=False):
        before = len(result.spilled)
        spill(self, result, force)
        if force and len(result.spilled) > before:
            forced.append(1)

    parallel.Spill.__call__ = counting  # seen in this process: the one-by-one recovery's merge
    rules = load_rules([Path(sys.argv[1])]).rules
    evidence = discover([Path(sys.argv[2])])
    done, warnings = [], []
    spilling = {"spill_hits": int(sys.argv[5]), "batch_records": 1} if len(sys.argv) > 5 else {}
    hits = parallel.vector_hits(
        evidence, rules, workers=int(sys.argv[3]), task_bytes=int(sys.argv[4]), stall_seconds=3.0,
        warn=lambda w: warnings.append([Path(w.file).name, w.reason]),
        done=lambda ev, n: done.append([Path(ev.path).name, n]), **spilling,
    )
    found = [[Path(d.file).name, d.record_id] for d in hits]
    print(json.dumps([found, done, warnings, len(forced)]))
""")

SHARE_RULE = """\
title: share access
id: 5a3e6a42-8d0f-4c55-9a51-6f1b2c3d4e5f
status: test
logsource:
    product: windows
    service: security
detection:
    sel:
        EventID: 5145
        ShareName|endswith: 'C$'
    condition: sel
level: low
"""


@pytest.mark.shared
def test_a_worker_that_stalls_costs_only_its_file(
    shared_data: Path, crafted_evtx: bytearray, tmp_path: Path
) -> None:
    """A file crafted so that the EVTX parser loops (checksums valid, so the reader does not set its chunk
    apart) stops its worker; the parent hunts the files it had given out again, one by one, names the file,
    and every other file gives what it gives alone. Split into parts between workers (it looks intact), it
    costs only its part. With one worker (this process) the chunk is parsed in a child process and
    stopped: only its records are lost."""
    sample = shared_data / "evtx" / "EVTX-ATTACK-SAMPLES" / "Lateral Movement"
    sample /= "LM_5145_Remote_FileCopy.evtx"
    data = crafted_evtx
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "share.yml").write_text(SHARE_RULE, encoding="utf-8")
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in "acdefg":
        (logs / f"{name}.evtx").write_bytes(sample.read_bytes())
    (logs / "b.evtx").write_bytes(bytes(data))

    one_file = len(sample.read_bytes())  # a task per file, none split

    def hunt(workers: int, folder: Path, task_bytes: int = one_file) -> list[Any]:
        run = subprocess.run(
            [sys.executable, "-c", _HUNT, str(tmp_path / "rules"), str(folder), str(workers),
             str(task_bytes)],
            capture_output=True, text=True, timeout=300, check=True,
        )
        result: list[Any] = json.loads(run.stdout)
        return result[:3]

    found, done, warnings = hunt(2, logs)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "a.evtx").write_bytes(sample.read_bytes())
    one_found, one_done, one_warnings = hunt(1, alone)
    assert one_found and one_done == [["a.evtx", 869]] and one_warnings == []
    if [n for name, n in done if name == "b.evtx"] == [869]:
        pytest.skip("this evtx release no longer loops on the crafted chunk")
    assert done == [[f"{name}.evtx", 0 if name == "b" else 869] for name in "abcdefg"]
    assert found == [[f"{name}.evtx", record] for name in "acdefg" for _, record in one_found]
    assert warnings == [[
        "b.evtx", "not hunted: the worker reading it stopped responding for 3 s or died (the EVTX parser "
        "looping or crashing on crafted or damaged bytes?); its detections, if any, are lost and the hunt "
        "went on without it",
    ]]
    # Groups of three files whose tasks spill past half a file's detections, the rest staying in memory:
    # the group holding b is hunted again file by file, and what the group holds so far (a's unspilled
    # rest) must be spilled before c's spilled detections, or they would come out of order.
    assert len(one_found) >= 4
    run = subprocess.run(
        [sys.executable, "-c", _HUNT, str(tmp_path / "rules"), str(logs), "2", str(3 * one_file),
         str(len(one_found) // 2 + 1)],
        capture_output=True, text=True, timeout=300, check=True,
    )
    spilled_found, spilled_done, spilled_warnings, forced = json.loads(run.stdout)
    assert (spilled_found, spilled_done, spilled_warnings) == (found, done, warnings)
    assert forced >= 1

    # One worker: the hunt runs in this process, which the loop must not stop; chunk 1 (records 99..197)
    # is lost, and only it.
    found, done, warnings = hunt(1, logs)
    chunk_1 = range(437471 + 99, 437471 + 198)
    assert done == [[f"{name}.evtx", 869 - 99 if name == "b" else 869] for name in "abcdefg"]
    assert found == [
        [f"{name}.evtx", record] for name in "abcdefg" for _, record in one_found
        if name != "b" or record not in chunk_1
    ]
    assert warnings == [[
        "b.evtx", "EVTX parse error, records skipped: parser stopped on chunk 1 (no answer within 3 s) after "
        "0 of its records",
    ]]
    # Two workers, files in parts of a chunk: the part holding chunk 1 is lost, and only it; the file's
    # parts are counted as one file.
    split_found, done, warnings = hunt(2, logs, task_bytes=1)
    assert done == [[f"{name}.evtx", 869 - 99 if name == "b" else 869] for name in "abcdefg"]
    assert split_found == found
    assert warnings == [[
        "b.evtx", "chunks 1..1 not hunted: the worker reading them stopped responding for 3 s or died (the "
        "EVTX parser looping or crashing on crafted or damaged bytes?); their detections, if any, are lost "
        "and the hunt went on without them",
    ]]


def test_a_worker_hides_what_a_task_leaves_from_the_collector(
    tmp_path: Path, rules_from: RuleFactory
) -> None:
    """The partition plans a worker builds in a task live as long as it: frozen after the task (as the rule
    set is once loaded), so the full collections later tasks trigger do not walk them again and again."""
    import gc
    from concurrent.futures import ProcessPoolExecutor

    rules = rules_from(WHOAMI_RULE).rules
    (tmp_path / "e.json").write_text(json.dumps({**EVENT, "EventRecordID": 1}) + "\n", encoding="utf-8")
    evidence = discover([tmp_path])
    init = (parallel.rules_pickle(rules), 100, None, 60.0, None, None, parallel.Spill(None))
    with ProcessPoolExecutor(1, multiprocessing.get_context("spawn"), parallel._init_worker, init) as pool:
        loaded = pool.submit(gc.get_freeze_count).result()
        result = pool.submit(parallel._worker_task, evidence).result()
        after = pool.submit(gc.get_freeze_count).result()
    assert [d.record_id for d in _detections(result.detections)] == [1]
    assert loaded > 0 and after > loaded
