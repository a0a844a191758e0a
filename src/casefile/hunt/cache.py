"""Pickle caches: of compiled rule sets (parsing ~3,000 SigmaHQ rules with pySigma takes seconds, loading
the compiled IR a fraction of that) and of the fast path's partition plans."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import pickle
import shutil
import sys
from collections.abc import Callable, Mapping
from importlib.metadata import PackageNotFoundError, version
from importlib.resources import files as package_files
from pathlib import Path
from typing import TYPE_CHECKING

from casefile.heap import load_pickle

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
            data = target.read_bytes()
            loaded = load_pickle(data)
            if isinstance(loaded, RuleSet):
                return dataclasses.replace(loaded, pickled=data)
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError, TypeError):
            pass  # stale or damaged cache: rebuild below and overwrite it
    ruleset = build()
    try:
        data = pickle.dumps(ruleset, protocol=pickle.HIGHEST_PROTOCOL)
        # What later runs load, so that this run's rules pickle to the same bytes as theirs: plan folders
        # are named by those bytes (`PlanStore.for_rules`), and a freshly built rule set shares fewer
        # objects than a loaded one.
        ruleset = dataclasses.replace(load_pickle(data), pickled=data)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
        for old in cache_dir.glob(f"{PREFIX}*.pickle"):
            if old != target:
                old.unlink(missing_ok=True)
    except (OSError, pickle.PicklingError, TypeError, AttributeError):
        pass  # an unwritable cache folder costs speed, never the hunt
    return ruleset


#: Partition plans of the fast path (`vector.VectorIndex.plan`), one folder per rule list and code.
PLANS_PREFIX = "plans-"
#: Plan folders kept (the most recently used): hunts with other rule lists or levels keep theirs.
PLAN_FOLDERS_KEPT = 4
#: The modules whose code decides what a plan holds: their source is part of a plan folder's name.
_PLAN_MODULES = ("vector", "evaluate", "regexes", "ir")


class PlanStore:
    """Partition plans on disk, one pickle per (channel, event id), shared by a hunt's workers and reused by
    the next hunt with the same rules.

    A worker builds a partition's plan the first time it meets the partition (about 1.4 ms each, half a
    second for the SigmaHQ set over a varied corpus) and loads one in about a third of that. Plans are
    written atomically (two workers may write the same one; either copy is right) and any file that does not
    load is built again: the store only saves time, never decides a result.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def for_rules(cls, cache_dir: Path, rules_pickle: bytes) -> PlanStore | None:
        """The store for these rules (pickled as the workers receive them), made ready and the oldest others
        pruned; None when the folder cannot be made or this code's source cannot be read."""
        code = _plan_code_digest()
        if code is None:
            return None
        digest = hashlib.sha256(code.encode() + hashlib.sha256(rules_pickle).digest()).hexdigest()
        folder = cache_dir / f"{PLANS_PREFIX}{digest[:40]}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            os.utime(folder)  # recently used: kept by the pruning below
            others = sorted(
                (p for p in cache_dir.glob(f"{PLANS_PREFIX}*") if p != folder and p.is_dir()),
                key=lambda p: p.stat().st_mtime_ns, reverse=True,
            )
            for old in others[PLAN_FOLDERS_KEPT - 1:]:
                shutil.rmtree(old, ignore_errors=True)
        except OSError:
            return None
        return cls(folder)

    def _path(self, key: tuple[str | None, int | None]) -> Path:
        # channel names hold slashes and any character a log source chose: the file is named by a digest
        return self.folder / f"{hashlib.sha256(repr(key).encode()).hexdigest()[:32]}.pickle"

    def load(self, key: tuple[str | None, int | None]) -> object | None:
        """What was stored under `key`, or None (absent, unreadable, or stored for another key)."""
        try:
            stored = load_pickle(self._path(key).read_bytes())
        except FileNotFoundError:
            return None
        except Exception:  # a damaged cache file may raise anything at all; the plan is built again
            return None
        if not (isinstance(stored, tuple) and len(stored) == 2 and stored[0] == key):
            return None
        plan: object = stored[1]
        return plan

    def save(self, key: tuple[str | None, int | None], plan: object) -> None:
        """Keep `plan` for `key` (with the key, which a load checks)."""
        target = self._path(key)
        tmp = target.with_name(f"{target.stem}.{os.getpid()}.tmp")
        try:
            with tmp.open("wb") as fh:
                pickle.dump((key, plan), fh, protocol=pickle.HIGHEST_PROTOCOL)
            tmp.replace(target)
        except (OSError, pickle.PicklingError, TypeError, AttributeError):
            with contextlib.suppress(OSError):  # a full or read-only disk costs speed, never the hunt
                tmp.unlink(missing_ok=True)


@functools.cache
def _plan_code_digest() -> str | None:
    """A digest of the source that builds plans, the Python and the automaton library: a plan stored by
    other code is never loaded (a version number would miss an edited checkout)."""
    parts = [sys.version, _version("casefile"), _version("ahocorasick-rs"), str(CACHE_FORMAT)]
    for name in _PLAN_MODULES:
        spec = importlib.util.find_spec(f"casefile.hunt.{name}")
        if spec is None or spec.origin is None:
            return None
        # a compiled build (casefile.native) does what its source says: plans are shared with the Python
        source = Path(spec.origin).with_name(f"{name}.py")
        try:
            parts.append(hashlib.sha256(source.read_bytes()).hexdigest())
        except OSError:
            return None
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()
