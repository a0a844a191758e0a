"""casefile.web: the TAXII 2.1 server (FastAPI + uvicorn) and its state under `--data DIR`."""

from __future__ import annotations

from pathlib import Path

from casefile.config import Settings
from casefile.web.server import running_server, serve
from casefile.web.state import Account, Role, TaxiiState
from casefile.web.taxii import create_app


def default_data_dir(settings: Settings) -> Path:
    """The server's state folder unless `--data` says otherwise: <data dir>/taxii."""
    return settings.data_dir / "taxii"


__all__ = ["Account", "Role", "TaxiiState", "create_app", "default_data_dir", "running_server", "serve"]
