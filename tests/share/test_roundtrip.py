"""Findings out and back in: a real case (events -> indicator hits) exported as STIX and as a MISP
feed, then imported into a fresh intel store with nothing lost."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import stix2
from typer.testing import CliRunner

from casefile.case import Case
from casefile.case.store import EvidenceBatch
from casefile.cli import app
from casefile.ingest.columnar import write_events
from casefile.models import Detection, DetectionKind, Event, Level, RuleInfo
from casefile.share import IntelStore, bundle_to_misp_event, export_case, import_intel, match_indicators
from casefile.share.models import Atom, AtomKind

SHA256 = "9f" * 32
CREATED = datetime(2022, 7, 20, 12, 0, tzinfo=UTC)
SIGMA_ID = "5b0c1a7e-0000-4000-8000-000000000001"


def _event(record: int, event_id: int, **fields: Any) -> Event:
    return Event(
        datetime(2022, 7, 15, 8, 0, record, tzinfo=UTC),
        "FS01",
        "Microsoft-Windows-Sysmon/Operational",
        "p",
        event_id,
        record,
        "fs01.evtx",
        {"EventID": event_id, **fields},
    )


def build_case(tmp_path: Path) -> Path:
    events = [
        _event(1, 1, Image="C:\\Windows\\Temp\\cl.exe", Hashes=f"SHA256={SHA256}"),
        _event(2, 3, DestinationIp="203.0.113.9"),
        _event(3, 22, QueryName="c2.example"),
        _event(4, 1, Image="C:\\Windows\\notepad.exe", Hashes="SHA256=" + "00" * 32),
    ]
    feed = tmp_path / "partner.csv"
    feed.write_text(f"value,tlp\n{SHA256},amber\n203.0.113.9,amber\nc2.example,green\nunseen.example,green\n")
    con = duckdb.connect()
    write_events(con, events)
    with IntelStore.open(tmp_path / "partner-intel.duckdb") as store:
        import_intel(store, feed)
        hits = match_indicators(con, store.indicators())
    assert len(hits) == 3
    root = tmp_path / "case"
    case = Case.create(root, clock=lambda: CREATED)
    batch = EvidenceBatch("c" * 64, "fs01.evtx", 4096, "evtx")
    for e in events:
        batch.add_event(e)
    batch.detections.extend(hits)
    wiper = events[0]
    batch.detections.append(
        Detection(
            RuleInfo(
                SIGMA_ID,
                "Wiper dropped",
                Level.CRITICAL,
                "test",
                "casefile",
                ("attack.impact", "attack.t1485"),
            ),
            DetectionKind.SIGMA,
            wiper.timestamp,
            wiper.computer,
            wiper.channel,
            wiper.event_id,
            wiper.record_id,
            wiper.source_file,
            {"Image": wiper.fields["Image"]},
            dict(wiper.fields),
        )
    )
    case.add_evidence(batch)
    case.add_rule_texts([(SIGMA_ID, "Wiper dropped", None, f"title: Wiper dropped\nid: {SIGMA_ID}\n")])
    case.close()
    return root


def test_case_stix_export_imports_into_a_fresh_store_with_nothing_lost(tmp_path: Path) -> None:
    case_dir = build_case(tmp_path)
    written = export_case(case_dir, "stix")
    assert written == case_dir / "export" / "case.stix.json"
    bundle = json.loads(written.read_text())
    stix2.parse(bundle, allow_custom=True)  # a valid STIX 2.1 bundle
    sightings = [o for o in bundle["objects"] if o["type"] == "sighting"]
    assert len(sightings) == 4  # three indicator hits and the Sigma rule's hit
    assert {o.get("pattern_type") for o in bundle["objects"] if o["type"] == "indicator"} == {"stix", "sigma"}

    with IntelStore.open(tmp_path / "fresh.duckdb") as fresh:
        result = import_intel(fresh, written)
        assert result.issues == []
        back = {o["id"]: o for o in fresh.stix_objects()}
        assert back == {o["id"]: o for o in bundle["objects"]}
        atoms = sorted(a for i in fresh.indicators() for a in i.atoms)
        assert atoms == [
            Atom(AtomKind.DOMAIN, "c2.example"),
            Atom(AtomKind.HASH, SHA256),
            Atom(AtomKind.IP, "203.0.113.9"),
        ]


def test_case_misp_feed_carries_indicators_sightings_and_reimports(tmp_path: Path) -> None:
    case_dir = build_case(tmp_path)
    with Case.open(case_dir, read_only=True) as case:
        from casefile.report.stix import case_bundle

        bundle = case_bundle(case)
    event = bundle_to_misp_event(bundle)["Event"]
    by_type = {a["type"]: a for a in event["Attribute"] if a["to_ids"]}
    assert sorted(by_type) == ["domain", "ip-dst", "sha256"]
    (sigma,) = [a for a in event["Attribute"] if a["type"] == "sigma"]
    assert "Wiper dropped" in sigma["comment"] and len(sigma["Sighting"]) == 1
    assert by_type["sha256"]["value"] == SHA256
    assert all(len(a["Sighting"]) == 1 for a in by_type.values())
    assert event["info"].startswith("casefile case")

    feed = export_case(case_dir, "misp", tmp_path / "feed")
    manifest = json.loads((feed / "manifest.json").read_text())
    assert list(manifest) == [event["uuid"]]
    assert (feed / "hashes.csv").read_text().count(event["uuid"]) == len(event["Attribute"])
    with IntelStore.open(tmp_path / "fresh.duckdb") as fresh:
        result = import_intel(fresh, feed)
        assert result.issues == []
        assert result.indicators_new == 3
        assert sorted(a.value for i in fresh.indicators() for a in i.atoms) == sorted(
            ["c2.example", SHA256, "203.0.113.9"]
        )


def test_misp_export_keeps_unmatchable_patterns_and_attack_tags() -> None:
    ind = stix2.Indicator(
        pattern="[file:name = 'cl.exe' AND file:size = 3]",
        pattern_type="stix",
        valid_from="2022-07-01T00:00:00Z",
        object_marking_refs=[stix2.TLP_RED],
    )
    technique = stix2.AttackPattern(
        name="Disk Structure Wipe",
        external_references=[{"source_name": "mitre-attack", "external_id": "T1561.002"}],
    )
    actor = stix2.IntrusionSet(name="HomeLand Justice")
    bundle = json.loads(stix2.Bundle(ind, technique, actor).serialize())
    event = bundle_to_misp_event(bundle)["Event"]
    (attr,) = event["Attribute"]
    assert (attr["type"], attr["value"], attr["to_ids"]) == ("stix2-pattern", ind.pattern, False)
    assert {t["name"] for t in event["Tag"]} == {
        'misp-galaxy:mitre-attack-pattern="Disk Structure Wipe - T1561.002"',
        'misp-galaxy:threat-actor="HomeLand Justice"',
        "tlp:red",
    }


def test_misp_feed_of_a_value_with_a_lone_surrogate(tmp_path: Path) -> None:
    """A JSON escape such as `\\ud800` in an imported pattern reaches the feed's hashes.csv, which hashes
    each value's UTF-8 bytes: the feed is written all the same, the event keeps the value exactly."""
    from casefile.share.export import write_misp_feed

    pattern = "[file:name = 'x\ud800.exe']"
    bundle = {"type": "bundle", "id": "bundle--00000000-0000-4000-8000-000000000001", "objects": [{
        "type": "indicator", "spec_version": "2.1", "id": "indicator--00000000-0000-4000-8000-000000000002",
        "created": "2022-07-01T00:00:00.000Z", "modified": "2022-07-01T00:00:00.000Z",
        "pattern": pattern, "pattern_type": "stix", "valid_from": "2022-07-01T00:00:00Z",
    }]}
    out = write_misp_feed(bundle, tmp_path / "feed")
    (event_file,) = [p for p in out.glob("*.json") if p.name != "manifest.json"]
    (attr,) = json.loads(event_file.read_text(encoding="utf-8"))["Event"]["Attribute"]
    assert attr["value"] == pattern
    assert len((out / "hashes.csv").read_text(encoding="utf-8").splitlines()) == 1


def test_cli_intel_import_and_exports(tmp_path: Path) -> None:
    case_dir = build_case(tmp_path)
    # A narrow terminal: problem and error lines stay whole (rich once hard-wrapped them at its width).
    runner = CliRunner(env={"COLUMNS": "40"})
    store = tmp_path / "cli.duckdb"
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "type": "bundle",
                "id": "bundle--1",
                "objects": [
                    {
                        "type": "indicator",
                        "spec_version": "2.1",
                        "id": "indicator--00000000-0000-4000-8000-000000000001",
                        "created": "2022-07-01T00:00:00Z",
                        "modified": "2022-07-01T00:00:00Z",
                        "pattern": "[broken",
                        "pattern_type": "stix",
                        "valid_from": "2022-07-01T00:00:00Z",
                    },
                ],
            }
        )
    )
    out = runner.invoke(
        app, ["intel", "import", str(tmp_path / "partner.csv"), str(bad), "--store", str(store)]
    )
    assert out.exit_code == 0, out.output
    assert "4 new indicators, 0 merged, 0 other objects, 1 problems" in out.stdout
    (warning,) = [line for line in out.output.splitlines() if line.startswith("warning:")]
    assert warning.startswith(
        f"warning: {bad} [indicator--00000000-0000-4000-8000-000000000001]: invalid STIX pattern '[broken'"
    )
    stix_out = runner.invoke(app, ["export", "stix", str(case_dir), "--out", str(tmp_path / "b.json")])
    assert stix_out.exit_code == 0, stix_out.output
    assert json.loads((tmp_path / "b.json").read_text())["type"] == "bundle"
    misp_out = runner.invoke(app, ["export", "misp", str(case_dir)])
    assert misp_out.exit_code == 0, misp_out.output
    assert (case_dir / "export" / "misp" / "manifest.json").is_file()
    listed = runner.invoke(app, ["intel", "list", "--store", str(store)])
    assert listed.exit_code == 0, listed.output
    assert "[domain-name:value = 'c2.example']" in listed.stdout and "TLP:AMBER" in listed.stdout
    assert listed.output.splitlines()[-1] == "4 indicators"
    kb = runner.invoke(
        app, ["intel", "bundle", str(tmp_path / "kb.json"), "--type", "indicator", "--store", str(store)]
    )
    assert kb.exit_code == 0, kb.output
    assert len(json.loads((tmp_path / "kb.json").read_text())["objects"]) == 4
    matched = runner.invoke(app, ["intel", "match", str(case_dir), "--store", str(store)])
    assert matched.exit_code == 0, matched.output
    assert matched.stdout.startswith("3 indicator hits (3 indicators)")
    with Case.open(case_dir, read_only=True) as case:
        kinds = sorted(sd.detection.kind.value for sd in case.detections())
    assert kinds == ["ioc"] * 6 + ["sigma"]  # the 3 per-file hits from the hunt plus the 3 case-wide ones
    again = runner.invoke(app, ["intel", "match", str(case_dir), "--store", str(store)])
    assert again.exit_code == 0
    with Case.open(case_dir, read_only=True) as case:
        assert len(case.detections()) == 7  # re-matching replaces, never duplicates
    missing = runner.invoke(app, ["intel", "import", str(tmp_path / "absent.csv"), "--store", str(store)])
    (error,) = missing.output.splitlines()
    assert missing.exit_code == 2 and error.startswith("error: ") and "no such file" in error
    assert str(tmp_path / "absent.csv") in error
