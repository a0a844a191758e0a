"""Partition plans kept on disk (`cache.PlanStore`): reused by the next hunt and its workers, never trusted
over the rules they were built for."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from casefile.hunt import RuleSet, load_rules, run_hunt, vector
from casefile.hunt import cache as cache_module
from casefile.hunt.cache import PLAN_FOLDERS_KEPT, PLANS_PREFIX, PlanStore
from casefile.hunt.engine import iter_hunt
from casefile.hunt.parallel import rules_pickle
from casefile.hunt.rules import CompiledRule
from casefile.models import Detection, Level


@pytest.fixture(scope="module")
def rules(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> RuleSet:
    windows = shared_data / "sigma" / "rules" / "windows"
    return load_rules(
        [windows / "process_creation", windows / "builtin" / "security"],
        cache_dir=tmp_path_factory.mktemp("rule-cache"),
    )


@pytest.fixture(scope="module")
def evidence(shared_data: Path) -> list[Path]:
    """Sysmon and Security files of the corpus: many partitions, process creations among them."""
    root = shared_data / "evtx" / "EVTX-ATTACK-SAMPLES"
    files = sorted(root.rglob("*.evtx"))
    sample = files[::25]
    assert len(sample) >= 8, f"too few EVTX samples under {root}"
    return sample


def _key(d: Detection) -> tuple[Any, ...]:
    return (d.rule.id, d.file, d.record_id, json.dumps(d.matched, sort_keys=True, default=str))


def _hunt(paths: list[Path], rules: RuleSet, cache: Path | None, workers: int = 1,
          min_level: Level = Level.INFORMATIONAL) -> list[tuple[Any, ...]]:
    return [_key(d) for d in iter_hunt(paths, rules, workers=workers, plan_cache=cache, min_level=min_level)]


def _plan_files(cache: Path) -> dict[str, int]:
    (folder,) = cache.glob(f"{PLANS_PREFIX}*")
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_plans_are_kept_and_the_next_hunt_builds_none(
    rules: RuleSet, evidence: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = [_key(d) for d in run_hunt(evidence, rules, vectorised=False).detections]
    assert len(reference) > 20
    assert _hunt(evidence, rules, tmp_path) == reference
    kept = _plan_files(tmp_path)
    assert len(kept) > 5 and not [n for n in kept if not n.endswith(".pickle")]

    def no_building(*args: object, **kwargs: object) -> None:
        raise AssertionError("a plan was built although it was stored")

    monkeypatch.setattr(vector, "build_plan", no_building)
    assert _hunt(evidence, rules, tmp_path) == reference
    assert _plan_files(tmp_path) == kept  # read, not written again


def test_workers_share_the_stored_plans(rules: RuleSet, evidence: list[Path], tmp_path: Path) -> None:
    first = _hunt(evidence, rules, tmp_path, workers=2)
    kept = _plan_files(tmp_path)
    assert first == _hunt(evidence, rules, None, workers=1)
    assert _hunt(evidence, rules, tmp_path, workers=2) == first
    assert _plan_files(tmp_path) == kept  # the second pool built and wrote none


def test_a_damaged_or_misplaced_plan_is_built_again(
    rules: RuleSet, evidence: list[Path], tmp_path: Path
) -> None:
    expected = _hunt(evidence, rules, tmp_path)
    (folder,) = tmp_path.glob(f"{PLANS_PREFIX}*")
    files = sorted(folder.iterdir(), key=lambda p: p.stat().st_size)
    damaged, small, large = files[0], files[1], files[-1]
    damaged.write_bytes(damaged.read_bytes()[:40])  # cut short, as by a full disk
    small.write_bytes(large.read_bytes())  # another partition's plan under this one's name

    assert _hunt(evidence, rules, tmp_path) == expected
    for path in (damaged, small):
        key, plan = pickle.loads(path.read_bytes())
        assert isinstance(plan, vector.PartitionPlan)
        assert path == PlanStore(folder)._path(key)
    assert pickle.loads(small.read_bytes()) != pickle.loads(large.read_bytes())


def test_other_rules_get_their_own_folder_and_old_ones_go(
    rules: RuleSet, evidence: list[Path], tmp_path: Path
) -> None:
    levels = [Level.INFORMATIONAL, Level.LOW, Level.MEDIUM, Level.HIGH, Level.CRITICAL]
    folder_of: dict[Level, Path] = {}
    results = {}
    for level in levels:
        before = set(tmp_path.glob(f"{PLANS_PREFIX}*"))
        results[level] = _hunt(evidence[:3], rules, tmp_path, min_level=level)
        (folder_of[level],) = set(tmp_path.glob(f"{PLANS_PREFIX}*")) - before
    assert len(results[Level.INFORMATIONAL]) > len(results[Level.HIGH]) > 0  # different rule lists
    assert PLAN_FOLDERS_KEPT == 4
    assert set(tmp_path.glob(f"{PLANS_PREFIX}*")) == {folder_of[level] for level in levels[1:]}
    # the lowest level again: its plans are built anew, and the least recently used folder goes
    assert _hunt(evidence[:3], rules, tmp_path) == results[Level.INFORMATIONAL]
    kept = {folder_of[level] for level in levels if level != Level.LOW}
    assert set(tmp_path.glob(f"{PLANS_PREFIX}*")) == kept
    assert any(folder_of[Level.INFORMATIONAL].iterdir())


def test_an_unusable_cache_folder_costs_nothing_but_time(
    rules: RuleSet, evidence: list[Path], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    assert PlanStore.for_rules(blocker / "cache", b"rules") is None
    assert _hunt(evidence[:3], rules, blocker / "cache") == _hunt(evidence[:3], rules, None)


def test_the_folder_is_named_by_the_rules_and_the_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one = PlanStore.for_rules(tmp_path, b"rules one")
    again = PlanStore.for_rules(tmp_path, b"rules one")
    assert one is not None and again is not None and one.folder == again.folder
    two = PlanStore.for_rules(tmp_path, b"rules two")
    assert two is not None and two.folder != one.folder
    cache_module._plan_code_digest.cache_clear()
    monkeypatch.setattr(cache_module, "_PLAN_MODULES", (*cache_module._PLAN_MODULES, "engine"))
    edited = PlanStore.for_rules(tmp_path, b"rules one")
    cache_module._plan_code_digest.cache_clear()
    assert edited is not None and edited.folder != one.folder


def test_a_plan_is_loaded_only_under_the_key_it_was_stored_for(tmp_path: Path) -> None:
    """Partitions of one channel often share their entries (every Security event id is offered the same
    channel-wide rules), but a plan decides EventID tests for its own event id."""
    store = PlanStore(tmp_path)
    plan = vector.PartitionPlan(entries=(1, 2), always=(2,))
    store.save(("security", 4624), plan)
    assert store.load(("security", 4624)) == plan
    store._path(("security", 4625)).write_bytes(store._path(("security", 4624)).read_bytes())
    assert store.load(("security", 4625)) is None
    store._path(("security", 4625)).write_bytes(pickle.dumps(plan))  # no key with it
    assert store.load(("security", 4625)) is None
    assert store.load(("security", 4688)) is None  # never stored


def test_a_rule_list_pickles_to_the_same_bytes_in_every_process(tmp_path: Path) -> None:
    """Plan folders are named by the pickled rule list: a regex's flags (a set of strings, whose order
    follows the process's hash seed) must not change those bytes from one run to the next."""
    script = (
        "import hashlib, pickle, sys\n"
        "from casefile.hunt import ir\n"
        "node = ir.RegexMatch('CommandLine', 'a.b', frozenset('ims'))\n"
        "data = pickle.dumps(node, pickle.HIGHEST_PROTOCOL)\n"
        "assert pickle.loads(data) == node\n"
        "print(hashlib.sha256(data).hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True, text=True, check=True,
        ).stdout
        for seed in range(6)
    }
    assert len(digests) == 1


def test_the_run_that_compiles_the_rules_names_the_folder_later_runs_use(
    shared_data: Path, tmp_path: Path
) -> None:
    folder = shared_data / "sigma" / "rules" / "windows" / "builtin" / "security"
    built = load_rules([folder], cache_dir=tmp_path)  # compiled here, and cached
    loaded = load_rules([folder], cache_dir=tmp_path)  # what every later run gets
    assert len(built.rules) > 50
    first, later = (PlanStore.for_rules(tmp_path, rules_pickle(r.rules, r)) for r in (built, loaded))
    assert first is not None and later is not None and first.folder == later.folder
    assert built.pickled == loaded.pickled
    # ...and so does a new pickle of the rules, when the cache's own cannot be used (other levels)
    first, later = (
        PlanStore.for_rules(tmp_path, pickle.dumps(r.rules, pickle.HIGHEST_PROTOCOL)) for r in (built, loaded)
    )
    assert first is not None and later is not None and first.folder == later.folder


def test_a_cached_rule_set_is_not_pickled_again_for_the_workers(
    rules: RuleSet, evidence: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers (and the plan folder's name) take the rule cache's own bytes when a hunt uses every rule of
    the set; a level filter leaves another list, which is pickled anew."""
    assert rules.pickled is not None  # loaded from the rule cache
    reference = _hunt(evidence, rules, None)
    assert len(reference) > 20
    dumps = pickle.dumps
    pickled: list[int] = []

    def counting(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        if isinstance(obj, tuple) and obj and isinstance(obj[0], CompiledRule):
            pickled.append(len(obj))
        return dumps(obj, *args, **kwargs)

    monkeypatch.setattr(pickle, "dumps", counting)  # (the module parallel pickles with)
    assert _hunt(evidence, rules, tmp_path, workers=2) == reference
    assert pickled == []
    assert len(_hunt(evidence, rules, tmp_path, workers=2, min_level=Level.HIGH)) < len(reference)
    assert pickled and pickled[0] < len(rules.rules)
    copy = pickle.loads(dumps(rules))
    assert copy.pickled is None and copy == rules  # the rule set's own pickle leaves its source bytes out
