"""Case outputs: report.html, the ATT&CK Navigator layer, the STIX bundle and summary.json.

Each output is a registered writer (name -> function of the case returning the file's text), so a new
output is one function and one `REPORTS.register` line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from casefile.case.store import Case
from casefile.registry import Registry
from casefile.report.html import render_html
from casefile.report.layer import navigator_layer
from casefile.report.stix import case_bundle
from casefile.report.summary import case_summary

ReportWriter = Callable[[Case], str]
REPORTS: Registry[ReportWriter] = Registry("report")


def _json(value: object) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n"


REPORTS.register("report.html", render_html)
REPORTS.register("navigator-layer.json", lambda case: _json(navigator_layer(case)))
REPORTS.register("bundle.json", lambda case: _json(case_bundle(case)))
REPORTS.register("summary.json", lambda case: _json(case_summary(case)))


def write_reports(
    case: Case, out_dir: Path | None = None, *, names: Sequence[str] | None = None
) -> list[Path]:
    """Write the named outputs (all by default) into `out_dir` (the case folder by default)."""
    target = out_dir or case.root
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or REPORTS.names():
        text = REPORTS.get(name)(case)
        path = target / name
        tmp = path.with_name(path.name + ".tmp")
        # A lone surrogate from the evidence (a JSON escape such as "\ud800") has no UTF-8 form: it is
        # written as that escape, which in the JSON outputs reads back as the same string.
        tmp.write_text(text, encoding="utf-8", errors="backslashreplace")
        tmp.replace(path)  # never leave a half-written report behind
        written.append(path)
    return written


__all__ = ["REPORTS", "case_bundle", "case_summary", "navigator_layer", "render_html", "write_reports"]
