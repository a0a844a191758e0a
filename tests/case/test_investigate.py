"""`investigate` end to end: the demo evidence, re-runs, duplicates, a killed run, the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from casefile.case.investigate import investigate
from casefile.case.store import Case, sha256_file
from casefile.cli import app
from casefile.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
DEMO_EVIDENCE = REPO / "demo" / "evidence"
DEMO_RULES = REPO / "demo" / "rules"

EXPECTED_RULES = {
    "Web Server Worker Spawns a Command Shell": 3,
    "ASPX File Written Into SharePoint LAYOUTS": 2,
    "LSASS Credential Dumping Tools": 2,
    "PsExec Service Installed": 1,
    "Active Directory Database Copied With Ntdsutil": 1,
    "Remote Process Creation Through WMI": 2,
    "Exchange Mailbox Exported To PST": 2,
    "Rclone Style Copy To Cloud Storage": 1,
    "Volume Shadow Copies Deleted": 1,
    "Ransom Note Written": 1,
    "Raw Disk Access Driver Installed": 1,
}


@pytest.fixture(scope="module")
def demo_case(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo") / "case"
    investigate([DEMO_EVIDENCE], root, rules=[DEMO_RULES])
    return root


def test_demo_case_contents(demo_case: Path) -> None:
    with Case.open(demo_case, read_only=True) as case:
        evidence = case.evidence_files()
        assert [Path(e.path).name for e in evidence] == [
            "DC01-events.ndjson",
            "EXCH01-sysmon.ndjson",
            "SP01-sysmon.ndjson",
        ]
        for e in evidence:
            assert e.sha256 == sha256_file(REPO / e.path if not Path(e.path).is_absolute() else Path(e.path))
        assert case.event_count() == 27  # 28 lines, one broken
        dets = case.detections()
        titles: dict[str, int] = {}
        for sd in dets:
            titles[sd.detection.rule.title] = titles.get(sd.detection.rule.title, 0) + 1
        assert titles == EXPECTED_RULES
        stamps = [sd.detection.timestamp for sd in dets]
        assert stamps == sorted(stamps)  # type: ignore[type-var]
        intrusion, impact = case.clusters()
        assert set(intrusion.hosts) == {
            "SP01.mofa.gov.example",
            "DC01.mofa.gov.example",
            "EXCH01.mofa.gov.example",
        }
        assert impact.hosts == ("DC01.mofa.gov.example",) and impact.tactics == ("impact",)
        assert len(intrusion.detection_ids) + len(impact.detection_ids) == len(dets)
        warnings = [(w.stage, w.warning.record, w.warning.reason) for w in case.warnings()]
        assert any(s == "ingest" and r == 5 and m.startswith("invalid JSON") for s, r, m in warnings)
        assert any(stage == "attribute" and "attribution skipped" in reason for stage, _, reason in warnings)
        assert case.attributions() == {}
    summary = json.loads((demo_case / "summary.json").read_text())
    assert summary["counts"]["detections"] == sum(EXPECTED_RULES.values())
    assert summary["attribution"] is None
    html = (demo_case / "report.html").read_text()
    assert "<script>window.__casefile_xss" not in html  # escaped, never raw
    assert "&lt;script&gt;window.__casefile_xss" in html


def test_rerun_adds_nothing_and_copies_are_not_counted_twice(tmp_path: Path) -> None:
    root = tmp_path / "case"
    first = investigate([DEMO_EVIDENCE], root, rules=[DEMO_RULES], write_outputs=False)
    assert (first.files_added, first.files_already_in_case) == (3, 0)
    again = investigate([DEMO_EVIDENCE], root, rules=[DEMO_RULES], write_outputs=False)
    assert (again.files_added, again.files_already_in_case, again.detections_added) == (0, 3, 0)
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(DEMO_EVIDENCE / "DC01-events.ndjson", copy / "renamed.json")
    extra = tmp_path / "extra.ndjson"
    extra.write_text(
        json.dumps(
            {
                "TimeCreated": "2022-07-16T01:00:00Z",
                "Computer": "WS9",
                "EventID": 7045,
                "Channel": "System",
                "ServiceName": "PSEXESVC",
            }
        )
        + "\n"
    )
    more = investigate([copy, extra], root, rules=[DEMO_RULES], write_outputs=False)
    assert (more.files_added, more.files_already_in_case, more.detections_added) == (1, 1, 1)
    with Case.open(root, read_only=True) as case:
        assert len(case.evidence_files()) == 4
        assert case.detection_count() == sum(EXPECTED_RULES.values()) + 1
        assert len(case.clusters()) == 3  # the new host a day later is its own cluster


@pytest.mark.parametrize("group_files", [1, 256])
def test_killed_run_is_finished_by_the_next(tmp_path: Path, group_files: int) -> None:
    """Files are stored in groups (one transaction each): a run killed while it reads the second file keeps
    the groups committed before (with groups of one file, the first file) and none of the group it was in;
    the next run adds the rest."""
    root = tmp_path / "case"
    script = textwrap.dedent(
        f"""
        import os
        from casefile.case import investigate as module
        module.GROUP_FILES = {group_files}
        read = module.read_file
        opened = []
        def read_file(ef, *args, **kwargs):
            opened.append(ef)
            if len(opened) == 2:
                os._exit(7)
            return read(ef, *args, **kwargs)
        module.read_file = read_file
        module.investigate([{str(DEMO_EVIDENCE)!r}], {str(root)!r}, rules=[{str(DEMO_RULES)!r}])
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 7, proc.stderr
    kept = 1 if group_files == 1 else 0
    with Case.open(root, read_only=True) as case:
        assert len(case.evidence_files()) == kept
        partial = case.detection_count()
    result = investigate([DEMO_EVIDENCE], root, rules=[DEMO_RULES], write_outputs=False)
    assert (result.files_added, result.files_already_in_case) == (3 - kept, kept)
    with Case.open(root, read_only=True) as case:
        assert case.detection_count() == sum(EXPECTED_RULES.values()) > partial
        assert case.event_count() == 27


def test_no_rules_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Sigma rules"):
        investigate([DEMO_EVIDENCE], tmp_path / "c", rules=[])


def test_cli_investigate_show_timeline_export(tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "40"})  # narrow: output must not depend on the terminal width
    root = tmp_path / "case"
    res = runner.invoke(
        app, ["investigate", str(DEMO_EVIDENCE), "--rules", str(DEMO_RULES), "--case", str(root)]
    )
    assert res.exit_code == 0, res.output
    assert "attribution skipped" in res.output
    assert (root / "report.html").is_file() and (root / "bundle.json").is_file()
    res = runner.invoke(app, ["case", "show", str(root)])
    assert res.exit_code == 0 and "C-" in res.output and "detections" in res.output
    rows = [line for line in res.output.splitlines() if line.startswith("│ C-")]
    assert len(rows) == 2 and all(".mofa.gov.example" in row for row in rows)  # one line per cluster
    res = runner.invoke(app, ["case", "timeline", str(root), "--format", "timesketch"])
    assert res.exit_code == 0
    lines = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{")]
    assert len(lines) == sum(EXPECTED_RULES.values())
    assert all({"message", "datetime", "timestamp_desc"} <= set(x) for x in lines)
    out = tmp_path / "t.csv"
    res = runner.invoke(app, ["case", "timeline", str(root), "--format", "csv", "-o", str(out)])
    assert res.exit_code == 0 and out.read_text().startswith("timestamp,host,account")
    res = runner.invoke(app, ["case", "note", str(root), "checked SP01 <b>", "--author", "ana"])
    assert res.exit_code == 0
    res = runner.invoke(
        app, ["case", "export", str(root), "-o", str(tmp_path / "out"), "--only", "report.html"]
    )
    assert res.exit_code == 0
    assert "checked SP01 &lt;b&gt;" in (tmp_path / "out" / "report.html").read_text()
    res = runner.invoke(app, ["case", "show", str(tmp_path / "nothing")])
    (error,) = res.output.splitlines()
    assert res.exit_code == 2 and error.startswith("error: ") and "no case here" in error


def test_indicator_hits_from_the_intel_store(tmp_path: Path) -> None:
    runner = CliRunner(env={"COLUMNS": "40"})  # narrow: the summary line stays whole
    res = runner.invoke(app, ["intel", "import", str(REPO / "demo" / "intel" / "partner-indicators.json")])
    assert res.exit_code == 0, res.output
    root = tmp_path / "case"
    for _ in range(2):  # a re-run recomputes the hits, it does not add them twice
        res = runner.invoke(
            app, ["investigate", str(DEMO_EVIDENCE), "--rules", str(DEMO_RULES), "--case", str(root)]
        )
        assert res.exit_code == 0, res.output
    (summary,) = [line for line in res.output.splitlines() if line.startswith("case ")]
    assert "2 indicator hits" in summary
    with Case.open(root, read_only=True) as case:
        iocs = [sd.detection for sd in case.detections() if sd.detection.kind.value == "ioc"]
        assert sorted((d.computer, d.indicator) for d in iocs) == [
            ("DC01.mofa.gov.example", "7c5a1d0e" * 8),
            ("SP01.mofa.gov.example", "185.25.51.7"),
        ]
        assert case.detection_count() == sum(EXPECTED_RULES.values()) + 2
    bundle = json.loads((root / "bundle.json").read_text())
    patterns = {
        o["pattern"] for o in bundle["objects"] if o["type"] == "indicator" and o["pattern_type"] == "stix"
    }
    assert patterns == {"[ipv4-addr:value = '185.25.51.7']", f"[file:hashes.'SHA-256' = '{'7c5a1d0e' * 8}']"}


def test_same_evidence_same_clock_and_id_gives_identical_outputs(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    def run(root: Path) -> dict[str, bytes]:
        result = investigate(
            [DEMO_EVIDENCE],
            root,
            rules=[DEMO_RULES],
            case_id="7d1c6a0e-0000-4000-8000-00000000c0de",
            clock=lambda: datetime(2022, 7, 20, 9, 0, tzinfo=UTC),
        )
        return {p.name: p.read_bytes() for p in result.reports}

    first = run(tmp_path / "one" / "case")
    assert first == run(tmp_path / "two" / "case")  # a fresh case (same name) from the same evidence
    assert first == run(tmp_path / "one" / "case")  # and the same case re-run
    bundle = json.loads(first["bundle.json"])
    assert bundle["id"].startswith("bundle--") and "2022-07-20T09:00:00.000Z" in first["bundle.json"].decode()


def test_hostile_values_and_file_names_are_stored_not_fatal(tmp_path: Path) -> None:
    """Lone surrogates (JSON escapes, an undecodable file name), integers wider than the columns and a
    timestamp outside the calendar in UTC: the case stores the file, its events and its detection."""
    import os

    evidence = tmp_path / "evidence"
    evidence.mkdir()
    name = os.fsdecode(b"odd\xff.ndjson")  # undecodable bytes: a surrogate escape in the name
    records = [
        {"TimeCreated": "0001-01-01T00:30:00+01:00", "Computer": "WS\ud800", "EventID": 7045,
         "Channel": "System", "EventRecordID": 2**64 + 3, "ServiceName": "PSEXESVC",
         "ImagePath": "C:\\x\udc80.exe"},
        {"TimeCreated": "2022-07-16T01:00:00Z", "Computer": "WS9", "EventID": 2**40, "Channel": "System"},
        # the first instant datetime holds: STIX and the timeline must still write it with four digits
        {"TimeCreated": "0001-01-01T00:00:00Z", "Computer": "WS9", "EventID": 7045, "Channel": "System",
         "ServiceName": "PSEXESVC"},
    ]
    (evidence / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = investigate([evidence], tmp_path / "case", rules=[DEMO_RULES])
    assert (result.files_added, result.events_added, result.detections_added) == (1, 3, 2)
    # every output is written; the JSON ones read back, the escaped surrogates as the strings they were
    bundle = json.loads((tmp_path / "case" / "bundle.json").read_text(encoding="utf-8"))
    assert "0001-01-01T00:00:00.000Z" in {o.get("first_seen") for o in bundle["objects"]}
    summary = json.loads((tmp_path / "case" / "summary.json").read_text(encoding="utf-8"))
    assert summary["first_seen"].startswith("0001-01-01T00:00:00")
    assert summary["detections_by_host"] == {"WS\\ud800": 1, "WS9": 1}  # the stored (escaped) host names
    assert (tmp_path / "case" / "report.html").stat().st_size > 0
    with Case.open(tmp_path / "case", read_only=True) as case:
        early, stored = case.detections()  # untimed last
        assert early.detection.timestamp is not None and early.detection.timestamp.year == 1
        d = stored.detection
        assert d.rule.title == "PsExec Service Installed" and d.timestamp is None
        assert d.fields["ImagePath"] == "C:\\x\udc80.exe" and d.fields["EventRecordID"] == 2**64 + 3
        assert (d.computer, d.record_id) == ("WS\\ud800", None)  # the columns hold what they can
        (record,) = case.evidence_files()
        assert record.path.endswith("odd\\udcff.ndjson") and record.events == 3
        assert [w.stage for w in case.warnings()] == ["attribute"]  # no knowledge base given: no other


def test_skipped_rules_are_recorded_as_warnings(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, rules)
    (rules / "broken.yml").write_text("title: broken\nid: 1\ndetection: [\n")
    result = investigate([DEMO_EVIDENCE], tmp_path / "c", rules=[rules], write_outputs=False)
    assert result.rules_skipped == 1 and result.detections_added == sum(EXPECTED_RULES.values())
    with Case.open(tmp_path / "c", read_only=True) as case:
        (w,) = [w for w in case.warnings() if w.stage == "rules"]
        assert w.warning.file.endswith("broken.yml") and "skipped" in w.warning.reason


CORRELATION = """
title: WMI remote execution seen from both ends
id: 5a0c4f8e-1111-4d2b-9c3e-000000000001
status: experimental
correlation:
    type: event_count
    rules:
        - 6c1a3f0e-2b7d-4c59-9a61-0d3e5f7a8b06
    group-by:
        - User
    timespan: 1h
    condition:
        gte: 2
level: critical
"""


def test_correlation_runs_over_the_whole_case_across_files_and_runs(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    shutil.copytree(DEMO_RULES, rules)
    (rules / "wmi_both_ends.yml").write_text(CORRELATION)
    # The two WMI hits are in two files added by two runs: only the case-wide pass can pair them.
    root = tmp_path / "case"
    first = investigate([DEMO_EVIDENCE / "SP01-sysmon.ndjson"], root, rules=[rules], write_outputs=False)
    assert first.correlation_detections == 0
    second = investigate([DEMO_EVIDENCE / "EXCH01-sysmon.ndjson"], root, rules=[rules], write_outputs=False)
    assert second.correlation_detections == 1
    with Case.open(root, read_only=True) as case:
        dets = [sd.detection for sd in case.detections()]
        (corr,) = [d for d in dets if d.kind.value == "correlation"]
        assert corr.group == {"User": "MOFA\\svc_spadmin"}
        # generate: false (the default) keeps the base rule's hits out of the detections.
        assert not any(d.rule.title == "Remote Process Creation Through WMI" for d in dets)
        assert len(case.correlation_inputs()) == 2


def test_an_output_path_that_cannot_be_written_is_one_error_line(demo_case: Path, tmp_path: Path) -> None:
    """A folder given where a file goes, a file where a folder goes, a parent that does not exist: the path
    and the system's reason, exit 2, no traceback; the case is left as it was."""
    runner = CliRunner(env={"COLUMNS": "40"})
    a_file = tmp_path / "a_file"
    a_file.write_text("x", encoding="utf-8")
    missing = tmp_path / "no" / "such" / "out.json"
    before = (demo_case / "case.duckdb").read_bytes()
    cases = [
        (["case", "timeline", str(demo_case), "-o", str(tmp_path)], f"{tmp_path}: Is a directory"),
        (["case", "timeline", str(demo_case), "-o", str(missing)], f"{missing}: No such file or directory"),
        (["case", "export", str(demo_case), "-o", str(a_file)], f"{a_file}: exists and is not a folder"),
        (["export", "stix", str(demo_case), "--out", str(tmp_path)], f"{tmp_path}: Is a directory"),
        (["hunt", str(DEMO_EVIDENCE), "--rules", str(DEMO_RULES), "-o", str(tmp_path)],
         f"{tmp_path}: Is a directory"),
    ]
    for args, expected in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        (error,) = [line for line in res.output.splitlines() if line.startswith("error: ")]
        assert error == f"error: {expected}", args
        assert "Traceback" not in res.output
    assert (demo_case / "case.duckdb").read_bytes() == before


def _psexec(n: int) -> bytes:
    return json.dumps({
        "TimeCreated": "2022-07-16T01:00:00Z", "Computer": f"WS{n}", "EventID": 7045, "Channel": "System",
        "ServiceName": "PSEXESVC",
    }).encode() + b"\n"


@pytest.mark.parametrize("damage", ["crc", "deflate"])
def test_zip_member_with_damaged_data_is_stored_up_to_the_damage(tmp_path: Path, damage: str) -> None:
    """A member whose data fails its CRC-32 (or stops inflating) after the first block that discovery sniffs:
    hashing it raised zipfile's error, and investigate ended with a traceback. Its records before the damage
    are stored and hunted, as `casefile hunt` reads them, with the damage as the file's warning."""
    import random
    import zipfile

    rng = random.Random(3)  # incompressible padding: the damaged bytes fall late in the deflate stream
    lines = [_psexec(n)[:-2] + b', "pad": "%x"}\n' % rng.getrandbits(400) for n in range(400)]
    archive = tmp_path / "triage.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("damaged.ndjson", b"".join(lines))
        z.writestr("intact.ndjson", _psexec(999))
    data = bytearray(archive.read_bytes())
    if damage == "crc":  # the CRC-32 in both headers
        for offset in (14, data.index(b"PK\x01\x02") + 16):
            data[offset] ^= 0xFF
    else:  # bytes near the end of the first member's compressed data
        end = data.index(b"PK\x03\x04", 4)
        data[end - 40:end - 20] = bytes(b ^ 0x5A for b in data[end - 40:end - 20])
    archive.write_bytes(bytes(data))
    result = investigate([archive], tmp_path / "case", rules=[DEMO_RULES], write_outputs=False)
    assert result.files_added == 2
    with Case.open(tmp_path / "case", read_only=True) as case:
        files = {Path(e.path).name: e for e in case.evidence_files()}
        assert set(files) == {"triage.zip!damaged.ndjson", "triage.zip!intact.ndjson"}
        assert files["triage.zip!intact.ndjson"].events == 1
        stored = files["triage.zip!damaged.ndjson"].events
        assert (stored == 400) if damage == "crc" else (300 < stored < 400)
        assert case.detection_count() == stored + 1
        reasons = [w.warning.reason for w in case.warnings() if w.warning.file.endswith("damaged.ndjson")]
        assert reasons[-1].startswith("damaged archive data, reading stopped here: ")
    again = investigate([archive], tmp_path / "case", rules=[DEMO_RULES], write_outputs=False)
    assert (again.files_added, again.files_already_in_case) == (0, 2)  # the same hash on every run


def test_zip_changed_after_it_was_listed_is_a_warning(tmp_path: Path) -> None:
    """A member gone (or the archive no longer a zip) between discovery and hashing: that file is skipped
    with a warning, the others are stored."""
    import zipfile

    from casefile.case.investigate import hunt_into_case
    from casefile.hunt import load_rules
    from casefile.ingest import discover

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("one.ndjson", _psexec(1))
        z.writestr("two.ndjson", _psexec(2))
    plain = tmp_path / "b.ndjson"
    plain.write_bytes(_psexec(3))
    evidence = discover([archive, plain])
    with zipfile.ZipFile(archive, "w") as z:  # rewritten without `two`
        z.writestr("one.ndjson", _psexec(1))
    with Case.create(tmp_path / "case") as case:
        added, _, events, detections, warnings = hunt_into_case(case, evidence, load_rules([DEMO_RULES]))
    assert (added, events, detections) == (2, 2, 2)
    assert [(w.file, w.reason) for w in warnings] == [
        (f"{archive}!two.ndjson", "cannot read file: \"There is no item named 'two.ndjson' in the archive\"; "
         "skipped"),
    ]
