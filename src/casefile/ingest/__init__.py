"""casefile.ingest: evidence files (EVTX, JSON in its common shapes, zip/gz) to normalised Events.

    iter_discover(paths) -> Iterator[EvidenceFile] (found as the iterator goes), discover (a list),
        count_files (a progress total)
    read_events(paths, on_warning=...) -> Iterator[Event]
    read_records / normalise / read_file: the same pipeline, step by step (with_next names the file
        read next, which the EVTX reader starts on meanwhile)
    READERS / SHAPES: registries to add a file format or a record shape
    casefile.ingest.columnar: Events as Arrow batches and DuckDB tables
"""

from casefile.ingest import readers, shapes  # noqa: F401  (built-ins register themselves)
from casefile.ingest.model import EvidenceFile, RawRecord
from casefile.ingest.pipeline import normalise, read_events, read_file, read_records, with_next
from casefile.ingest.plugins import READERS, SHAPES, Reader, Shape, WarningSink
from casefile.ingest.sources import count_files, discover, iter_discover, open_evidence

__all__ = [
    "READERS",
    "SHAPES",
    "EvidenceFile",
    "RawRecord",
    "Reader",
    "Shape",
    "WarningSink",
    "count_files",
    "discover",
    "iter_discover",
    "normalise",
    "open_evidence",
    "read_events",
    "read_file",
    "read_records",
    "with_next",
]
