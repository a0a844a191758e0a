"""Shared fixtures: the reference data folder (skip with a reason when it is absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from casefile.config import SHARED_DATA_ENV, shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` (or $CASEFILE_SHARED_DATA); tests that need it skip, saying why, without it."""
    path = shared_data_dir()
    if path is None:
        pytest.skip(f"reference data not found: set {SHARED_DATA_ENV} or place it at ../shared/data")
    return path


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real data directory from a test."""
    monkeypatch.setenv("CASEFILE_HOME", str(tmp_path_factory.mktemp("casefile-home")))
