"""A tiny ATT&CK-shaped STIX bundle written by hand, as 2.0 or 2.1, plain or gzip."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

ATTACK = "mitre-attack"


def _ext(aid: str) -> list[dict[str, str]]:
    return [{"source_name": ATTACK, "external_id": aid}]


def _technique(n: int, name: str, phase: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "attack-pattern",
        "id": f"attack-pattern--{n:08d}-0000-0000-0000-000000000000",
        "name": name,
        "created": "2018-01-01T00:00:00.000Z",
        "modified": "2024-05-01T00:00:00.000Z",
        "external_references": _ext(f"T{1000 + n}"),
        "kill_chain_phases": [{"kill_chain_name": "mitre-attack", "phase_name": phase}],
        **extra,
    }


def _sid(kind: str, n: int) -> str:
    return f"{kind}--{n:08d}-1111-1111-1111-111111111111"


def _rel(n: int, src: str, dst: str, created: str, reports: list[str], rtype: str = "uses") -> dict[str, Any]:
    return {
        "type": "relationship",
        "id": f"relationship--{n:08d}-2222-2222-2222-222222222222",
        "relationship_type": rtype,
        "source_ref": src,
        "target_ref": dst,
        "created": created,
        "external_references": [{"source_name": r, "url": f"https://example.org/{r}"} for r in reports],
    }


def objects() -> list[dict[str, Any]]:
    tactics = [
        {
            "type": "x-mitre-tactic",
            "id": _sid("x-mitre-tactic", i),
            "name": name,
            "x_mitre_shortname": short,
            "external_references": _ext(f"TA000{i}"),
        }
        for i, (name, short) in enumerate(
            [("Initial Access", "initial-access"), ("Execution", "execution")], 1
        )
    ]
    matrix = {
        "type": "x-mitre-matrix",
        "id": _sid("x-mitre-matrix", 1),
        "name": "Enterprise",
        "tactic_refs": [tactics[0]["id"], tactics[1]["id"]],
    }
    techniques: list[dict[str, Any]] = [
        _technique(1, "Common", "execution"),  # T1001, used by most groups
        _technique(2, "Second", "initial-access"),  # T1002
        _technique(3, "Rare", "execution"),  # T1003
        _technique(4, "Revoked one", "execution", revoked=True),  # T1004
        _technique(5, "Unused", "execution"),  # T1005: nobody uses it
        _technique(6, "Deprecated one", "execution", x_mitre_deprecated=True),  # T1006
    ]
    groups: list[dict[str, Any]] = [
        {
            "type": "intrusion-set",
            "id": _sid("intrusion-set", i),
            "name": name,
            "aliases": [name, *aliases],
            "created": "2017-01-01T00:00:00.000Z",
            "external_references": _ext(f"G000{i}"),
        }
        for i, (name, aliases) in enumerate(
            [("Alpha", ["Alpha Kitten"]), ("Bravo", []), ("Charlie", ["Shared"]), ("Delta", ["Shared"])], 1
        )
    ]
    tool: dict[str, Any] = {
        "type": "tool",
        "id": _sid("tool", 1),
        "name": "RareTool",
        "x_mitre_aliases": ["RareTool", "rt.exe"],
        "external_references": _ext("S0001"),
    }
    campaign: dict[str, Any] = {
        "type": "campaign",
        "id": _sid("campaign", 1),
        "name": "Op One",
        "created": "2023-03-01T00:00:00Z",
        "first_seen": "2022-01-01T00:00:00Z",
        "external_references": _ext("C0001"),
    }
    g = [x["id"] for x in groups]
    t = [x["id"] for x in techniques]
    rels = [
        _rel(1, g[0], tool["id"], "2019-01-01T00:00:00Z", ["R-a1", "R-a2"]),
        _rel(2, g[0], t[1], "2019-01-01T00:00:00Z", ["R-a1"]),
        _rel(3, g[1], t[0], "2019-01-01T00:00:00Z", ["R-b1", "R-b2"]),
        _rel(4, g[1], t[1], "2019-01-01T00:00:00Z", ["R-b1"]),
        _rel(5, g[2], t[0], "2019-01-01T00:00:00Z", ["R-c1"]),
        _rel(6, g[3], t[0], "2019-01-01T00:00:00Z", ["R-d1"]),
        _rel(7, g[3], t[2], "2024-06-01T00:00:00Z", ["R-d2"]),  # after a 2024 cut
        _rel(8, g[2], t[3], "2019-01-01T00:00:00Z", ["R-c1"]),  # to a revoked technique: ignored
        _rel(9, campaign["id"], t[2], "2023-03-01T00:00:00Z", ["R-op"]),
        _rel(10, campaign["id"], g[1], "2023-03-01T00:00:00Z", ["R-op"], "attributed-to"),
    ]
    return [matrix, *tactics, *techniques, *groups, tool, campaign, *rels]


def write_bundle(path: Path, *, spec: str = "2.0", gz: bool = False) -> Path:
    objs = objects()
    bundle: dict[str, Any] = {"type": "bundle", "id": "bundle--00000000-0000-0000-0000-000000000001"}
    if spec == "2.0":
        bundle["spec_version"] = "2.0"
    else:
        for o in objs:
            o["spec_version"] = "2.1"
        objs.append(
            {
                "type": "x-mitre-collection",
                "id": _sid("x-mitre-collection", 1),
                "spec_version": "2.1",
                "name": "Enterprise ATT&CK",
                "x_mitre_version": "99.1",
            }
        )
    bundle["objects"] = objs
    data = json.dumps(bundle).encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path
