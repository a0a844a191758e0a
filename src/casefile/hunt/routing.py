"""Log-source routing as data: resolve a Sigma logsource to the event sources that can carry it.

The table lives in `logsources.yaml` beside this module; pySigma's Windows service -> channel table
fills in the services the YAML does not name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib.resources import files
from typing import Any

import yaml
from sigma.pipelines.common import windows_logsource_mapping

from casefile.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Source:
    """One place a rule's events live: channels, event ids (empty = any), required field values and
    Sigma-taxonomy -> event field renames."""

    name: str
    channels: tuple[str, ...] = ()
    event_ids: tuple[int, ...] = ()
    conditions: tuple[tuple[str, tuple[str, ...]], ...] = ()
    fields: Mapping[str, str] = field(default_factory=dict)


class UnsupportedLogSource(Exception):
    """The logsource has no mapping; the message is the skip reason shown by `casefile rules check`."""


def _strs(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    return (str(value),)


@dataclass(frozen=True)
class LogSourceTable:
    """The parsed routing table for one product family (Windows)."""

    services: Mapping[str, tuple[str, ...]]
    categories: Mapping[str, tuple[Source, ...]]

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], origin: str) -> LogSourceTable:
        try:
            windows = data["products"]["windows"]
            services: dict[str, tuple[str, ...]] = {
                k: _strs(v) for k, v in windows_logsource_mapping.items()
            }
            services.update({k: _strs(v) for k, v in (windows.get("services") or {}).items()})
            categories: dict[str, tuple[Source, ...]] = {}
            for cat, entries in (windows.get("categories") or {}).items():
                sources = []
                for e in entries:
                    service = e.get("service")
                    if service is not None and service not in services:
                        raise ConfigError(f"{origin}: category {cat!r} names unknown service {service!r}")
                    channels = _strs(e.get("channels")) or (services[service] if service else ())
                    sources.append(
                        Source(
                            name=f"{cat}/{e['name']}",
                            channels=channels,
                            event_ids=tuple(int(i) for i in e.get("event_ids") or ()),
                            conditions=tuple(
                                (str(k), _strs(v)) for k, v in (e.get("conditions") or {}).items()
                            ),
                            fields={str(k): str(v) for k, v in (e.get("fields") or {}).items()},
                        )
                    )
                categories[cat] = tuple(sources)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{origin}: malformed log-source table ({exc!r})") from exc
        return cls(services=services, categories=categories)

    def resolve(self, product: str | None, category: str | None, service: str | None) -> tuple[Source, ...]:
        """Sources for a rule's logsource; raises UnsupportedLogSource naming what is unmapped."""
        prod = (product or "").lower()
        if prod not in ("", "windows"):
            raise UnsupportedLogSource(
                f"log source product {prod!r} is not Windows event logs (casefile hunts Windows/JSON logs)"
            )
        if category:
            sources = self.categories.get(category.lower())
            if sources is None:
                raise UnsupportedLogSource(
                    f"no log-source mapping for category {category!r} (product {prod or 'any'!r}); "
                    "add it to casefile/hunt/logsources.yaml"
                )
            return sources
        if service:
            channels = self.services.get(service.lower())
            if channels is None:
                raise UnsupportedLogSource(
                    f"no channel mapping for Windows service {service!r}; "
                    "add it to casefile/hunt/logsources.yaml"
                )
            return (Source(name=f"service/{service.lower()}", channels=channels),)
        if prod == "windows":
            return (Source(name="windows/any"),)
        raise UnsupportedLogSource("log source names no product, category or service")


@cache
def default_table() -> LogSourceTable:
    """The table shipped in the package (`casefile/hunt/logsources.yaml`)."""
    resource = files("casefile.hunt").joinpath("logsources.yaml")
    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    return LogSourceTable.from_mapping(data, "casefile/hunt/logsources.yaml")
