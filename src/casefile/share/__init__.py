"""casefile.share: partners' intel in (STIX, MISP, CSV), indicator matching, findings out.

store = IntelStore.open(default_store_path(Settings.from_env()))
result = import_intel(store, "feeds/partner-misp/")        # ImportResult: counts + per-object issues
detections = match_indicators(con, store.indicators())    # DuckDB joins over the events table
export_case("cases/tirana", "misp")                         # MISP feed of the case's STIX bundle
"""

from __future__ import annotations

from pathlib import Path

from casefile.config import Settings
from casefile.share.export import EXPORTERS, bundle_to_misp_event, export_case, write_misp_feed, write_stix
from casefile.share.importers import READERS, ImportOptions, import_intel
from casefile.share.matching import FieldMap, match_case, match_indicators
from casefile.share.models import Atom, AtomKind, ImportResult, Indicator, IndicatorInput, IntelIssue
from casefile.share.patterns import parse_pattern
from casefile.share.store import IntelStore


def default_store_path(settings: Settings) -> Path:
    """Where the intel store lives unless told otherwise: <data dir>/intel.duckdb."""
    return settings.data_dir / "intel.duckdb"


__all__ = [
    "EXPORTERS",
    "READERS",
    "Atom",
    "AtomKind",
    "FieldMap",
    "ImportOptions",
    "ImportResult",
    "Indicator",
    "IndicatorInput",
    "IntelIssue",
    "IntelStore",
    "bundle_to_misp_event",
    "default_store_path",
    "export_case",
    "import_intel",
    "match_case",
    "match_indicators",
    "parse_pattern",
    "write_misp_feed",
    "write_stix",
]
