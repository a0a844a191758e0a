"""Compiles the hunt's hot modules with Cython when it and a C compiler are at hand.

Everything else is in pyproject.toml. The modules stay Python: each build is their own source compiled as
is, installed beside it under a name only `casefile.native` loads, and only while the source is unchanged
(see there). A failed build costs speed, never the install: the modules then run as Python.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sysconfig
from pathlib import Path
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
#: Modules on the per-record path of a hunt (the workers) and the per-detection path (the parent).
COMPILED = (
    "casefile.hunt.vector",
    "casefile.hunt.evaluate",
    "casefile.hunt.regexes",
    "casefile.hunt.parallel",
    "casefile.hunt.engine",
    "casefile.hunt.output",
    "casefile.ingest.readers.evtx",
    "casefile.ingest.readers.jsonlog",
    "casefile.ingest.shapes.evtx_json",
    "casefile.ingest.shapes._common",
    "casefile.ingest.pipeline",
    "casefile.ingest.sources",
    "casefile.models",
    # Cython proper (C types), not Python: without a build, its callers take the Python path it stands in for
    "casefile.ingest.shapes._evtx_fast",
    "casefile.hunt._prefilter",
    "casefile.ingest.readers._binxml",
)
#: Compiled exactly as Python runs it: annotations are not turned into C types or run-time checks.
DIRECTIVES = {"language_level": 3, "annotation_typing": False, "binding": True}


def _source(name: str) -> Path:
    stem = HERE / "src" / name.replace(".", "/")
    pyx = stem.with_suffix(".pyx")
    return pyx if pyx.exists() else stem.with_suffix(".py")


def _build_name(name: str) -> str:
    # the same name as casefile.native.build_name, which this file cannot import before the install
    stem = name.rpartition(".")[2]
    digest = hashlib.sha256(_source(name).read_bytes()).hexdigest()[:16]
    return f"{stem}.{digest}{sysconfig.get_config_var('EXT_SUFFIX')}"


class OptionalBuildExt(build_ext):
    """`build_ext` that names builds by their source and gives up (with a warning) instead of failing."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        if os.environ.get("CASEFILE_PURE_PYTHON", "") not in ("", "0"):
            self.extensions = []
            return
        try:
            from Cython.Build import cythonize

            translated = cythonize(
                self.extensions, compiler_directives=DIRECTIVES, build_dir="build/cython",
                nthreads=os.cpu_count() or 1, quiet=True,
            )
            for ext, c_ext in zip(self.extensions, translated, strict=True):
                ext.sources = c_ext.sources  # keep setuptools' Extension objects, with the C sources
        except Exception as exc:  # no Cython, or code it cannot compile: the modules run as Python
            self._skip(f"Cython: {exc}")
            return
        self._remove_stale(inplace=self.inplace or getattr(self, "editable_mode", False))
        try:
            super().run()
        except Exception as exc:  # no compiler at all
            self._skip(str(exc))

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:  # this module runs as Python
            self.warn(f"casefile: {ext.name} not compiled ({exc}); it runs as Python")

    def get_ext_fullpath(self, ext_name: str) -> str:
        path = str(super().get_ext_fullpath(ext_name))
        fullname = self.get_ext_fullname(ext_name)
        if fullname in COMPILED:
            return os.path.join(os.path.dirname(path), _build_name(fullname))
        return path

    def get_ext_filename(self, fullname: str) -> str:
        if fullname in COMPILED:
            return os.path.join(*fullname.split(".")[:-1], _build_name(fullname))
        return str(super().get_ext_filename(fullname))

    def _skip(self, reason: str) -> None:
        self.extensions = []
        self.warn(f"casefile: modules not compiled ({reason}); casefile runs as Python, about a sixth slower")

    def _remove_stale(self, *, inplace: bool) -> None:
        """Builds of earlier sources, left in the checkout by earlier editable installs or in the build
        folder by earlier wheels (never loaded, but a wheel would carry them)."""
        suffix = sysconfig.get_config_var("EXT_SUFFIX")
        for name in COMPILED:
            folder = _source(name).parent if inplace else Path(self.build_lib, *name.split(".")[:-1])
            stem = name.rpartition(".")[2]
            for old in glob.glob(str(folder / f"{stem}.*{suffix}")):
                if Path(old).name != _build_name(name):
                    os.remove(old)


setup(
    ext_modules=[Extension(name, [str(_source(name).relative_to(HERE))]) for name in COMPILED],
    cmdclass={"build_ext": OptionalBuildExt},
)
