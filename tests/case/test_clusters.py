"""Activity clusters: what links detections and what keeps them apart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from casefile.case.clusters import cluster_detections
from casefile.models import Detection, DetectionKind, Level, RuleInfo

T0 = datetime(2022, 7, 15, 6, 0, tzinfo=UTC)


def det(
    host: str,
    minutes: float,
    *,
    user: str | None = None,
    image: str | None = None,
    tags: tuple[str, ...] = ("attack.execution", "attack.t1059.003"),
    level: Level = Level.HIGH,
    timed: bool = True,
) -> Detection:
    fields: dict[str, object] = {}
    if user:
        fields["User"] = user
    if image:
        fields["Image"] = image
    rule = RuleInfo("r", "r", level, None, None, tags)
    ts = T0 + timedelta(minutes=minutes) if timed else None
    return Detection(rule, DetectionKind.SIGMA, ts, host, "c", 1, 1, "f", {}, fields)


def ids(*dets: Detection) -> list[tuple[str, Detection]]:
    return [(f"d{i}", d) for i, d in enumerate(dets)]


def test_same_host_close_in_time_is_one_cluster_far_apart_is_two() -> None:
    clusters = cluster_detections(ids(det("H1", 0), det("H1", 50), det("H1", 100), det("H1", 400)))
    assert [c.detection_ids for c in clusters] == [("d0", "d1", "d2"), ("d3",)]
    assert clusters[0].first_seen == T0 and clusters[0].last_seen == T0 + timedelta(minutes=100)


def test_shared_account_links_hosts_but_generic_accounts_do_not() -> None:
    linked = cluster_detections(ids(det("WEB", 0, user="CORP\\svc_sp"), det("DC", 30, user="svc_sp")))
    assert len(linked) == 1 and linked[0].hosts == ("DC", "WEB")
    apart = cluster_detections(ids(det("WEB", 0, user="NT AUTHORITY\\SYSTEM"), det("DC", 30, user="SYSTEM")))
    assert len(apart) == 2


def test_shared_tool_links_but_cmd_does_not() -> None:
    tool = cluster_detections(
        ids(det("A", 0, image="C:\\x\\PsExec64.exe"), det("B", 10, image="D:\\PSEXEC64.EXE"))
    )
    assert len(tool) == 1
    cmd = cluster_detections(
        ids(det("A", 0, image="C:\\Windows\\cmd.exe"), det("B", 10, image="C:\\Windows\\cmd.exe"))
    )
    assert len(cmd) == 2


def test_cluster_summary_fields_and_stable_ids() -> None:
    dets = ids(
        det(
            "H1",
            0,
            tags=("attack.credential-access", "attack.t1003.001", "attack.s0002"),
            level=Level.CRITICAL,
        ),
        det("H1", 5),
        det("H1", 0, timed=False),
    )
    (c,) = cluster_detections(dets)
    assert c.techniques == ("T1059.003", "T1003.001") and c.software == ("S0002",)  # most frequent first
    assert c.tactics == ("execution", "credential-access") and c.max_level is Level.CRITICAL
    (again,) = cluster_detections(list(reversed(dets)))
    assert again.id == c.id and c.id.startswith("C-")


def test_window_is_a_parameter() -> None:
    dets = ids(det("H1", 0), det("H1", 100))
    assert len(cluster_detections(dets, window=timedelta(minutes=30))) == 2
