"""Fixtures for knowledge-base tests: the hand-written bundle and the real ATT&CK bundle (parsed once)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from kbfixture import write_bundle

from casefile.attack import KnowledgeBase, load_knowledge_base


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bundle(tmp_path_factory.mktemp("kb") / "tiny.json")


@pytest.fixture(scope="session")
def real_kb(shared_data: Path) -> KnowledgeBase:
    return load_knowledge_base(
        [shared_data / "attack" / "enterprise-attack.json.gz"],
        galaxy_dir=shared_data / "misp-galaxy",
        vendor_map=shared_data / "vendor-naming" / "MicrosoftMapping.json",
    )
