"""report.html opened in headless Chromium: renders offline, no console errors, evidence stays inert."""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from casefile.case.store import Case
from casefile.report import write_reports

from .conftest import XSS_COMMAND

CHROMIUM = "/usr/bin/chromium"
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason="Debian chromium not installed (scripts/setup.sh)"
    ),
]
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def png_info(data: bytes) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixel data) of a PNG, with the stdlib only."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8 : pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def opened(browser: Any, sample_case: Case, tmp_path: Path) -> Iterator[tuple[Any, list[str], list[str]]]:
    (html,) = write_reports(sample_case, tmp_path / "out", names=["report.html"])
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    problems: list[str] = []
    requests: list[str] = []
    page.on(
        "console",
        lambda m: problems.append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None,
    )
    page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))

    def on_dialog(dialog: Any) -> None:  # an alert() from the evidence would land here
        problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    page.on("request", lambda r: requests.append(r.url))
    page.goto(html.as_uri())
    page.wait_for_selector("#det-table tbody tr")
    yield page, problems, requests
    page.close()


def test_report_renders_offline_without_errors(
    opened: tuple[Any, list[str], list[str]], tmp_path: Path
) -> None:
    page, problems, requests = opened
    assert problems == []
    assert all(u.startswith("file://") for u in requests), requests  # no CDN, nothing fetched
    for section in (
        "#timeline",
        "#matrix",
        "#attribution",
        "#clusters",
        "#detections",
        "#evidence",
        "#warnings",
    ):
        assert page.locator(section).is_visible(), section
    # Real charts: one dot per timed detection on two host lanes, coloured matrix cells, probability bars.
    assert page.locator("#timeline svg circle").count() == 5
    assert page.locator("#timeline svg text.host").all_text_contents() == ["DC01 (2)", "WEB01 (3)"]
    assert page.locator("#matrix g.cell.seen").count() == 4
    assert page.locator("#attribution svg rect.bar").count() == 3 * 3  # case + 2 clusters, 2 groups + unknown
    shot = page.screenshot(full_page=True)
    width, height, distinct = png_info(shot)
    assert width == 1400 and height > 1500 and distinct > 40
    chart = page.locator("#timeline svg").screenshot()
    cw, ch, cdistinct = png_info(chart)
    assert cw >= 1000 and ch >= 80 and cdistinct > 10
    (tmp_path / "report.png").write_bytes(shot)


def test_detections_table_sorts_and_filters(opened: tuple[Any, list[str], list[str]]) -> None:
    page, problems, _ = opened
    rows = page.locator("#det-table tbody tr")
    assert rows.count() == 5
    page.click("#det-table th[data-key='level']")  # ascending: high before critical
    assert rows.nth(0).locator("td").nth(2).text_content() == "high"
    page.click("#det-table th[data-key='level']")
    assert rows.nth(0).locator("td").nth(2).text_content() == "critical"
    page.fill("#filter", "psexec")
    assert rows.count() == 1 and "DC01" in (rows.nth(0).text_content() or "")
    page.fill("#filter", "")
    page.select_option("#level", "critical")
    assert rows.count() == 2
    assert "2 of 5" in (page.locator("#shown").text_content() or "")
    assert problems == []


def test_hostile_evidence_stays_inert_and_literal(opened: tuple[Any, list[str], list[str]]) -> None:
    page, problems, _ = opened
    assert page.evaluate("window.__pwned") is None
    assert (
        page.locator(
            "#det-table img, #warnings img, #attribution i, #attribution b:has-text('OilRig')"
        ).count()
        == 0
    )
    commands = [c for c in page.locator("#det-table td.cmd").all_text_contents() if "pwned" in c]
    assert commands == [XSS_COMMAND] * 3
    assert page.locator("#warnings td", has_text="<script>window.__pwned=3</script>").count() == 1
    assert page.locator("#attribution summary", has_text="OilRig <i>").count() == 3
    # The timeline tooltip carries the command line as text, not markup.
    assert XSS_COMMAND[:60] in (page.locator("#timeline svg circle title").first.text_content() or "")
    assert problems == []


def test_demo_report_keeps_the_attackers_markup_inert(browser: Any, tmp_path: Path) -> None:
    from casefile.case.investigate import investigate

    repo = Path(__file__).resolve().parents[2]
    result = investigate([repo / "demo" / "evidence"], tmp_path / "case", rules=[repo / "demo" / "rules"])
    html = next(p for p in result.reports if p.name == "report.html")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("dialog", lambda d: problems.append("dialog " + d.message))
    page.goto(html.as_uri())
    page.wait_for_selector("#det-table tbody tr")
    assert page.evaluate("window.__casefile_xss") is None
    assert problems == []
    page.fill("#filter", "onerror")
    cell = page.locator("#det-table td.cmd").first.text_content() or ""
    assert (
        '"><img src=x onerror="window.__casefile_xss=1"><script>window.__casefile_xss=1;alert(1)</script>'
        in cell
    )
    assert page.locator("img").count() == 0
    assert page.locator("#timeline svg circle").count() == 17
    assert page.locator("#warnings td", has_text="invalid JSON").count() == 1
    page.close()
