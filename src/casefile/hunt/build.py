"""Compile Sigma rule files with pySigma into a `RuleSet` (what `load_rules` caches).

Kept apart from casefile.hunt.rules so that loading a cached rule set, in the CLI and in each worker
process, does not import pySigma.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule
from sigma.exceptions import SigmaError
from sigma.filters import SigmaFilter
from sigma.modifiers import SigmaWideModifier, modifier_mapping
from sigma.rule import SigmaRule

from casefile.errors import RuleError
from casefile.hunt.compiler import Compiler, UnsupportedRule
from casefile.hunt.correlation import CompiledCorrelation, compile_correlation, rule_key
from casefile.hunt.routing import LogSourceTable, UnsupportedLogSource, default_table
from casefile.hunt.rules import CompiledRule, RuleSet, SkippedRule
from casefile.models import Level, RuleInfo

# The Sigma modifier appendix names `utf16le` as an alias of `wide`; pySigma 1.x lacks the alias.
modifier_mapping.setdefault("utf16le", SigmaWideModifier)

#: Folder names whose rules SigmaHQ itself does not run; loading them is refused with this reason.
SKIPPED_FOLDERS: Mapping[str, str] = {
    "deprecated": "rule is in SigmaHQ's deprecated/ folder",
    "unsupported": "rule is in SigmaHQ's unsupported/ folder (needs features no backend has)",
}
SKIPPED_STATUS = frozenset({"deprecated", "unsupported"})


def _info(rule: SigmaRule, path: str) -> RuleInfo:
    return RuleInfo(
        id=rule_key(rule),
        title=rule.title,
        level=Level.parse(rule.level.name) if rule.level is not None else Level.INFORMATIONAL,
        status=rule.status.name.lower() if rule.status is not None else None,
        author=rule.author,
        tags=tuple(str(t) for t in rule.tags),
        description=rule.description,
        references=tuple(rule.references or ()),
        path=path,
    )


def _folder_reason(path: Path) -> str | None:
    for part in path.parts[:-1]:
        if part in SKIPPED_FOLDERS:
            return SKIPPED_FOLDERS[part]
    return None


def _ident(rule: Any) -> tuple[str | None, str | None]:
    rid = str(rule.id) if getattr(rule, "id", None) else None
    return rid, getattr(rule, "title", None)


#: What a rule of an odd shape can raise beyond pySigma's own errors: skipped with the reason, never the
#: end of loading thousands of others.
_ODD_RULE = (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError)


def _parse_file(path: Path, skipped: list[SkippedRule]) -> Iterator[SigmaRule | SigmaCorrelationRule]:
    """The rules in one file (a file may hold several documents); failures become SkippedRules."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        skipped.append(SkippedRule(str(path), None, None, f"cannot read file: {exc}"))
        return
    try:
        collection = SigmaCollection.from_yaml(text, collect_errors=True, resolve_references=False)
    except (SigmaError, ValueError, yaml.YAMLError) as exc:
        reason = " ".join(str(exc).split())
        skipped.append(SkippedRule(str(path), None, None, f"invalid Sigma YAML: {reason}"))
        return
    except (*_ODD_RULE, NameError) as exc:  # pySigma failing on a document of an odd shape (a correlation's)
        reason = " ".join(f"{type(exc).__name__}: {exc}".split())
        skipped.append(SkippedRule(str(path), None, None, f"pySigma cannot read it: {reason}"))
        return
    # A rule's own errors are also the collection's: listed once, with the rule they belong to (below).
    of_rules = {id(e) for rule in collection.rules for e in rule.errors}
    for error in collection.errors:
        if id(error) not in of_rules:
            skipped.append(SkippedRule(str(path), None, None, f"invalid Sigma YAML: {error}"))
    for rule in collection.rules:
        rid, title = _ident(rule)
        if rule.errors:
            reason = "; ".join(str(e) for e in rule.errors)
            skipped.append(SkippedRule(str(path), rid, title, f"pySigma: {reason}"))
            continue
        if isinstance(rule, (SigmaRule, SigmaCorrelationRule)):
            yield rule
        else:
            skipped.append(
                SkippedRule(str(path), rid, title, f"{type(rule).__name__} documents are not supported")
            )


def build_rules(
    files: list[Path], placeholders: Mapping[str, list[str]] | None, table: LogSourceTable | None = None
) -> RuleSet:
    """Parse and compile rule files (see `load_rules`); `table` defaults to the bundled log sources."""
    table = table or default_table()
    compiler = Compiler(placeholders)
    skipped: list[SkippedRule] = []
    base: list[tuple[SigmaRule, str]] = []
    corrs: list[tuple[SigmaCorrelationRule, str]] = []
    for path in files:
        folder = _folder_reason(path)
        for rule in _parse_file(path, skipped):
            rid, title = _ident(rule)
            status = rule.status.name.lower() if rule.status is not None else None
            if folder is not None:
                skipped.append(SkippedRule(str(path), rid, title, folder))
            elif status in SKIPPED_STATUS:
                skipped.append(SkippedRule(str(path), rid, title, f"rule status is {status}"))
            elif isinstance(rule, SigmaCorrelationRule):
                corrs.append((rule, str(path)))
            else:
                base.append((rule, str(path)))

    compiled: list[CompiledRule] = []
    seen: dict[str, str] = {}
    for rule, rpath in base:
        rid, title = _ident(rule)
        key = rule_key(rule)
        if key in seen:
            reason = f"duplicate rule id (already loaded from {seen[key]})"
            skipped.append(SkippedRule(rpath, rid, title, reason))
            continue
        ls = rule.logsource
        try:
            sources = table.resolve(ls.product, ls.category, ls.service)
            programs = compiler.compile(rule, sources)
        except (UnsupportedLogSource, UnsupportedRule) as exc:
            skipped.append(SkippedRule(rpath, rid, title, str(exc)))
            continue
        except SigmaError as exc:
            skipped.append(SkippedRule(rpath, rid, title, f"pySigma: {exc}"))
            continue
        except _ODD_RULE as exc:  # a value pySigma took but did not make what its type says (`x|re: 1`)
            skipped.append(SkippedRule(rpath, rid, title, f"cannot compile: {type(exc).__name__}: {exc}"))
            continue
        seen[key] = rpath
        compiled.append(CompiledRule(_info(rule, rpath), tuple(programs)))

    correlations = _correlations(base, corrs, skipped)
    return RuleSet(tuple(compiled), tuple(skipped), tuple(correlations), files=len(files))


def _correlations(
    base: list[tuple[SigmaRule, str]],
    corrs: list[tuple[SigmaCorrelationRule, str]],
    skipped: list[SkippedRule],
) -> list[CompiledCorrelation]:
    """Resolve correlation references against the whole collection and compile them."""
    if not corrs:
        return []
    members: list[SigmaRule | SigmaCorrelationRule | SigmaFilter] = [r for r, _ in base]
    members += [c for c, _ in corrs]
    # Not resolved here: pySigma would resolve every correlation at once, and raise on the first dangling one.
    collection = SigmaCollection(members, resolve_references=False)
    out: list[CompiledCorrelation] = []
    for corr, path in corrs:
        rid, title = _ident(corr)
        try:
            # Resolve each correlation on its own so one dangling reference does not sink the rest.
            corr.resolve_rule_references(collection)
            out.append(compile_correlation(corr, path=path))
        except (SigmaError, RuleError) as exc:
            skipped.append(SkippedRule(path, rid, title, f"correlation: {exc}"))
        except _ODD_RULE as exc:
            skipped.append(SkippedRule(path, rid, title, f"correlation: {type(exc).__name__}: {exc}"))
    return out


__all__ = ["SKIPPED_FOLDERS", "SKIPPED_STATUS", "build_rules"]
