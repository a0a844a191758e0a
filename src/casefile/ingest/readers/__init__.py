"""File readers: one module per file format, each registering itself in READERS."""

from . import csvlog, evtx, jsonlog

__all__ = ["csvlog", "evtx", "jsonlog"]
