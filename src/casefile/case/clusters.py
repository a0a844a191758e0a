"""Activity clusters: detections linked by shared hosts, accounts, processes and tools close in time.

Two detections are linked when they are within `window` of each other and share a host, a (non-generic)
account or a (non-generic) tool/process image; a cluster is a connected component of that graph.
Detections without a timestamp link only by shared host.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from casefile.models import Detection, Level

#: Accounts every Windows host has: sharing them says nothing about shared activity.
GENERIC_ACCOUNTS = frozenset(
    {
        "system",
        "local service",
        "network service",
        "localsystem",
        "anonymous logon",
        "-",
        "",
        "nt authority\\system",
        "nt authority\\local service",
        "nt authority\\network service",
        "dwm-1",
        "umfd-0",
        "umfd-1",
    }
)
#: Processes so common that sharing them links nothing (the command line or rule still differs).
GENERIC_PROCESSES = frozenset(
    {
        "cmd.exe",
        "powershell.exe",
        "svchost.exe",
        "services.exe",
        "lsass.exe",
        "wmiprvse.exe",
        "rundll32.exe",
        "conhost.exe",
        "explorer.exe",
        "system",
        "-",
        "",
    }
)
ACCOUNT_FIELDS = ("TargetUserName", "SubjectUserName", "User", "UserName", "AccountName", "user.name")
PROCESS_FIELDS = ("Image", "NewProcessName", "ProcessName", "process.executable", "SourceImage")
COMMAND_FIELDS = (
    "CommandLine",
    "ProcessCommandLine",
    "process.command_line",
    "ScriptBlockText",
    "ImagePath",
    "ServiceFileName",
)
PARENT_FIELDS = ("ParentImage", "ParentProcessName", "process.parent.executable")


def _first(fields: Mapping[str, Any], names: Sequence[str]) -> str | None:
    for n in names:
        v = fields.get(n)
        if v not in (None, "", "-"):
            return str(v)
    return None


def account_of(det: Detection) -> str | None:
    """The account a detection is about (target user first: that is who the attacker acted as)."""
    fields = det.fields
    user = _first(fields, ACCOUNT_FIELDS)
    if user is None:
        return None
    domain = fields.get("TargetDomainName") or fields.get("SubjectDomainName")
    if domain and "\\" not in user and fields.get("TargetUserName") == user:
        return f"{domain}\\{user}"
    return user


def process_of(det: Detection) -> str | None:
    return _first(det.fields, PROCESS_FIELDS)


def command_of(det: Detection) -> str | None:
    return _first(det.fields, COMMAND_FIELDS)


def parent_of(det: Detection) -> str | None:
    return _first(det.fields, PARENT_FIELDS)


def _basename(path: str) -> str:
    return path.replace("/", "\\").rsplit("\\", 1)[-1].lower()


@dataclass(frozen=True, slots=True)
class Cluster:
    """One activity cluster: the detections in it and what they have in common."""

    id: str
    detection_ids: tuple[str, ...]
    hosts: tuple[str, ...]
    accounts: tuple[str, ...]
    processes: tuple[str, ...]
    techniques: tuple[str, ...]
    tactics: tuple[str, ...]
    software: tuple[str, ...]
    first_seen: datetime | None
    last_seen: datetime | None
    max_level: Level

    @property
    def label(self) -> str:
        hosts = ", ".join(self.hosts[:3]) + ("…" if len(self.hosts) > 3 else "")
        return f"{self.id} ({len(self.detection_ids)} detections on {hosts or 'unknown host'})"


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _keys(det: Detection) -> list[str]:
    keys: list[str] = []
    if det.computer:
        keys.append("host:" + det.computer.lower())
    acct = account_of(det)
    if acct and acct.lower() not in GENERIC_ACCOUNTS and not acct.endswith("$"):
        keys.append("account:" + acct.lower().rsplit("\\", 1)[-1])
    proc = process_of(det)
    if proc and _basename(proc) not in GENERIC_PROCESSES:
        keys.append("process:" + _basename(proc))
    keys.extend("software:" + s for s in det.rule.software)
    return keys


def cluster_detections(
    detections: Sequence[tuple[str, Detection]], *, window: timedelta = timedelta(hours=2)
) -> list[Cluster]:
    """Group (id, detection) pairs into clusters, ordered by first activity; ids are stable hashes."""
    n = len(detections)
    uf = _UnionFind(n)
    # Per key, walk its detections in time order and link neighbours closer than `window`:
    # linking consecutive ones is enough for connected components.
    by_key: dict[str, list[int]] = {}
    for i, (_, det) in enumerate(detections):
        for k in _keys(det):
            by_key.setdefault(k, []).append(i)
    for key, idx in by_key.items():
        timed = sorted(
            ((ts, i) for i in idx if (ts := detections[i][1].timestamp) is not None), key=lambda p: p
        )
        for (ta, a), (tb, b) in itertools.pairwise(timed):
            if tb - ta <= window:
                uf.union(a, b)
        if key.startswith("host:"):
            # Untimed detections can only be placed by host: tie them to the host's first activity.
            untimed = [i for i in idx if detections[i][1].timestamp is None]
            anchors = untimed[:1] + [i for _, i in timed[:1]]
            for i in untimed[1:] + anchors[1:]:
                uf.union(anchors[0], i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(uf.find(i), []).append(i)
    clusters = [_make_cluster([detections[i] for i in members]) for members in groups.values()]
    clusters.sort(key=lambda c: (c.first_seen is None, c.first_seen or datetime.min, c.id))
    return clusters


def _ranked(values: list[str]) -> tuple[str, ...]:
    counts = Counter(values)
    return tuple(v for v, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _make_cluster(members: list[tuple[str, Detection]]) -> Cluster:
    ids = tuple(sorted(i for i, _ in members))
    dets = [d for _, d in members]
    stamps = [d.timestamp for d in dets if d.timestamp is not None]
    return Cluster(
        id="C-" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:10],
        detection_ids=ids,
        hosts=_ranked([d.computer for d in dets if d.computer]),
        accounts=_ranked([a for d in dets if (a := account_of(d))]),
        processes=_ranked([p for d in dets if (p := process_of(d))]),
        techniques=_ranked([t for d in dets for t in d.rule.techniques]),
        tactics=_ranked([t for d in dets for t in d.rule.tactics]),
        software=_ranked([s for d in dets for s in d.rule.software]),
        first_seen=min(stamps) if stamps else None,
        last_seen=max(stamps) if stamps else None,
        max_level=max((d.rule.level for d in dets), default=Level.INFORMATIONAL),
    )
