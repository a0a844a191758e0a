"""`workers=0` (the CLI's default): a pool of one worker per CPU only when the evidence makes more than
one task; the detections, their order and the per-file counts are those of one process either way."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from casefile.hunt import parallel
from casefile.hunt.parallel import TASK_BYTES, vector_hits
from casefile.ingest import discover

from .conftest import WHOAMI_RULE, RuleFactory

EVENT = {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "ws1",
         "Image": "C:\\Windows\\System32\\whoami.exe"}


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
        return [(d.rule.id, d.file, d.record_id) for d in hits], done

    serial = run(1, TASK_BYTES)
    assert len(serial[0]) == 6 and [n for _, n in serial[1]] == [1, 2, 3]
    started: list[str | None] = []
    real = multiprocessing.get_context

    def get_context(method: str | None = None) -> Any:
        started.append(method)
        return real(method)

    monkeypatch.setattr(parallel.multiprocessing, "get_context", get_context)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert run(0, TASK_BYTES) == serial  # a few bytes: one task, hunted here
    assert started == []
    assert run(0, 1) == serial  # one file per task: two workers
    assert started == ["spawn"]
