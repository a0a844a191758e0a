"""A warm start loads no more than a hunt needs: the CLI and a cached rule set leave pySigma, the
case store (DuckDB, Arrow) and the HTTP client unimported, in the CLI process and in the workers."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

from .conftest import WHOAMI_RULE

HEAVY = ("sigma", "duckdb", "pyarrow", "httpx", "numpy")

PROBE = """
import json, pathlib, sys
import casefile.cli, casefile.hunt.parallel
from casefile.hunt import load_rules
rules = load_rules([sys.argv[1]], cache_dir=pathlib.Path(sys.argv[2]))
loaded = {m.split(".")[0] for m in sys.modules}
print(json.dumps({"rules": len(rules), "heavy": sorted(loaded & set(sys.argv[3:]))}))
"""


def _probe(rules: Path, cache: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(rules), str(cache), *HEAVY],
        capture_output=True, text=True, check=True, timeout=120,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_warm_start_imports_no_compiler_store_or_http_client(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "whoami.yml").write_text(WHOAMI_RULE, encoding="utf-8")
    cold = _probe(rules, tmp_path / "cache")
    assert cold == {"rules": 1, "heavy": ["sigma"]}  # compiling needs pySigma, and this probe sees it
    assert _probe(rules, tmp_path / "cache") == {"rules": 1, "heavy": []}


def test_the_command_entry_point_imports_nothing_a_worker_does_not_need() -> None:
    """A spawned worker imports the `casefile` script again (as `__mp_main__`): the module it names must
    not pull in the command line interface (Typer, rich, the command modules)."""
    (script,) = [ep for ep in entry_points(group="console_scripts") if ep.name == "casefile"]
    module = script.value.split(":")[0]
    assert module == "casefile.__main__"
    probe = (
        f"import json, sys, {module}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('typer', 'rich', 'click')"
        " or m.startswith('casefile.') and m not in ('casefile.__main__', 'casefile.native'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(out.stdout) == []
    run = subprocess.run(
        [sys.executable, "-m", "casefile", "--help"], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0 and "hunt" in run.stdout
