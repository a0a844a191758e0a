"""File readers: one module per file format, each registering itself in READERS."""

from . import evtx, jsonlog

__all__ = ["evtx", "jsonlog"]
