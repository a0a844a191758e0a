"""`casefile hunt`, `casefile rules check` and `casefile rules update` end to end (real files, a real
HTTP server on 127.0.0.1 for the download)."""

from __future__ import annotations

import csv
import io
import json
import threading
import zipfile
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from casefile.cli import app

from .conftest import WHOAMI_RULE as RULE

EVENTS = [
    {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "ws1",
     "Image": "C:\\Windows\\System32\\whoami.exe", "CommandLine": "=HYPERLINK(\"x\")"},
    {"EventID": 1, "Channel": "Microsoft-Windows-Sysmon/Operational", "Computer": "ws1",
     "Image": "C:\\Windows\\System32\\cmd.exe", "CommandLine": "cmd"},
]


@pytest.fixture
def case_files(tmp_path: Path) -> tuple[Path, Path]:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "whoami.yml").write_text(RULE, encoding="utf-8")
    (rules / "broken.yml").write_text("title: [\n", encoding="utf-8")
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    (evidence / "events.json").write_text("\n".join(json.dumps(e) for e in EVENTS) + "\n", encoding="utf-8")
    (evidence / "notes.bin").write_bytes(b"\x00\x01garbage")
    return rules, evidence


def test_hunt_jsonl(case_files: tuple[Path, Path]) -> None:
    rules, evidence = case_files
    result = CliRunner().invoke(app, ["hunt", str(evidence), "--rules", str(rules), "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["rule_id"], r["computer"], r["author"]) for r in lines] == [
        ("0d7c4a52-5a1f-4b3e-9c6b-0f3f6a4b1a01", "ws1", "Tester")
    ]
    assert lines[0]["matched"] == {"Image": "C:\\Windows\\System32\\whoami.exe"}
    assert "notes.bin" in result.stderr  # the unreadable file is named in a warning
    assert "rules loaded 1, skipped 1, detections 1" in result.stderr


def test_hunt_without_a_terminal_shows_no_bar_and_counts_no_files(
    case_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where stderr is not a terminal no bar is shown, so the files are not counted for its total: that
    second walk of the evidence (and telling the bar of each file) was about an eighth of a hunt's parent
    CPU."""
    from casefile.hunt import engine

    counted: list[object] = []

    def count_files(*args: object, **kwargs: object) -> int:
        counted.append(args)
        return 0

    monkeypatch.setattr(engine, "count_files", count_files)
    rules, evidence = case_files
    result = CliRunner().invoke(app, ["hunt", str(evidence), "--rules", str(rules), "--format", "jsonl"])
    assert result.exit_code == 0, result.output
    assert "rules loaded 1, skipped 1, detections 1" in result.stderr
    assert counted == []


def test_hunt_csv_to_file_guards_formulas(case_files: tuple[Path, Path], tmp_path: Path) -> None:
    rules, evidence = case_files
    out = tmp_path / "out.csv"
    # a rule matching the formula-looking command line
    (rules / "formula.yml").write_text(
        RULE.replace("1a01", "1a09").replace(
            "Image|endswith: '\\whoami.exe'", "CommandLine|contains: 'HYPERLINK'"
        ),
        encoding="utf-8",
    )
    result = CliRunner().invoke(app, ["hunt", str(evidence), "-r", str(rules), "-f", "csv", "-o", str(out)])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == 2
    formula = next(r for r in rows if r["rule_id"].endswith("1a09"))
    assert json.loads(formula["matched"]) == {"CommandLine": '=HYPERLINK("x")'}


def test_hunt_min_level_and_bad_format(case_files: tuple[Path, Path]) -> None:
    rules, evidence = case_files
    runner = CliRunner()
    high = runner.invoke(app, ["hunt", str(evidence), "-r", str(rules), "-f", "json", "--min-level", "high"])
    assert high.exit_code == 0 and json.loads(high.stdout) == []
    bad = runner.invoke(app, ["hunt", str(evidence), "-r", str(rules), "-f", "xml"])
    assert bad.exit_code == 2 and "unknown --format" in bad.stderr


def test_rules_check_lists_skipped(case_files: tuple[Path, Path]) -> None:
    rules, _ = case_files
    result = CliRunner().invoke(app, ["rules", "check", "--rules", str(rules)])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    kind, path, rule_id, reason = line.split("\t")
    assert (kind, Path(path).name, rule_id) == ("skipped", "broken.yml", "-")
    assert reason.startswith("invalid Sigma YAML")
    assert "1 rules and 0 correlations loaded, 1 skipped, from 2 files" in result.stderr


def test_hunt_without_installed_rules_says_what_to_do(case_files: tuple[Path, Path]) -> None:
    _, evidence = case_files
    result = CliRunner().invoke(app, ["hunt", str(evidence)])
    assert result.exit_code == 2
    assert "casefile rules update" in result.stderr


@pytest.fixture
def web_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A static HTTP server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()
        server.server_close()


def test_rules_update_downloads_and_installs(
    web_root: tuple[str, Path], case_files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, root = web_root
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("rules/windows/whoami.yml", RULE)
        z.writestr("rules-emerging-threats/README.md", "not a rule")
    (root / "sigma_all_rules.zip").write_bytes(buf.getvalue())
    (root / "enterprise-attack.json").write_text('{"type": "bundle", "objects": []}', encoding="utf-8")
    monkeypatch.setenv("CASEFILE_SIGMA_URL", f"{url}/sigma_all_rules.zip")
    monkeypatch.setenv("CASEFILE_ATTACK_URL", f"{url}/enterprise-attack.json")
    runner = CliRunner()
    update = runner.invoke(app, ["rules", "update"])
    assert update.exit_code == 0, update.output
    assert "installed 1 rule files" in update.stderr
    _, evidence = case_files
    hunt = runner.invoke(app, ["hunt", str(evidence), "-f", "jsonl"])  # --rules defaults to installed
    assert hunt.exit_code == 0, hunt.output
    assert len(hunt.stdout.splitlines()) == 1


def test_rules_update_rejects_zip_slip(web_root: tuple[str, Path]) -> None:
    url, root = web_root
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("../evil.yml", RULE)
    (root / "bad.zip").write_bytes(buf.getvalue())
    (root / "attack.json").write_text("{}", encoding="utf-8")
    result = CliRunner().invoke(
        app, ["rules", "update", "--sigma-url", f"{url}/bad.zip", "--attack-url", f"{url}/attack.json"]
    )
    assert result.exit_code == 2 and "unsafe member path" in result.stderr


@pytest.mark.parametrize("bundle", ["enterprise-attack.json", "enterprise-attack.json.gz"])
def test_rules_update_from_local_copy(tmp_path: Path, case_files: tuple[Path, Path], bundle: str) -> None:
    src = tmp_path / "offline"
    (src / "sigma" / "rules").mkdir(parents=True)
    (src / "sigma" / "rules" / "whoami.yml").write_text(RULE, encoding="utf-8")
    (src / "attack").mkdir()
    (src / "attack" / "README.md").write_text("not a bundle", encoding="utf-8")
    (src / "attack" / bundle).write_bytes(b"{}")
    runner = CliRunner()
    result = runner.invoke(app, ["rules", "update", "--from", str(src)])
    assert result.exit_code == 0, result.output
    said = result.stderr.replace("\n", "")  # rich may wrap long paths
    assert "no ATT&CK bundle" not in said and f"/attack/{bundle}" in said
    check = runner.invoke(app, ["rules", "check"])
    assert check.exit_code == 0 and "1 rules and 0 correlations loaded, 0 skipped" in check.stderr


def test_hunt_names_damaged_record_and_goes_on(case_files: tuple[Path, Path]) -> None:
    rules, evidence = case_files
    lines = [json.dumps(EVENTS[1]), "{not json", json.dumps(EVENTS[0])]
    (evidence / "events.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["hunt", str(evidence), "-r", str(rules), "-f", "jsonl"])
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 1  # the record after the damaged one is still hunted
    warning = next(line for line in result.stderr.splitlines() if "events.json" in line)
    assert "record 2" in warning


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "table"])
@pytest.mark.parametrize("to_file", [True, False])
def test_hunt_writes_values_utf8_cannot_encode(
    case_files: tuple[Path, Path], tmp_path: Path, fmt: str, to_file: bool
) -> None:
    # A JSON log may escape a lone surrogate, which json keeps and UTF-8 cannot encode: the output
    # writes it as the escape text, and the run neither stops nor loses the other detections.
    rules, evidence = case_files
    image = "C:\\Windows\\\ud800\\whoami.exe"
    hostile = {**EVENTS[0], "Computer": "ws\udfff", "Image": image}
    (evidence / "hostile.json").write_text(json.dumps(hostile) + "\n", encoding="utf-8")
    out = tmp_path / f"out.{fmt}"
    args = ["hunt", str(evidence), "--rules", str(rules), "--format", fmt]
    result = CliRunner().invoke(app, args + (["-o", str(out)] if to_file else []))
    assert result.exit_code == 0, result.output
    assert "detections 2" in result.stderr
    text = out.read_text(encoding="utf-8") if to_file else result.stdout
    if fmt == "jsonl":
        records = [json.loads(line) for line in text.splitlines()]
    elif fmt == "json":
        records = json.loads(text)
    else:
        assert "\\ud800" in text and "\\udfff" in text
        return
    by_file = {Path(r["file"]).name: r for r in records}
    assert by_file["hostile.json"]["matched"] == {"Image": image}
    assert by_file["hostile.json"]["computer"] == "ws\udfff"
    assert by_file["events.json"]["matched"] == {"Image": EVENTS[0]["Image"]}


def test_jsonl_lines_are_the_records(tmp_path: Path) -> None:
    from casefile.hunt.output import write_jsonl
    from casefile.models import Detection, DetectionKind, Level, RuleInfo

    rule = RuleInfo("r1", "T", Level.HIGH, "test", "A", ("attack.t1059",))
    matched: list[dict[str, object]] = [
        {"Image": "C:\\ä\\x.exe", "Count": 7, "Ratio": 0.25, "List": ["a", 1]},
        {"Wide": 2**70, "Negative": -(2**64)},  # wider than orjson's 64-bit integers
        {"Odd": "x\ud800y"},
    ]
    detections = [
        Detection(rule, DetectionKind.SIGMA, None, "ws1", "Security", 4688, i, "f.evtx", m)
        for i, m in enumerate(matched)
    ]
    out = io.StringIO()
    assert write_jsonl(detections, out) == 3
    lines = out.getvalue().splitlines()
    assert [json.loads(line) for line in lines] == [d.to_record() for d in detections]
    assert all(": " not in line for line in lines)  # one compact style for every line


def test_jsonl_lines_encode_each_rule_once_and_are_the_whole_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """`JsonlLines` joins a rule's keys, encoded once per rule and kind, to each hit's: the line is what
    encoding the whole record gives (orjson, or `json` with ASCII escapes where orjson refuses either part),
    also once its cache of rules is emptied."""
    import itertools
    import random
    from datetime import UTC, datetime

    import orjson

    from casefile.hunt import output
    from casefile.models import Detection, DetectionKind, Level, RuleInfo

    def whole(d: Detection) -> str:
        record = d.to_record()
        try:
            return orjson.dumps(record, default=output._json_default, option=output._ORJSON_OPTIONS).decode()
        except orjson.JSONEncodeError:
            return output._LINE.encode(record)

    heads = 0
    head = output._head

    def counted(keys: dict[str, object]) -> bytes | None:
        nonlocal heads
        heads += 1
        return head(keys)

    monkeypatch.setattr(output, "_head", counted)
    rules = [
        RuleInfo("r1", "T", Level.HIGH, "test", "A", ("attack.t1059",)),
        RuleInfo("r1", "T", Level.HIGH, "test", "A", ("attack.t1059",)),  # equal, another object
        RuleInfo("r2", "Odd \udc80 title", Level.LOW, None, None),  # orjson refuses the rule's keys
        RuleInfo("r3", "ä", Level.CRITICAL, "stable", "B, C", ("x", "y")),
    ]
    kinds = [DetectionKind.SIGMA, DetectionKind.IOC]
    hits: list[tuple[dict[str, object], datetime | None]] = [
        ({"Image": "C:\\ä\\x.exe", "Count": 7, "Ratio": 0.25, "List": ["a", 1]}, None),
        ({"Wide": 2**70}, datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),  # orjson refuses the hit's keys
        ({"Odd": "x\ud800y", "Nan": float("nan")}, datetime(2024, 1, 2, 3, 4, 5, 600, tzinfo=UTC)),
        ({}, datetime(2024, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)),
    ]
    detections = [
        Detection(rule, kind, ts, "ws1", "Security", 4688, i, "f.evtx", matched, indicator="1.2.3.4")
        for i, (rule, kind, (matched, ts)) in enumerate(itertools.product(rules, kinds, hits))
    ] * 3
    random.Random(7).shuffle(detections)
    expected = [whole(d) for d in detections]
    lines = output.JsonlLines()
    assert [lines.line(d) for d in detections] == expected
    assert heads == len(rules) * len(kinds)
    assert sum("\\udc80" in line for line in expected) == len(expected) // len(rules)  # `json`'s escape
    monkeypatch.setattr(output, "_MAX_HEADS", 3)  # emptied every third rule and kind
    heads = 0
    lines = output.JsonlLines()
    assert [lines.line(d) for d in detections] == expected
    assert heads > len(rules) * len(kinds)


def test_sigma_lines_made_without_a_detection_are_its_lines() -> None:
    """`JsonlLines.sigma_line` (a hunt worker's lines: the event's part encoded once, `event_part`) gives
    exactly `line` of the Detection, for every event and matched fields orjson writes; None where `line`
    must write it: a rule whose keys it has not encoded yet, or values orjson refuses. Times: UTC ones with
    and without microseconds (which orjson writes itself), none, and one of another zone."""
    from datetime import UTC, datetime, timedelta, timezone

    from casefile.hunt import output
    from casefile.models import Detection, DetectionKind, Event, Level, RuleInfo

    rule = RuleInfo("r1", "T ä", Level.HIGH, "test", "A", ("attack.t1059",))
    events = [
        Event(datetime(2024, 1, 2, 3, 4, 5, 600, tzinfo=UTC), "ws1", "Security", "P", 4688, 7, "f.evtx", {}),
        Event(None, None, None, None, None, None, "f \"q\".evtx", {}),
        Event(datetime(2024, 1, 2, tzinfo=UTC), "wsä", "System", None, 7045, 2**63, "b.evtx", {}),
        Event(datetime(2024, 1, 2, 3, tzinfo=timezone(timedelta(hours=2))), "w", "S", None, 1, 1, "c", {}),
    ]
    matched: list[dict[str, object]] = [
        {}, {"Image": "C:\\ä\\x.exe", "Count": 7, "List": ["a", 1, None], "Ratio": 0.5, "T": True},
    ]
    lines = output.JsonlLines()
    assert lines.sigma_line(rule, output.event_part(events[0]) or b"", {}) is None  # not encoded yet
    lines.line(Detection(rule, DetectionKind.SIGMA, None, None, None, None, None, None))
    for event in events:
        part = output.event_part(event)
        assert part is not None
        for m in matched:
            d = Detection(
                rule, DetectionKind.SIGMA, event.timestamp, event.computer, event.channel, event.event_id,
                event.record_id, event.source_file, m,
            )
            assert lines.sigma_line(rule, part, m) == lines.utf8(d) == lines.line(d).encode()
    part = output.event_part(events[0])
    assert part is not None
    assert lines.sigma_line(rule, part, {"Odd": "x\ud800y"}) is None  # `line` writes it with `json`
    assert lines.sigma_line(rule, part, {"Wide": 2**70}) is None
    odd = Event(None, "x\udc80", None, None, None, None, "f.evtx", {})
    assert output.event_part(odd) is None


def test_rules_update_keeps_what_is_installed_when_a_download_is_wrong(
    web_root: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A captive portal's page for the bundle, a zip bomb, a download past its bound: one error line each,
    and the rules and bundle installed before are still there, unchanged."""
    from casefile.config import Settings
    from casefile.hunt import update

    url, root = web_root
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("rules/windows/whoami.yml", RULE)
    (root / "good.zip").write_bytes(buf.getvalue())
    (root / "bundle.json").write_text('{"type": "bundle", "objects": []}', encoding="utf-8")
    (root / "portal.html").write_text("<html>log in to the hotel wifi</html>", encoding="utf-8")
    (root / "list.json").write_text("[]", encoding="utf-8")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("rules/a.yml", RULE)
        z.writestr("rules/zeros.yml", b"\0" * (3 << 20))
    (root / "bomb.zip").write_bytes(bomb.getvalue())
    runner = CliRunner()

    def update_from(sigma: str, attack: str) -> Any:
        return runner.invoke(
            app, ["rules", "update", "--sigma-url", f"{url}/{sigma}", "--attack-url", f"{url}/{attack}"]
        )

    assert update_from("good.zip", "bundle.json").exit_code == 0
    settings = Settings.from_env()

    def files() -> dict[Path, bytes]:
        paths = [*settings.rules_dir.rglob("*.yml"), *settings.attack_dir.iterdir()]
        return {p: p.read_bytes() for p in paths}

    installed = files()
    monkeypatch.setattr(update, "MAX_UNPACKED", 1 << 20)
    for sigma, attack, said in [
        ("good.zip", "portal.html", "not JSON"),
        ("good.zip", "list.json", "not a STIX bundle"),
        ("bomb.zip", "bundle.json", "refusing it as a zip bomb"),
    ]:
        result = update_from(sigma, attack)
        assert result.exit_code == 2 and said in result.stderr.replace("\n", ""), (sigma, attack)
    monkeypatch.setattr(update, "MAX_DOWNLOAD", 100)
    result = update_from("good.zip", "bundle.json")
    assert result.exit_code == 2 and "larger than" in result.stderr
    assert files() == installed and len(installed) == 2
    assert not (settings.data_dir / "sigma.new").exists()


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_hunt_output_inside_the_evidence_is_not_hunted(case_files: tuple[Path, Path], jobs: str) -> None:
    # Files are found as the hunt goes: its own output, written into the evidence folder (here under a
    # name found after the evidence, and left from an earlier run), must not be read as evidence.
    rules, evidence = case_files
    out = evidence / "zz-hits.jsonl"
    args = ["hunt", str(evidence), "-r", str(rules), "-f", "jsonl", "-o", str(out), "-j", jobs]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "zz-hits" not in again.output  # no warning about it
    assert "files 1," in again.output
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["file"] == str(evidence / "events.json")


def test_utf8_chunks_go_to_the_byte_buffer_after_pending_text(tmp_path: Path) -> None:
    """`write_utf8` writes chunks to a UTF-8 stream's byte buffer after what its text layer holds, and
    decodes them for a stream without one (or with another encoding)."""
    from casefile.hunt.output import write_utf8

    chunks = [b'{"a":"\xc3\xa9"}\n', b"{}\n{}\n"]
    path = tmp_path / "out.jsonl"
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write("first\n")  # held by the text layer until flushed
        write_utf8(chunks, fh)
    assert path.read_bytes() == b'first\n{"a":"\xc3\xa9"}\n{}\n{}\n'
    text = io.StringIO()
    write_utf8(chunks, text)
    assert text.getvalue() == '{"a":"é"}\n{}\n{}\n'
    raw = io.BytesIO()
    latin = io.TextIOWrapper(raw, encoding="latin-1", newline="")
    write_utf8(chunks, latin)
    latin.flush()
    assert raw.getvalue() == '{"a":"é"}\n{}\n{}\n'.encode("latin-1")
