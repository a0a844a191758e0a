"""Compiled builds of the hunt's hot modules, used only while they match their source.

`pip install` compiles the modules `setup.py` lists with Cython when a C compiler is at hand (the same
Python code, compiled as is: a hunt takes about a sixth less CPU, docs/performance.md) and puts each build
beside its source as `<module>.<digest>.<ABI suffix>`, the digest being the start of the source's SHA-256.
The ordinary import system never loads a file so named; the finder below loads it only while the `.py`
beside it still has that digest, so an edited checkout runs its edits, never a stale build, and a machine
without a compiler runs the same modules as Python. `CASEFILE_PURE_PYTHON=1` turns the builds off. A module
written in Cython proper (a `.pyx`, no `.py`) is named after its `.pyx`; without a build it cannot be
imported, and its callers take the Python path it stands in for.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from types import ModuleType

#: Set (to anything but empty or 0) to run every module as Python, builds or not.
PURE_PYTHON_ENV = "CASEFILE_PURE_PYTHON"
#: The ABI suffix of extension modules this interpreter loads (`.cpython-311-x86_64-linux-gnu.so`).
SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]
_DIGEST_CHARS = 16


def build_name(stem: str, source: bytes) -> str:
    """The file name of the build of module `stem` (its last name part) compiled from `source`."""
    return f"{stem}.{hashlib.sha256(source).hexdigest()[:_DIGEST_CHARS]}{SUFFIX}"


def pure_python() -> bool:
    """Whether builds are turned off in this process (and the processes it starts)."""
    return os.environ.get(PURE_PYTHON_ENV, "") not in ("", "0")


class BuildFinder(importlib.abc.MetaPathFinder):
    """Finds the build of a `casefile` module whose source it was compiled from is still beside it."""

    def __init__(self) -> None:
        # per package folder: module stem -> names of the builds there (a listing per folder, once)
        self._builds: dict[str, dict[str, list[str]]] = {}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if path is None or not fullname.startswith("casefile."):
            return None
        stem = fullname.rpartition(".")[2]
        for folder in path:
            builds = self._listing(folder).get(stem)
            if not builds:
                continue
            wanted = _wanted(folder, stem)
            if wanted is None:
                return None
            if wanted not in builds:
                return None  # the source changed since the build: run the source
            location = os.path.join(folder, wanted)
            loader = _BuildLoader(fullname, location)
            return importlib.util.spec_from_file_location(fullname, location, loader=loader)
        return None

    def _listing(self, folder: str) -> dict[str, list[str]]:
        builds = self._builds.get(folder)
        if builds is None:
            builds = {}
            try:
                names = os.listdir(folder)
            except OSError:
                names = []
            for name in names:
                if name.endswith(SUFFIX) and name.count(".", 0, len(name) - len(SUFFIX)) == 1:
                    builds.setdefault(name.partition(".")[0], []).append(name)
            self._builds[folder] = builds
        return builds


def _wanted(folder: str, stem: str) -> str | None:
    """The build name of module `stem`'s source in `folder`: its `.py`, or its `.pyx` for a module written in
    Cython proper (which has no Python source, so it exists only as a build)."""
    for suffix in (".py", ".pyx"):
        try:
            with open(os.path.join(folder, stem + suffix), "rb") as fh:
                return build_name(stem, fh.read())
        except FileNotFoundError:
            continue
        except OSError:
            return None
    return None


class _BuildLoader(importlib.machinery.ExtensionFileLoader):
    """Loads a build, saying what to do when it does not load (a damaged or foreign file)."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        try:
            return super().create_module(spec)
        except ImportError as exc:
            raise ImportError(
                f"{self.path}: the compiled build of {self.name} does not load ({exc}); reinstall casefile, "
                f"or set {PURE_PYTHON_ENV}=1 to run it as Python"
            ) from exc


def install() -> None:
    """Put the finder first on `sys.meta_path` (once), unless builds are turned off."""
    if pure_python() or any(isinstance(f, BuildFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, BuildFinder())


def compiled_modules() -> list[str]:
    """The `casefile` modules this process has loaded from a build, sorted."""
    extension = importlib.machinery.ExtensionFileLoader
    return sorted(
        name for name, module in list(sys.modules.items())
        if name.startswith("casefile.") and isinstance(getattr(module.__spec__, "loader", None), extension)
    )


__all__ = [
    "PURE_PYTHON_ENV", "SUFFIX", "BuildFinder", "build_name", "compiled_modules", "install", "pure_python",
]
