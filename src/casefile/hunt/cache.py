"""A pickle cache of compiled rule sets: parsing ~3,000 SigmaHQ rules with pySigma takes seconds,
loading the compiled IR takes a fraction of that."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files as package_files
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from casefile.hunt.rules import RuleSet

#: Bump when the IR or the compiler changes meaning, so old caches are ignored (2: pickled by value,
#: `casefile.pickling`, which loads faster than the generic dataclass state the old files hold).
CACHE_FORMAT = 2
PREFIX = "rules-"


def _version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def cache_key(files: list[Path], placeholders: Mapping[str, list[str]] | None) -> str:
    """A digest of everything a compiled RuleSet depends on."""
    table = package_files("casefile.hunt").joinpath("logsources.yaml").read_bytes()
    stats = []
    for f in files:
        st = f.stat()
        # absolute, not resolved: resolving every one of thousands of rule files cost 0.1 s of each start,
        # and the stat (of the link's target) already changes when the file does
        stats.append([os.path.abspath(f), st.st_size, st.st_mtime_ns])
    payload = {
        "format": CACHE_FORMAT,
        "casefile": _version("casefile"),
        "pysigma": _version("pysigma"),
        "table": hashlib.sha256(table).hexdigest(),
        "placeholders": {k: list(v) for k, v in sorted((placeholders or {}).items())},
        "files": stats,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cached(
    cache_dir: Path,
    files: list[Path],
    placeholders: Mapping[str, list[str]] | None,
    build: Callable[[], RuleSet],
) -> RuleSet:
    """The cached RuleSet for these inputs, or `build()` stored for next time.

    An unreadable or stale cache file is rebuilt (never an error: the cache only saves time).
    """
    from casefile.hunt.rules import RuleSet

    key = cache_key(files, placeholders)
    target = cache_dir / f"{PREFIX}{key[:40]}.pickle"
    if target.is_file():
        try:
            with target.open("rb") as fh:
                loaded = pickle.load(fh)
            if isinstance(loaded, RuleSet):
                return loaded
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
            pass  # stale or damaged cache: rebuild below and overwrite it
    ruleset = build()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        with tmp.open("wb") as fh:
            pickle.dump(ruleset, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(target)
        for old in cache_dir.glob(f"{PREFIX}*.pickle"):
            if old != target:
                old.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass  # an unwritable cache folder costs speed, never the hunt
    return ruleset
