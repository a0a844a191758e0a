"""Intel import: STIX bundles, MISP feed folders, CSV lists; deduplication; per-object errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import stix2

from casefile.errors import IntelError
from casefile.share import ImportOptions, IntelStore, import_intel
from casefile.share.models import Atom, AtomKind

SHA256 = "a" * 64
AMBER = stix2.TLP_AMBER.id
GREEN = stix2.TLP_GREEN.id


def indicator(n: int, pattern: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "indicator",
        "spec_version": "2.1",
        "id": f"indicator--{n:08d}-0000-4000-8000-000000000000",
        "created": "2022-07-10T00:00:00.000Z",
        "modified": "2022-07-12T00:00:00.000Z",
        "valid_from": "2022-07-10T00:00:00Z",
        "pattern": pattern,
        "pattern_type": "stix",
        **extra,
    }


def write_bundle(path: Path, objects: list[Any]) -> Path:
    path.write_text(json.dumps({"type": "bundle", "id": "bundle--0", "objects": objects}), encoding="utf-8")
    return path


def test_stix_bundle_bad_pattern_is_one_issue_rest_imported(tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path / "partner.json",
        [
            indicator(1, "[ipv4-addr:value ISSUBSET '203.0.113.0/24']", object_marking_refs=[AMBER]),
            indicator(2, "[file:hashes.'SHA-256' = "),
            indicator(3, "[domain-name:value = 'c2.example']", name="C2"),
            {
                "type": "intrusion-set",
                "spec_version": "2.1",
                "id": "intrusion-set--00000000-0000-4000-8000-00000000000a",
                "created": "2022-07-01T00:00:00Z",
                "modified": "2022-07-01T00:00:00Z",
                "name": "HomeLand Justice",
            },
            {
                "type": "malware",
                "spec_version": "2.1",
                "id": "malware--00000000-0000-4000-8000-00000000000b",
                "created": "2022-07-01T00:00:00Z",
                "modified": "2022-07-01T00:00:00Z",
                "name": "ZeroCleare",
                "is_family": True,
            },
            "not an object",
        ],
    )
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, bundle)
        assert (result.indicators_new, result.indicators_merged, result.objects) == (2, 0, 2)
        assert sorted((i.object, i.reason.split(":")[0]) for i in result.issues) == [
            ("indicator--00000002-0000-4000-8000-000000000000", 'invalid STIX pattern "[file'),
            ("objects[5]", "not a STIX object (needs string 'type' and 'id')"),
        ]
        by_id = {i.id: i for i in store.indicators()}
        net = by_id["indicator--00000001-0000-4000-8000-000000000000"]
        assert net.tlp == "TLP:AMBER"
        assert net.atoms == (Atom(AtomKind.IP, "203.0.113.0/24"),)
        assert net.first_seen == datetime(2022, 7, 10, tzinfo=UTC)
        assert net.last_seen == datetime(2022, 7, 12, tzinfo=UTC)
        assert net.sources == (str(bundle),)
        kb_objects = store.stix_objects(["intrusion-set", "malware"])
        assert sorted(o["name"] for o in kb_objects) == ["HomeLand Justice", "ZeroCleare"]
        written = json.loads(store.write_bundle(tmp_path / "kb.json", ["intrusion-set"]).read_text())
        assert [o["name"] for o in written["objects"]] == ["HomeLand Justice"]
        assert stix2.parse(written, allow_custom=True).objects[0].name == "HomeLand Justice"


def test_stix_objects_of_odd_shapes_are_issues_or_imported_not_fatal(tmp_path: Path) -> None:
    """Fields of unexpected types, ids and types STIX does not allow, and lone surrogates (JSON escapes)."""
    odd_type = {"type": "Bad Type", "id": "Bad Type--00000000-0000-4000-8000-00000000000c"}
    no_uuid = {"type": "malware", "id": "malware--\ud800"}
    other = {
        "type": "x-note", "spec_version": "2.1", "id": "x-note--00000000-0000-4000-8000-00000000000d",
        "modified": {"not": "a timestamp"}, "text": "\ud800",
    }
    bundle = write_bundle(
        tmp_path / "odd.json",
        [
            indicator(1, "[domain-name:value = 'c2.example']", object_marking_refs=5, labels="abc", name=7),
            indicator(2, "[url:value = 'http://c2.example/\ud800']"),
            odd_type,
            no_uuid,
            other,
        ],
    )
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, bundle)
        assert (result.indicators_new, result.objects) == (2, 1)
        assert sorted(i.reason for i in result.issues) == [
            "id 'malware--\\ud800' does not end in a UUID",
            "not a STIX object: type 'Bad Type', id 'Bad Type--00000000-0000-4000-8000-00000000000c'",
        ]
        first = next(i for i in store.indicators() if i.id.startswith("indicator--00000001"))
        assert (first.tlp, first.labels, first.name) == (None, (), None)
        (note,) = store.stix_objects(["x-note"])
        assert note["text"] == "\ud800"  # the object itself is kept as JSON, exactly


def test_patterns_too_deep_or_too_long_to_parse_are_issues_not_fatal(tmp_path: Path) -> None:
    """stix2-patterns recurses per nesting level: thousands of parentheses or comparisons in one pattern
    used to raise RecursionError out of the import, losing every other indicator of the bundle."""
    nested = "(" * 3000 + "[domain-name:value = 'deep.example']" + ")" * 3000
    long_or = "[" + " OR ".join(f"ipv4-addr:value = '10.0.{i // 256}.{i % 256}'" for i in range(5000)) + "]"
    bundle = write_bundle(
        tmp_path / "hostile.json",
        [indicator(1, nested), indicator(2, long_or), indicator(3, "[domain-name:value = 'c2.example']")],
    )
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, bundle)
        assert result.indicators_new == 1
        assert sorted(i.object for i in result.issues) == [
            "indicator--00000001-0000-4000-8000-000000000000",
            "indicator--00000002-0000-4000-8000-000000000000",
        ]
        assert all("too deeply nested or too long" in i.reason for i in result.issues)
        assert all(len(i.reason) < 300 for i in result.issues)  # not the whole pattern
        assert [i.pattern for i in store.indicators()] == ["[domain-name:value = 'c2.example']"]


def test_same_indicator_from_two_sources_is_one_indicator(tmp_path: Path) -> None:
    bundle = write_bundle(
        tmp_path / "a.json",
        [
            indicator(1, f"[file:hashes.'SHA-256' = '{SHA256.upper()}']", object_marking_refs=[GREEN]),
        ],
    )
    csv = tmp_path / "b.csv"
    csv.write_text(
        "type,value,tlp,first_seen,last_seen\n"
        f"sha256,{SHA256},red,2022-07-01T00:00:00Z,2022-07-30T00:00:00Z\n",
        encoding="utf-8",
    )
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        assert import_intel(store, bundle).indicators_new == 1
        second = import_intel(store, csv, ImportOptions(source="partner-csv"))
        assert (second.indicators_new, second.indicators_merged) == (0, 1)
        assert import_intel(store, bundle).indicators_merged == 1  # a third time: still one
        (only,) = store.indicators()
        assert only.sources == (str(bundle), "partner-csv")
        assert only.tlp == "TLP:RED"  # the most restrictive marking wins
        assert only.first_seen == datetime(2022, 7, 1, tzinfo=UTC)
        assert only.last_seen == datetime(2022, 7, 30, tzinfo=UTC)
        assert only.id == "indicator--00000001-0000-4000-8000-000000000000"


def test_csv_with_and_without_header_bad_rows_reported(tmp_path: Path) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text(
        "value,type,description\n198.51.100.7,ip,beacon\nnot a thing,,\nevil.example,domain,\n# note,,\n",
        encoding="utf-8",
    )
    bare = tmp_path / "bare.txt"
    bare.write_text("https://evil.example/payload.ps1\nd41d8cd98f00b204e9800998ecf8427e\n", encoding="utf-8")
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, tmp_path)  # a folder of lists
        assert result.indicators_new == 4
        assert [(i.source, i.object) for i in result.issues] == [(str(listed), "line 3")]
        kinds = sorted(a.kind.value for i in store.indicators() for a in i.atoms)
        assert kinds == ["domain", "hash", "ip", "url"]
        beacon = next(i for i in store.indicators() if i.name == "198.51.100.7")
        assert beacon.description == "beacon"


def test_indicator_first_seen_in_year_one_is_exported_with_four_digits(tmp_path: Path) -> None:
    listed = tmp_path / "list.csv"
    listed.write_text("value,type,first_seen\n198.51.100.7,ip,0001-01-01T00:00:00Z\n", encoding="utf-8")
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        assert import_intel(store, listed).indicators_new == 1
        (obj,) = [o for o in store.stix_objects() if o["type"] == "indicator"]
        assert obj["created"] == obj["valid_from"] == "0001-01-01T00:00:00.000Z"  # strftime wrote "1-01-01"


def misp_event(uuid: str, attributes: list[dict[str, Any]], **event: Any) -> dict[str, Any]:
    return {"Event": {"uuid": uuid, "info": "wiper campaign", "Attribute": attributes, **event}}


def test_misp_feed_folder_with_a_broken_event(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    good = "5f1a0000-0000-4000-8000-000000000001"
    broken = "5f1a0000-0000-4000-8000-000000000002"
    missing = "5f1a0000-0000-4000-8000-000000000003"
    (feed / "manifest.json").write_text(json.dumps({good: {"info": "x"}, broken: {}, missing: {}}))
    (feed / f"{broken}.json").write_text("{not json")
    (feed / f"{good}.json").write_text(
        json.dumps(
            misp_event(
                good,
                [
                    {
                        "uuid": "6a000000-0000-4000-8000-000000000001",
                        "type": "sha256",
                        "value": SHA256,
                        "to_ids": True,
                        "timestamp": "1657843200",
                        "category": "Payload delivery",
                    },
                    {
                        "uuid": "6a000000-0000-4000-8000-000000000002",
                        "type": "ip-dst|port",
                        "value": "203.0.113.5|443",
                        "to_ids": True,
                        "timestamp": "1657843200",
                        "Tag": [{"name": "tlp:red"}],
                    },
                    {
                        "uuid": "6a000000-0000-4000-8000-000000000003",
                        "type": "domain",
                        "value": "ok.example",
                        "to_ids": False,
                    },
                    {
                        "uuid": "6a000000-0000-4000-8000-000000000004",
                        "type": "domain",
                        "value": "bad domain!",
                        "to_ids": True,
                    },
                    {  # epoch seconds no calendar holds: the attribute is an issue, not a crash
                        "uuid": "6a000000-0000-4000-8000-000000000007",
                        "type": "domain",
                        "value": "far.example",
                        "to_ids": True,
                        "timestamp": "99999999999999999999",
                    },
                    {
                        "uuid": "6a000000-0000-4000-8000-000000000008",
                        "type": "domain",
                        "value": "early.example",
                        "to_ids": True,
                        "first_seen": "0001-01-01T00:00:00+01:00",
                    },
                    {
                        "uuid": "6a000000-0000-4000-8000-000000000005",
                        "type": "mutex",
                        "value": "Global\\x",
                        "to_ids": True,
                    },
                ],
                Tag=[{"name": "tlp:amber"}],
                Object=[
                    {
                        "Attribute": [
                            {
                                "uuid": "6a000000-0000-4000-8000-000000000006",
                                "type": "url",
                                "value": "http://c2.example/gate",
                                "to_ids": True,
                                "timestamp": "1657843200",
                            },
                        ]
                    }
                ],
            )
        )
    )
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, feed)
        assert result.indicators_new == 3
        assert result.skipped == {
            "MISP attribute not flagged to_ids": 1,
            "MISP attribute type mutex (not matched by casefile)": 1,
        }
        reasons = {i.object: i.reason for i in result.issues}
        far, early = "6a000000-0000-4000-8000-000000000007", "6a000000-0000-4000-8000-000000000008"
        assert set(reasons) == {broken, missing, "6a000000-0000-4000-8000-000000000004", far, early}
        assert "cannot read event file" in reasons[broken]
        assert reasons[far] == "timestamp outside the years 1-9999: '99999999999999999999'"
        assert reasons[early] == "timestamp outside the years 1-9999: '0001-01-01T00:00:00+01:00'"
        by_id = {i.id: i for i in store.indicators()}
        port = by_id["indicator--6a000000-0000-4000-8000-000000000002"]
        assert port.atoms == (Atom(AtomKind.IP, "203.0.113.5"),)
        assert port.tlp == "TLP:RED"
        sha = by_id["indicator--6a000000-0000-4000-8000-000000000001"]
        assert sha.tlp == "TLP:AMBER"
        assert sha.first_seen == datetime(2022, 7, 15, tzinfo=UTC)
        assert sha.pattern == f"[file:hashes.'SHA-256' = '{SHA256}']"


def test_misp_events_of_odd_shapes_are_issues_not_fatal(tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    good, bad = "5f1a0000-0000-4000-8000-0000000000a1", "5f1a0000-0000-4000-8000-0000000000a2"
    (feed / "manifest.json").write_text(json.dumps({good: {}, bad: {}}))
    attr = {"uuid": "6a000000-0000-4000-8000-0000000000a1", "type": "domain", "value": "evil.example",
            "comment": 7, "Tag": "tlp:red", "category": ["x"]}
    (feed / f"{good}.json").write_text(json.dumps(misp_event(
        good, [attr, {"uuid": 5, "type": "domain", "value": "x\ud800.example"}], Tag=5,
        Object=[5, {"Attribute": 5}],
    )))
    (feed / f"{bad}.json").write_text(json.dumps(misp_event(bad, 5)))  # type: ignore[arg-type]
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, feed)
        assert result.indicators_new == 1
        assert sorted(i.object for i in result.issues) == ["5", "Event", "Object[1]"]
        (ind,) = store.indicators()
        assert (ind.description, ind.tlp) == ("wiper campaign", None)  # the event's info; no TLP given


def test_unreadable_targets_are_issues_or_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "junk.json").write_text("[1, 2")
    (tmp_path / "list.json").write_text("[1, 2]")
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, tmp_path)
        assert sorted(i.source for i in result.issues) == [
            str(tmp_path / "junk.json"),
            str(tmp_path / "list.json"),
        ]
        assert store.count() == (0, 0)
        with pytest.raises(IntelError, match="no such file"):
            import_intel(store, tmp_path / "absent.json")


def test_import_from_a_url_on_loopback(tmp_path: Path) -> None:
    import functools
    import http.server
    import threading

    served = tmp_path / "www"
    served.mkdir()
    write_bundle(served / "feed.json", [indicator(7, "[url:value = 'http://c2.example/gate.php']")])
    (served / "list.csv").write_text("value\nevil.example\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        with IntelStore.open(tmp_path / "intel.duckdb") as store:
            assert import_intel(store, f"{base}/feed.json").indicators_new == 1
            assert import_intel(store, f"{base}/list.csv").indicators_new == 1
            missing = import_intel(store, f"{base}/absent.json")
            assert [i.reason[:13] for i in missing.issues] == ["cannot fetch:"]
            assert sorted(a.kind.value for i in store.indicators() for a in i.atoms) == ["domain", "url"]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_misp_feed_inside_a_folder_tree_is_read_as_a_feed(tmp_path: Path) -> None:
    feed = tmp_path / "partners" / "misp"
    feed.mkdir(parents=True)
    event = "5f1a0000-0000-4000-8000-0000000000aa"
    (feed / "manifest.json").write_text(json.dumps({event: {}}))
    (feed / f"{event}.json").write_text(
        json.dumps(misp_event(event, [{"type": "domain", "value": "c2.example", "to_ids": True}]))
    )
    (feed / "hashes.csv").write_text(f"0cc175b9c0f1b6a831c399e269772661,{event}\n")  # md5 of a value
    (tmp_path / "partners" / "list.csv").write_text("value\n203.0.113.1\n")
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, tmp_path)
        assert (result.indicators_new, result.issues) == (2, [])
        assert sorted(a.kind.value for i in store.indicators() for a in i.atoms) == ["domain", "ip"]


def test_cli_import_of_bundle_with_only_unmatchable_comparisons(tmp_path: Path) -> None:
    """Indicators with no matchable atom (file name, mutex) are stored with a note, never a crash.

    Regression: storing an indicator without atoms once ran DuckDB executemany on an empty list.
    """
    from typer.testing import CliRunner

    from casefile.cli import app

    when = "2022-07-15T00:00:00Z"
    by_name = stix2.Indicator(pattern="[file:name = 'evil.exe']", pattern_type="stix", valid_from=when)
    mutex = stix2.Indicator(pattern="[mutex:name = 'Global\\\\wiper']", pattern_type="stix", valid_from=when)
    domain = stix2.Indicator(
        pattern="[domain-name:value = 'c2.example']", pattern_type="stix", valid_from=when
    )
    malware = stix2.Malware(name="ZeroCleare", is_family=True)
    bundle = tmp_path / "partner.json"
    bundle.write_text(stix2.Bundle(by_name, mutex, domain, malware).serialize(), encoding="utf-8")
    store = tmp_path / "intel.duckdb"
    runner = CliRunner()

    first = runner.invoke(app, ["intel", "import", str(bundle), "--store", str(store)])
    assert first.exit_code == 0, first.output
    assert "3 new indicators, 0 merged, 1 other objects, 0 problems" in first.stdout
    again = runner.invoke(app, ["intel", "import", str(bundle), "--store", str(store)])
    assert again.exit_code == 0, again.output
    assert "0 new indicators, 3 merged, 1 other objects, 0 problems" in again.stdout
    with IntelStore.open(store) as intel:
        stored = {i.id: i for i in intel.indicators()}
        assert intel.count() == (3, 1)
    assert stored[by_name.id].atoms == () and stored[by_name.id].note == "not matchable: file:name ="
    assert stored[mutex.id].atoms == () and stored[mutex.id].note == "not matchable: mutex:name ="
    assert stored[domain.id].atoms == (Atom(AtomKind.DOMAIN, "c2.example"),)
    assert stored[domain.id].note is None


def test_misp_hash_attribute_of_the_wrong_length_is_an_issue(tmp_path: Path) -> None:
    event = tmp_path / "event.json"
    event.write_text(json.dumps(misp_event("5f1a0000-0000-4000-8000-0000000000b1", [
        {"uuid": "6a000000-0000-4000-8000-0000000000b1", "type": "md5", "value": "e" * 33},
        {"uuid": "6a000000-0000-4000-8000-0000000000b2", "type": "filename|sha256",
         "value": "a.exe|" + "b" * 40},
        {"uuid": "6a000000-0000-4000-8000-0000000000b3", "type": "sha1", "value": "c" * 40},
    ])))
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, event)
        assert result.indicators_new == 1
        assert sorted((i.object, i.reason.split(":")[0]) for i in result.issues) == [
            ("6a000000-0000-4000-8000-0000000000b1", "not a hex MD5 hash (32 hex digits)"),
            ("6a000000-0000-4000-8000-0000000000b2", "not a hex SHA-256 hash (64 hex digits)"),
        ]


def test_misp_to_ids_that_is_not_a_boolean_is_an_issue_not_a_detection(tmp_path: Path) -> None:
    """`"to_ids": "0"` is truthy: the attribute, marked not for detection, used to be imported as one."""
    event = tmp_path / "event.json"
    attributes = [
        {"uuid": f"6a000000-0000-4000-8000-0000000000c{n}", "type": "ip-dst", "value": f"192.0.2.{n}",
         "to_ids": flag}
        for n, flag in ((1, "0"), (2, 1), (3, False), (4, True))
    ]
    event.write_text(json.dumps(misp_event("5f1a0000-0000-4000-8000-0000000000c1", attributes)))
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        result = import_intel(store, event)
        assert sorted((i.object, i.reason) for i in result.issues) == [
            ("6a000000-0000-4000-8000-0000000000c1", "to_ids '0' is not true or false"),
            ("6a000000-0000-4000-8000-0000000000c2", "to_ids 1 is not true or false"),
        ]
        assert result.skipped == {"MISP attribute not flagged to_ids": 1}
        assert [a.value for i in store.indicators() for a in i.atoms] == ["192.0.2.4"]


def test_issues_quote_huge_patterns_and_values_cut_to_a_readable_line(tmp_path: Path) -> None:
    """A 100k-character pattern or value used to be quoted whole (twice for a bad value in a pattern):
    `intel import` printed warning lines of hundreds of kilobytes."""
    huge = "a" * 100_000
    bundle = write_bundle(
        tmp_path / "huge.json",
        [indicator(1, "[" * 100_000), indicator(2, f"[domain-name:value = '{huge}']")],
    )
    event = tmp_path / "event.json"
    event.write_text(json.dumps(misp_event("5f1a0000-0000-4000-8000-0000000000d1", [
        {"uuid": "6a000000-0000-4000-8000-0000000000d1", "type": "ip-dst|port", "value": huge},
        {"uuid": "6a000000-0000-4000-8000-0000000000d2", "type": "url", "value": huge},
    ])))
    csv_list = tmp_path / "list.csv"
    csv_list.write_text(f"value\n{huge}\n", encoding="utf-8")
    with IntelStore.open(tmp_path / "intel.duckdb") as store:
        issues = [i for target in (bundle, event, csv_list) for i in import_intel(store, target).issues]
    assert len(issues) == 5
    assert all(len(i.reason) < 400 and "(100000 characters)" in i.reason for i in issues), issues
