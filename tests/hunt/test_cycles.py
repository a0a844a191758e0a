"""A hunt leaves no reference cycles: a worker freezes what each task leaves (`gc.freeze`, casefile.heap),
so a cycle made per file would be held for the worker's whole life. Seen with the compiled reader (a
closure in a generator): a worker grew by about 2.5 MB per million events."""

from __future__ import annotations

import dataclasses
import gc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from casefile.hunt import load_rules
from casefile.hunt.parallel import FileHunter
from casefile.ingest import discover
from casefile.ingest.readers.evtx import evtx_parts
from ingest.test_evtx import SAMPLE, _variants  # type: ignore[import-not-found]  # tests/ingest (pytest puts tests/ on the path)

#: Matches records of the sample (Security 5145) by event id and by a keyword, so batches are confirmed and
#: detections made.
RULES = {
    "share.yml": """title: Share access
id: 5b0e6d8e-3f0c-4a55-9a53-8f1f9f0d5145
logsource: {product: windows, service: security}
detection:
    sel:
        EventID: 5145
    condition: sel
level: low
""",
    "keyword.yml": """title: Keyword
id: 5b0e6d8e-3f0c-4a55-9a53-8f1f9f0d5146
logsource: {product: windows, service: security}
detection:
    keywords:
        - 'IPC$'
    condition: keywords
level: low
""",
}


def _cyclic_garbage(run: Callable[[], None]) -> Counter[str]:
    """Types of the objects `run()` leaves in reference cycles."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run()
        gc.collect()
        return Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()


@pytest.mark.shared
@pytest.mark.parametrize("isolate", [False, True], ids=["worker", "chunks-apart"])
def test_hunting_intact_damaged_and_split_files_leaves_no_cycles(
    shared_data: Path, tmp_path: Path, isolate: bool
) -> None:
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for name, text in RULES.items():
        (rules_dir / name).write_text(text, encoding="utf-8")
    rules = load_rules([rules_dir]).rules
    evidence_dir = tmp_path / "evidence"
    evidence_dir.mkdir()
    # every kind of damage the reader handles: chunks parsed apart, a cut last chunk salvaged, ...
    for i, data in enumerate(_variants((shared_data / SAMPLE).read_bytes()).values()):
        (evidence_dir / f"{i}.evtx").write_bytes(data)
    evidence = discover([evidence_dir])
    intact = next(ev for ev in evidence if ev.path.endswith("0.evtx"))
    parts = evtx_parts(Path(intact.path), 3)
    assert parts is not None and len(parts) > 1
    evidence += [dataclasses.replace(intact, part=part) for part in parts]
    hunter = FileHunter(rules, isolate=isolate)
    try:
        first = hunter.hunt(evidence)  # partition plans are built: kept, not garbage
        assert len(first.detections) > 1000 and first.warnings

        def again() -> None:
            assert len(hunter.hunt(evidence).detections) == len(first.detections)

        assert _cyclic_garbage(again) == Counter()
    finally:
        hunter.reader.close()
