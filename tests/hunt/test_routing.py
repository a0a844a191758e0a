"""The shipped log-source table agrees with SigmaHQ's tests/thor.yml (what its checker uses)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
import yaml

from casefile.errors import ConfigError
from casefile.hunt.routing import LogSourceTable, UnsupportedLogSource, default_table


def test_categories_match_thor(shared_data: Path) -> None:
    thor = yaml.safe_load((shared_data / "sigma" / "tests" / "thor.yml").read_text(encoding="utf-8"))
    services: dict[str, list[str]] = {}
    Key = tuple[tuple[str, ...], int, tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]
    expected: dict[str, set[Key]] = defaultdict(set)
    for entry in thor["logsources"].values():
        if entry.get("service") and "sources" in entry:
            services[entry["service"]] = [s.split(":", 1)[1] for s in entry["sources"]]
    for entry in thor["logsources"].values():
        if not entry.get("category") or "rewrite" not in entry:
            continue
        conds = dict(entry["conditions"])
        ids = conds.pop("EventID")
        channels = tuple(services[entry["rewrite"]["service"]])
        renames = tuple(sorted((entry.get("fieldmappings") or {}).items()))
        extra = tuple(sorted((k, str(v)) for k, v in conds.items()))
        for i in ids if isinstance(ids, list) else [ids]:
            expected[entry["category"]].add((channels, i, renames, extra))
    table = default_table()
    for category, want in expected.items():
        got: set[Key] = set()
        for s in table.resolve("windows", category, None):
            renames = tuple(sorted(s.fields.items()))
            # a source condition with several values stands for several thor entries (OR)
            variants: list[tuple[tuple[str, str], ...]] = [()]
            for name, values in s.conditions:
                variants = [(*v, (name, value)) for v in variants for value in values]
            got |= {(s.channels, i, renames, tuple(sorted(v))) for i in s.event_ids for v in variants}
        assert got == want, category


def test_services_and_unsupported() -> None:
    table = default_table()
    (sec,) = table.resolve("windows", None, "security")
    assert sec.channels == ("Security",) and sec.event_ids == ()
    (anywhere,) = table.resolve("windows", None, None)
    assert anywhere.channels == () and anywhere.event_ids == ()
    with pytest.raises(UnsupportedLogSource, match="product 'linux'"):
        table.resolve("linux", "process_creation", None)
    with pytest.raises(UnsupportedLogSource, match="category 'proxy'"):
        table.resolve(None, "proxy", None)
    with pytest.raises(UnsupportedLogSource, match="service 'nosuch'"):
        table.resolve("windows", None, "nosuch")


def test_malformed_table_names_its_origin() -> None:
    bad = {"products": {"windows": {"categories": {"x": [{"name": "a", "service": "nosuch"}]}}}}
    with pytest.raises(ConfigError, match=r"my\.yaml: category 'x' names unknown service 'nosuch'"):
        LogSourceTable.from_mapping(bad, "my.yaml")
