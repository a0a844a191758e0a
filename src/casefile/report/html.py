"""report.html: one self-contained, offline page (inline SVG charts, inline CSS/JS, no CDN).

Everything from the evidence reaches the page either through Jinja2 autoescaping or inside one
`<script type="application/json">` block whose `<`, `>` and `&` are \\u-escaped, read by the page
script with `textContent` + `JSON.parse` and rendered with `textContent` only.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from casefile.case.clusters import Cluster
from casefile.case.store import Case, TechniqueInfo
from casefile.case.timeline import TimelineEntry, build_timeline, technique_tactics
from casefile.models import utc_text

#: Tactic order of the Enterprise matrix, used when the case has no knowledge base to give it.
DEFAULT_TACTICS: tuple[tuple[str, str], ...] = (
    ("reconnaissance", "Reconnaissance"),
    ("resource-development", "Resource Development"),
    ("initial-access", "Initial Access"),
    ("execution", "Execution"),
    ("persistence", "Persistence"),
    ("privilege-escalation", "Privilege Escalation"),
    ("defense-evasion", "Defense Evasion"),
    ("credential-access", "Credential Access"),
    ("discovery", "Discovery"),
    ("lateral-movement", "Lateral Movement"),
    ("collection", "Collection"),
    ("command-and-control", "Command and Control"),
    ("exfiltration", "Exfiltration"),
    ("impact", "Impact"),
)
#: Individual dots per few-pixel bucket of one host lane before the rest are drawn as one dot.
PER_BUCKET = 5
LEVEL_COLORS = {
    "informational": "#7a8899",
    "low": "#3b82c4",
    "medium": "#e0a100",
    "high": "#e0611a",
    "critical": "#c0122c",
}


_LEVEL_ORDER = ("informational", "low", "medium", "high", "critical")


def json_for_script(value: Any) -> Markup:
    """JSON that is safe inside a <script> element: no `<`, `>` or `&` survive unescaped."""
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return Markup(text)  # every markup-significant character was escaped above


@dataclass(frozen=True, slots=True)
class Dot:
    x: float
    y: float
    color: str
    title: str
    r: float = 4.5


@dataclass(frozen=True, slots=True)
class HostLane:
    host: str
    y: float
    count: int


@dataclass(frozen=True, slots=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True, slots=True)
class TimelineChart:
    width: int
    height: int
    left: int
    lanes: list[HostLane]
    dots: list[Dot]
    ticks: list[Tick]
    untimed: int


def _timeline_chart(entries: list[TimelineEntry]) -> TimelineChart:
    timed = [e for e in entries if e.timestamp is not None]
    hosts = sorted({e.host or "unknown" for e in entries})
    lane_h, top, left, width = 34, 24, 230, 1100
    height = top + lane_h * max(len(hosts), 1) + 30
    lanes = [
        HostLane(h, top + i * lane_h + lane_h / 2, sum(1 for e in entries if (e.host or "unknown") == h))
        for i, h in enumerate(hosts)
    ]
    lane_y = {lane.host: lane.y for lane in lanes}
    dots: list[Dot] = []
    ticks: list[Tick] = []
    if timed:
        t0 = min(e.timestamp for e in timed if e.timestamp)
        t1 = max(e.timestamp for e in timed if e.timestamp)
        span = max((t1 - t0).total_seconds(), 1.0)
        plot_w = width - left - 70

        def xpos(ts: datetime) -> float:
            return round(left + plot_w * (ts - t0).total_seconds() / span, 1)

        # Hits closer than a few pixels share a bucket: up to PER_BUCKET dots stacked vertically,
        # then one larger dot standing for the rest, so a busy host stays a readable, bounded chart.
        buckets: dict[tuple[str, int], list[tuple[float, TimelineEntry]]] = defaultdict(list)
        for e in timed:
            assert e.timestamp is not None
            x = xpos(e.timestamp)
            buckets[(e.host or "unknown", round(x / 4))].append((x, e))
        for (host, _), items in buckets.items():
            shown = items if len(items) <= PER_BUCKET else items[: PER_BUCKET - 1]
            for j, (x, e) in enumerate(shown):
                assert e.timestamp is not None
                title = f"{e.timestamp.isoformat()} {e.rule_title} [{e.level}]"
                if e.command_line:
                    title += f" {e.command_line[:300]}"
                dots.append(Dot(x, lane_y[host] + (j - 2) * 4, LEVEL_COLORS.get(e.level, "#555"), title))
            rest = items[len(shown) :]
            if rest:
                worst = max(rest, key=lambda item: _LEVEL_ORDER.index(item[1].level))[1]
                names = ", ".join(sorted({e.rule_title for _, e in rest})[:5])
                title = f"{len(rest)} more detections here: {names}"
                dots.append(
                    Dot(rest[0][0], lane_y[host] + 8, LEVEL_COLORS.get(worst.level, "#555"), title, 7.0)
                )
        for i in range(6):
            ts = t0 + timedelta(seconds=span * i / 5)
            fmt = "%Y-%m-%d %H:%M" if span > 120 else "%H:%M:%S"
            ticks.append(Tick(xpos(ts), ts.strftime(fmt)))
    return TimelineChart(width, height, left, lanes, dots, ticks, len(entries) - len(timed))


@dataclass(frozen=True, slots=True)
class MatrixCell:
    id: str
    name: str
    count: int
    color: str
    y: float

    @property
    def dark(self) -> bool:
        """Whether the fill is dark enough to need light text."""
        return int(self.color[3:5], 16) < 120


@dataclass(frozen=True, slots=True)
class MatrixColumn:
    shortname: str
    name: str
    x: float
    cells: list[MatrixCell]


@dataclass(frozen=True, slots=True)
class MatrixChart:
    width: int
    height: int
    col_w: int
    cell_h: int
    columns: list[MatrixColumn]
    max_count: int


def _heat(count: int, top: int) -> str:
    if count == 0:
        return "#eef1f4"
    # Log scale: one noisy technique (hundreds of hits) must not wash out the ones seen a few times.
    frac = math.log1p(count) / math.log1p(max(top, 1))
    # From light yellow to deep red as the share of detections grows.
    r = 255 - int(63 * frac)
    g = 226 - int(208 * frac)
    b = 140 - int(96 * frac)
    return f"#{r:02x}{g:02x}{b:02x}"


def _matrix_chart(
    entries: list[TimelineEntry], catalog: dict[str, TechniqueInfo], tactics: list[tuple[str, str]]
) -> MatrixChart:
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for e in entries:
        for tid in e.techniques:
            for tactic in technique_tactics(tid, e.tactics, catalog):
                counts[(tactic, tid.split(".")[0])] += 1
    order = tactics or list(DEFAULT_TACTICS)
    col_w, cell_h, head = 150, 18, 40
    top = max(counts.values(), default=1)
    columns: list[MatrixColumn] = []
    tallest = 0
    for i, (short, name) in enumerate(order):
        ids = {tid for (tac, tid) in counts if tac == short}
        ids |= {t.id for t in catalog.values() if short in t.tactics and not t.is_subtechnique}
        ranked = sorted(ids, key=lambda t: (-counts.get((short, t), 0), (catalog.get(t) or _unknown(t)).name))
        cells = [
            MatrixCell(
                t,
                (catalog.get(t) or _unknown(t)).name,
                counts.get((short, t), 0),
                _heat(counts.get((short, t), 0), top),
                head + j * cell_h,
            )
            for j, t in enumerate(ranked)
        ]
        tallest = max(tallest, len(cells))
        columns.append(MatrixColumn(short, name, i * col_w, cells))
    return MatrixChart(len(order) * col_w, head + max(tallest, 1) * cell_h + 4, col_w, cell_h, columns, top)


def _unknown(tid: str) -> TechniqueInfo:
    return TechniqueInfo(tid, "", (), "." in tid)


@dataclass(frozen=True, slots=True)
class Bar:
    label: str
    probability: float
    width: float
    y: float


@dataclass(frozen=True, slots=True)
class AttributionView:
    scope: str
    title: str
    cluster: Cluster | None
    bars: list[Bar]
    groups: list[Any]
    unknown: float
    sponsors: list[Any]
    unprofiled: list[str]


#: Clusters whose attribution the page details (largest first); the rest are in bundle/summary.json.
MAX_ATTRIBUTED_CLUSTERS = 12


def _attribution_views(case: Case) -> tuple[list[AttributionView], int]:
    """Views for the whole case and the largest clusters, and how many clusters were left out."""
    views = []
    attributions = case.attributions()
    clusters = {c.id: c for c in case.clusters()}
    ranked = sorted(
        (c for c in clusters.values() if c.id in attributions), key=lambda c: (-len(c.detection_ids), c.id)
    )
    shown = [c.id for c in ranked[:MAX_ATTRIBUTED_CLUSTERS]]
    for scope in ["case", *shown]:
        a = attributions.get(scope)
        if a is None:
            continue
        groups = list(a.groups[:5])
        rows = [(f"{g.name} ({g.group_id})", g.probability) for g in groups] + [
            ("no known group", a.unknown_probability)
        ]
        bars = [Bar(lbl, p, round(520 * p, 1), 10 + i * 26) for i, (lbl, p) in enumerate(rows)]
        cl = clusters.get(scope)
        title = "Whole case" if scope == "case" else f"Cluster {scope}"
        views.append(
            AttributionView(
                scope,
                title,
                cl,
                bars,
                groups,
                a.unknown_probability,
                list(a.sponsors[:5]),
                list(a.unprofiled_techniques),
            )
        )
    return views, len(ranked) - len(shown)


def _env() -> Environment:
    return Environment(
        loader=PackageLoader("casefile.report", "templates"),
        autoescape=select_autoescape(
            enabled_extensions=("html", "j2"), default_for_string=True, default=True
        ),
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _asset(name: str) -> Markup:
    """Our own CSS/JS, inlined so the report works offline (never evidence text)."""
    text = (resources.files("casefile.report") / "templates" / name).read_text(encoding="utf-8")
    return Markup(text)  # a file shipped in the package, not data


def render_html(case: Case) -> str:
    """The report page for a case."""
    entries = build_timeline(case)
    catalog = case.techniques()
    evidence = case.evidence_files()
    warnings = case.warnings()
    clusters = case.clusters()
    table = [
        {
            "id": e.detection_id,
            "time": utc_text(e.timestamp) if e.timestamp else "",
            "host": e.host or "",
            "account": e.account or "",
            "process": e.process or "",
            "command": e.command_line or "",
            "tactics": ", ".join(e.tactics),
            "techniques": ", ".join(e.techniques),
            "rule": e.rule_title,
            "level": e.level,
            "kind": e.kind,
            "cluster": e.cluster or "",
            "file": e.file or "",
            "record": e.record_id,
        }
        for e in entries
    ]
    levels = Counter(e.level for e in entries)
    js = _asset("report.js")
    attribution_views, left_out = _attribution_views(case)
    tmpl = _env().get_template("report.html.j2")
    return tmpl.render(
        case_name=case.name,
        case_id=case.case_id,
        created=utc_text(case.created_at),
        attack_version=case.attack_version,
        n_events=case.event_count(),
        n_detections=len(entries),
        levels=[(lvl, levels.get(lvl, 0), c) for lvl, c in LEVEL_COLORS.items()],
        hosts=sorted({e.host for e in entries if e.host}),
        timeline=_timeline_chart(entries),
        matrix=_matrix_chart(entries, catalog, case.tactics()),
        attributions=attribution_views,
        attributions_left_out=left_out,
        clusters=clusters,
        evidence=evidence,
        warnings=warnings,
        notes=case.notes(),
        detections_json=json_for_script(table),
        css=_asset("report.css"),
        js=js,
        script_hash="sha256-" + base64.b64encode(hashlib.sha256(str(js).encode()).digest()).decode(),
        level_colors=LEVEL_COLORS,
    )
