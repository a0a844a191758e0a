"""The streamed `casefile hunt` output (iter_hunt written as it arrives) is the reference list path's
output, byte for byte, in every machine format; iter_hunt keeps counters only."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casefile.cli import app
from casefile.hunt import HuntStats, iter_hunt, load_rules, run_hunt
from casefile.hunt.output import write_detections


@pytest.fixture(scope="module")
def sample(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    sigma = shared_data / "sigma" / "rules" / "windows"
    files = sorted(
        f for f in (shared_data / "evtx").rglob("*.evtx")
        if "hayabusa-sample-evtx/EVTX-ATTACK-SAMPLES" not in f.as_posix()
    )
    return sigma, files[::40]


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_streamed_cli_output_equals_reference_list_path(
    sample: tuple[Path, list[Path]], tmp_path: Path, fmt: str
) -> None:
    rules_dir, files = sample
    home = tmp_path / "home"
    out = tmp_path / f"out.{fmt}"
    result = CliRunner(env={"CASEFILE_HOME": str(home)}).invoke(
        app,
        ["hunt", *map(str, files), "--rules", str(rules_dir), "--format", fmt, "-o", str(out), "-j", "2"],
    )
    assert result.exit_code == 0, result.output
    ruleset = load_rules([rules_dir])
    ref = run_hunt(files, ruleset, vectorised=False)
    assert ref.stats.detections > 10  # the sample fires several rules
    expected = io.StringIO(newline="")
    write_detections(ref.detections, fmt, expected)
    with out.open(encoding="utf-8", newline="") as fh:
        streamed = fh.read()
    assert streamed == expected.getvalue()
    if fmt == "json":  # the streamed array is what json.dump of the whole list writes
        records = [d.to_record() for d in ref.detections]
        assert streamed == json.dumps(records, ensure_ascii=False, indent=2, default=str) + "\n"
    assert f"detections {ref.stats.detections}" in result.stderr


def test_iter_hunt_counts_like_run_hunt(sample: tuple[Path, list[Path]]) -> None:
    rules_dir, files = sample
    ruleset = load_rules([rules_dir])
    stats = HuntStats()
    n = sum(1 for _ in iter_hunt(files, ruleset, stats=stats))
    ref = run_hunt(files, ruleset)
    assert n == stats.detections == ref.stats.detections
    assert stats == ref.stats


def test_empty_json_array() -> None:
    out = io.StringIO()
    assert write_detections([], "json", out) == 0
    assert out.getvalue() == "[]\n"


class _Recorder:
    """A `Progress` that keeps what it is told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def start(self, total_files: int | None) -> None:
        self.calls.append(("start", total_files))

    def set_total(self, total_files: int) -> None:
        self.calls.append(("total", total_files))

    def file_done(self, path: str) -> None:
        self.calls.append(("done", path))


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_counts_files_on_disk_while_they_are_found(
    sample: tuple[Path, list[Path]], tmp_path: Path, workers: int
) -> None:
    # The bar starts without a total (files are found as the hunt goes), is given one counted beside it,
    # and each file on disk is done once: a zip once for all its members, a file no reader claims too.
    import shutil
    import zipfile

    rules_dir, files = sample
    evidence = tmp_path / "evidence"
    shutil.copytree(Path(__file__).parent.parent / "data" / "ingest", evidence / "logs")
    for f in files[:3]:
        shutil.copy(f, evidence / f.name)
    with zipfile.ZipFile(evidence / "triage.zip", "w") as z:
        for f in files[3:6]:
            z.write(f, f"host/{f.name}")
    recorder = _Recorder()
    stats = HuntStats()
    found = list(iter_hunt(
        [evidence], load_rules([rules_dir]), stats=stats, progress=recorder, workers=workers,
        vectorised=True, event_fields=False,
    ))
    assert found and stats.files == 3 + 3 + 7  # three EVTX, three zip members, seven fixture logs
    assert recorder.calls[0] == ("start", None)
    totals = [n for what, n in recorder.calls if what == "total"]
    done = [str(p) for what, p in recorder.calls if what == "done"]
    on_disk = [str(p) for p in sorted(evidence.rglob("*")) if p.is_file()]
    assert sorted(done) == on_disk  # each once, the README and the zip included
    assert totals == [len(on_disk)]
