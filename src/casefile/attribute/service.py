"""Entry points that find the installed knowledge base and attribute observed techniques/software."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from pathlib import Path

from casefile.attack.kb import KnowledgeBase, installed_bundles, load_knowledge_base
from casefile.attribute.engine import attribute
from casefile.attribute.models import Attribution, Evidence, TechniqueSighting
from casefile.config import Settings


def default_knowledge_base(
    settings: Settings, *, bundles: Sequence[Path] | None = None, before: date | None = None
) -> KnowledgeBase:
    """The KB from `bundles` (or the installed ATT&CK bundle) with the installed naming data, cached."""
    chosen = list(bundles) if bundles else installed_bundles(settings.attack_dir)
    galaxy = settings.data_dir / "misp-galaxy"
    vendor = settings.data_dir / "vendor-naming" / "MicrosoftMapping.json"
    return load_knowledge_base(
        chosen,
        before=before,
        galaxy_dir=galaxy if galaxy.is_dir() else None,
        vendor_map=vendor if vendor.is_file() else None,
        cache_dir=settings.cache_dir,
    )


def attribute_observed(
    techniques: Sequence[str],
    software: Sequence[str] = (),
    *,
    bundles: Sequence[Path] | None = None,
    before: date | None = None,
    top: int = 10,
    settings: Settings | None = None,
) -> Attribution:
    """Attribute a list of technique ids and software ids/names (the CLI's `attribute --techniques`)."""
    kb = default_knowledge_base(settings or Settings.from_env(), bundles=bundles, before=before)
    evidence = Evidence(
        techniques=tuple(TechniqueSighting(t) for t in techniques),
        software=tuple(software),
    )
    return attribute(evidence, kb, top=top)
