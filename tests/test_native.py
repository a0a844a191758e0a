"""Compiled builds (casefile.native): loaded only while their source is unchanged, and hunting exactly as
the Python they were compiled from."""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import casefile
from casefile import native

SRC = Path(casefile.__file__).resolve().parent
#: Modules setup.py compiles that a hunt imports (a build of each is expected wherever the install compiled).
HOT = ("casefile.hunt.vector", "casefile.hunt.evaluate", "casefile.hunt.parallel",
       "casefile.ingest.readers.evtx", "casefile.ingest.shapes.evtx_json", "casefile.models")


def _builds() -> list[Path]:
    return sorted(SRC.rglob(f"*{native.SUFFIX}"))


@pytest.fixture(scope="module")
def built() -> None:
    """Skip, saying why, where the install compiled nothing; in CI (which installs with a compiler) fail."""
    if not _builds():
        message = "no compiled modules: this install had no C compiler or Cython, so casefile runs as Python"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def test_finder_loads_a_build_only_while_its_source_matches(tmp_path: Path) -> None:
    folder = tmp_path / "hunt"
    folder.mkdir()
    source = b"X = 1\n"
    (folder / "mod.py").write_bytes(source)
    build = folder / native.build_name("mod", source)
    build.write_bytes(b"")  # no extension module: loading it must fail, saying what to do
    finder = native.BuildFinder()

    spec = finder.find_spec("casefile.hunt.mod", [str(folder)])
    assert spec is not None and spec.origin == str(build)
    assert isinstance(spec.loader, importlib.machinery.ExtensionFileLoader)
    message = f"{re.escape(str(build))}: the compiled build of casefile.hunt.mod does not load .*"
    message += f"{native.PURE_PYTHON_ENV}=1"
    with pytest.raises(ImportError, match=message):
        importlib.util.module_from_spec(spec)  # an empty file is no extension module
    assert finder.find_spec("elsewhere.mod", [str(folder)]) is None  # only casefile's modules
    assert finder.find_spec("casefile.hunt.mod", None) is None

    (folder / "mod.py").write_bytes(source + b"# edited\n")
    assert finder.find_spec("casefile.hunt.mod", [str(folder)]) is None  # stale: the source runs
    (folder / "mod.py").unlink()
    assert finder.find_spec("casefile.hunt.mod", [str(folder)]) is None


def test_build_names_match_setup_py() -> None:
    """setup.py names builds without importing casefile: the two namings must agree."""
    setup_py = SRC.parents[1] / "setup.py"
    if not setup_py.exists():
        pytest.skip("not a checkout: setup.py is not installed with the package")
    namespace: dict[str, object] = {"__name__": "not_main", "__file__": str(setup_py)}
    code = setup_py.read_text().split("\nsetup(")[0]  # the definitions, not the setup() call
    exec(compile(code, str(setup_py), "exec"), namespace)
    build_name = namespace["_build_name"]
    assert callable(build_name)
    source = (SRC / "hunt" / "vector.py").read_bytes()
    assert build_name("casefile.hunt.vector") == native.build_name("vector", source)
    compiled = namespace["COMPILED"]
    assert isinstance(compiled, tuple) and set(HOT) <= set(compiled)


def _python(code: str, env: dict[str, str], timeout: float = 120) -> str:
    """What `code` prints in a new interpreter with these environment variables added."""
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=timeout,
        env={**os.environ, **env},
    ).stdout


def _probe(root: Path, env: dict[str, str] | None = None) -> list[str]:
    code = "import casefile.hunt.parallel, casefile.models; from casefile import native; " \
           "print(' '.join(native.compiled_modules()))"
    return _python(code, {"PYTHONPATH": str(root), **(env or {})}).split()


def test_installed_builds_are_used_unless_stale_or_turned_off(built: None, tmp_path: Path) -> None:
    copy = tmp_path / "src"
    shutil.copytree(SRC, copy / "casefile", ignore=shutil.ignore_patterns("__pycache__"))
    assert set(HOT) <= set(_probe(copy))
    assert _probe(copy, {native.PURE_PYTHON_ENV: "1"}) == []

    vector = copy / "casefile" / "hunt" / "vector.py"
    vector.write_text(vector.read_text() + "\n# an edit after the install\n")
    loaded = _probe(copy)
    assert "casefile.hunt.vector" not in loaded and "casefile.hunt.evaluate" in loaded


def test_builds_and_python_share_partition_plans(built: None) -> None:
    code = "from casefile.hunt.cache import _plan_code_digest; print(_plan_code_digest())"
    digests = [_python(code, {native.PURE_PYTHON_ENV: pure}, timeout=60) for pure in ("0", "1")]
    assert digests[0] == digests[1] and len(digests[0].strip()) == 64


@pytest.mark.shared
def test_builds_hunt_exactly_as_the_python(built: None, shared_data: Path, tmp_path: Path) -> None:
    """The whole EVTX corpus and the JSON datasets with every SigmaHQ rule, in two workers: the same output
    byte for byte from the builds as from the Python sources."""
    folders = ("rules", "rules-emerging-threats", "rules-threat-hunting")
    rules = [str(shared_data / "sigma" / f) for f in folders]
    evidence = [str(shared_data / "evtx"), str(shared_data / "json")]
    outputs = []
    for pure in ("0", "1"):
        out = tmp_path / f"pure{pure}.jsonl"
        run = subprocess.run(
            [sys.executable, "-m", "casefile", "hunt", *evidence, *[a for r in rules for a in ("-r", r)],
             "-f", "jsonl", "-o", str(out), "--jobs", "2"],
            capture_output=True, text=True, timeout=900, env={**os.environ, native.PURE_PYTHON_ENV: pure},
        )
        assert run.returncode == 0, run.stderr[-2000:]
        outputs.append((out.read_bytes(), run.stderr))
    (compiled, compiled_log), (python, python_log) = outputs
    assert compiled.count(b"\n") > 5_000
    assert hashlib.sha256(compiled).hexdigest() == hashlib.sha256(python).hexdigest()
    assert compiled_log == python_log  # warnings and the summary
