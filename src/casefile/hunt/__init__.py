"""casefile.hunt: the Sigma hunt engine.

    load_rules(paths, placeholders=None) -> RuleSet          every rule compiled or listed as skipped
    hunt(events, ruleset, min_level=...) -> Iterator[Detection]
    run_hunt(paths, ruleset, min_level=..., on_warning=..., progress=None) -> HuntResult
    iter_hunt(paths, ruleset, stats=HuntStats(), ...) -> Iterator[Detection]   streamed, bounded memory
    iter_hunt_lines(paths, ruleset, ...) -> Iterator[str]   the same as `--format jsonl` lines, faster
    iter_hunt_jsonl(paths, ruleset, ...) -> Iterator[bytes]  those lines as UTF-8, in chunks: fastest
    event_hunter(rules, plan_cache=None).match_event(event) -> list[Detection]   one event at a time

A rule compiles (compiler.py) to one IR program (ir.py) per log source (routing.py, logsources.yaml);
the reference evaluator (evaluate.py) runs programs on the events routed to them (engine.py). The fast
path (vector.py, parallel.py) pre-filters events with every rule's guards and confirms with the reference.
"""

from casefile.hunt.engine import (
    HuntResult,
    HuntStats,
    Progress,
    RuleIndex,
    hunt,
    iter_hunt,
    iter_hunt_jsonl,
    iter_hunt_lines,
    match_event,
    run_hunt,
)
from casefile.hunt.parallel import event_hunter
from casefile.hunt.rules import CompiledRule, RuleSet, SkippedRule, load_rules, rule_files

__all__ = [
    "CompiledRule",
    "HuntResult",
    "HuntStats",
    "Progress",
    "RuleIndex",
    "RuleSet",
    "SkippedRule",
    "event_hunter",
    "hunt",
    "iter_hunt",
    "iter_hunt_jsonl",
    "iter_hunt_lines",
    "load_rules",
    "match_event",
    "rule_files",
    "run_hunt",
]
