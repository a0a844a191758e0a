"""Load a Sigma rule collection: every rule is either compiled or listed with the reason it was not."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from casefile.errors import ConfigError
from casefile.hunt import ir
from casefile.models import RuleInfo
from casefile.pickling import by_fields

if TYPE_CHECKING:
    # Compiling (casefile.hunt.build) needs pySigma; a rule set from the cache does not, so a warm start
    # and the worker processes never import it.
    from casefile.hunt.correlation import CompiledCorrelation
    from casefile.hunt.routing import LogSourceTable


@by_fields
@dataclass(frozen=True, slots=True)
class SkippedRule:
    """A rule that was not loaded, and why (shown by `casefile rules check`)."""

    path: str
    rule_id: str | None
    title: str | None
    reason: str

    def __str__(self) -> str:
        ident = f" [{self.rule_id}]" if self.rule_id else ""
        return f"{self.path}{ident}: {self.reason}"


@by_fields
@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A loaded base rule: its metadata and one IR program per log source."""

    info: RuleInfo
    programs: tuple[ir.Program, ...]


@dataclass(frozen=True)
class RuleSet:
    """Compiled base rules, compiled correlations and the rules that were skipped."""

    rules: tuple[CompiledRule, ...]
    skipped: tuple[SkippedRule, ...] = ()
    correlations: tuple[CompiledCorrelation, ...] = ()
    files: int = 0
    #: The pickle this rule set was loaded from (the rule cache's bytes), if any: worker processes load it
    #: rather than a new pickle of the same rules (`hunt.parallel`). Left out of the rule set's own pickle.
    pickled: bytes | None = field(default=None, compare=False, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "pickled": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({"pickled": None, **state})

    def __len__(self) -> int:
        return len(self.rules) + len(self.correlations)

    def rule(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.info.id == rule_id), None)


def rule_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every .yml/.yaml file under `paths` (files are taken as given), sorted for a stable order."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(f for f in p.rglob("*") if f.suffix in (".yml", ".yaml") and f.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise ConfigError(f"rule path {p} does not exist")
    return out


def load_rules(
    paths: Sequence[str | Path],
    *,
    placeholders: Mapping[str, list[str]] | None = None,
    table: LogSourceTable | None = None,
    cache_dir: Path | None = None,
) -> RuleSet:
    """Parse and compile every Sigma rule under `paths` (folders are walked recursively).

    Rules are parsed file by file, so a broken file names itself and the rest still load.
    Correlation rules are resolved against all rules loaded here. `placeholders` gives values for
    `|expand` placeholders (`%Admins%` -> ["admin*", ...]); rules with unresolved ones are skipped.

    With `cache_dir`, the compiled RuleSet is pickled there and reused while no rule file changed
    (same paths, sizes and mtimes, placeholders, casefile and pySigma versions); a custom `table`
    is never cached. The cache is the user's own folder: it is trusted like the rules themselves.
    """
    files = rule_files(paths)
    if cache_dir is None or table is not None:
        return _build(files, placeholders, table)
    from casefile.hunt.cache import cached

    return cached(cache_dir, files, placeholders, lambda: _build(files, placeholders))


def _build(
    files: list[Path], placeholders: Mapping[str, list[str]] | None, table: LogSourceTable | None = None
) -> RuleSet:
    from casefile.hunt.build import build_rules  # pySigma: imported only when the cache cannot answer

    return build_rules(files, placeholders, table)


__all__ = ["CompiledRule", "RuleSet", "SkippedRule", "load_rules", "rule_files"]

