"""Entry points that find the installed knowledge base and attribute observed techniques/software."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path

from casefile.attack.aliases import sector_key, victim_country_code
from casefile.attack.kb import KnowledgeBase, installed_bundles, load_knowledge_base
from casefile.attribute.engine import attribute
from casefile.attribute.models import Attribution, Evidence, TechniqueSighting
from casefile.config import Settings
from casefile.errors import ConfigError


def stated_victim(country: str | None, sector: str | None) -> tuple[str | None, str | None]:
    """The analyst's victim country as an ISO code (a code or a name is accepted) and sector as a label.

    Raises ConfigError for a country that is not one (a region such as "Europe" is not weighed).
    """
    code = victim_country_code(country) if country and country.strip() else None
    if country and country.strip() and code is None:
        raise ConfigError(f"victim country {country!r}: not an ISO 3166 country code or English name")
    label = sector_key(sector) if sector and sector.strip() else None
    return code, label


def default_knowledge_base(
    settings: Settings,
    *,
    bundles: Sequence[Path] | None = None,
    before: date | None = None,
    galaxy_dir: Path | None = None,
    vendor_map: Path | None = None,
) -> KnowledgeBase:
    """The KB from `bundles` (or the installed bundle) with the given or installed naming data, cached."""
    for given in (galaxy_dir, vendor_map):
        if given is not None and not given.exists():
            raise ConfigError(f"{given}: not found")
    # given but of the wrong kind, they were passed over without a word and the names they hold unused
    if galaxy_dir is not None and not galaxy_dir.is_dir():
        raise ConfigError(f"{galaxy_dir}: not a folder (--galaxy takes a MISP galaxy folder)")
    if vendor_map is not None and not vendor_map.is_file():
        raise ConfigError(f"{vendor_map}: not a file (--vendor-map takes the naming map JSON)")
    chosen = list(bundles) if bundles else installed_bundles(settings.attack_dir)
    galaxy = galaxy_dir or settings.data_dir / "misp-galaxy"
    vendor = vendor_map or settings.data_dir / "vendor-naming" / "MicrosoftMapping.json"
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
    galaxy_dir: Path | None = None,
    vendor_map: Path | None = None,
    victim_country: str | None = None,
    victim_sector: str | None = None,
    first_seen: datetime | None = None,
    last_seen: datetime | None = None,
) -> Attribution:
    """Attribute a list of technique ids and software ids/names (the CLI's `attribute --techniques`), with
    what the analyst states about the victim and when the activity was seen."""
    country, sector = stated_victim(victim_country, victim_sector)
    kb = default_knowledge_base(
        settings or Settings.from_env(),
        bundles=bundles,
        before=before,
        galaxy_dir=galaxy_dir,
        vendor_map=vendor_map,
    )
    evidence = Evidence(
        techniques=tuple(TechniqueSighting(t) for t in techniques),
        software=tuple(software),
        first_seen=first_seen,
        last_seen=last_seen,
        victim_country=country,
        victim_sector=sector,
    )
    return attribute(evidence, kb, top=top)
