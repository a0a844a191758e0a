"""A real TAXII server on 127.0.0.1 (uvicorn in a thread) with three accounts and two collections."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from casefile.web import Role, TaxiiState, running_server


@dataclass(frozen=True)
class Server:
    url: str
    data: Path
    tokens: dict[str, str]
    shared: str  # collection partner reads, analyst writes
    internal: str  # collection only the analyst reads and writes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("taxii")
    state = TaxiiState(data)
    tokens = {
        "admin": state.add_user("admin", Role.ADMIN),
        "analyst": state.add_user("analyst", Role.ANALYST),
        "partner": state.add_user("partner", Role.PARTNER),
    }
    shared = state.add_collection("Shared with allies", read=["partner", "analyst"], write=["analyst"])
    internal = state.add_collection("CERT internal", read=["analyst"], write=["analyst"])
    with running_server(data) as url:
        yield Server(url, data, tokens, shared, internal)
