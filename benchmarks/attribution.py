"""Leak-free attribution benchmark on ATT&CK v18.1: protocols (a) campaigns, (b) leave-one-report-out,
(c) time split; the engine and a plain TF-IDF ranking side by side. See docs/attribution.md.

Run: .venv/bin/python benchmarks/attribution.py [--limit N] [--cutoff 2024-01-01] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from datetime import date
from pathlib import Path

from casefile.attack import KnowledgeBase, load_knowledge_base
from casefile.attribute.engine import ModelParams
from casefile.attribute.evaluation import (
    Metrics,
    Scored,
    Unit,
    campaign_units,
    fit,
    fit_sponsor,
    group_out_units,
    metrics,
    nll,
    pooled_units,
    report_units,
    sample,
    score_units,
)
from casefile.config import shared_data_dir

MIXTURES = (0.1, 0.3, 0.5, 0.8, 0.9, 0.95)
MIXTURES_USED: list[float] = list(MIXTURES)


def fit_all(train: dict[float, list[Scored]], kb: KnowledgeBase) -> ModelParams:
    """Best (mixture, absence weight, temperature, unknown prior and slope) by log loss on training units
    only, then the sponsor ranking's country-model weight and temperature on the same units."""
    best, best_loss = ModelParams(), float("inf")
    for a, scored in train.items():
        start = ModelParams(mixture=a, time_mixture=1.0 if "time_mixture" in FIXED else 0.5)
        p = fit(scored, start, fixed=FIXED)
        loss = nll(scored, p)
        if loss < best_loss:
            best, best_loss = p, loss
    return fit_sponsor(train[best.mixture], best, kb)


#: constants kept at their defaults (--no-slope fixes unknown_slope at 0, --no-time ignores time of activity)
FIXED: set[str] = set()


def row(name: str, m: Metrics) -> str:
    return (
        f"| {name} | {m.n} | {m.n_unknown} | {m.top1:.1%} | {m.top5:.1%} | {m.top10:.1%} | {m.mrr:.3f} | "
        f"{m.sponsor_top1:.1%} / {m.sponsor_top1_pooled:.1%} (n={m.sponsor_n}) | {m.ece:.3f} | "
        f"{m.unknown_recall:.1%} | "
        f"{m.false_unknown:.1%} |"
    )


def run_protocol(
    name: str, kb: KnowledgeBase, profile_uses: list, train_units: list[Unit], test_units: list[Unit]
) -> dict[str, object]:
    t0 = time.time()
    sponsors = {g.id: g.sponsor for g in kb.groups.values()}
    years = kb.report_years
    params = fit_all(score_units(train_units, profile_uses, MIXTURES_USED, sponsors, years), kb)
    test = score_units(test_units, profile_uses, (params.mixture,), sponsors, years)[params.mixture]
    engine, base = metrics(test, params, kb), metrics(test, params, kb, baseline=True)
    print(f"\n### {name}  {time.time() - t0:.0f}s  fitted: {params}", flush=True)
    print(HEADER)
    print(row("engine", engine))
    print(row("tf-idf", base))
    return {"params": asdict(params), "engine": asdict(engine), "tfidf": asdict(base)}


HEADER = (
    "| ranking | n | n unknown | top-1 | top-5 | top-10 | MRR | sponsor top-1 (sum / combined) | ECE "
    "| unknown recall | false unknown |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--limit", type=int, default=1500, help="max units per unit set (deterministic sample)")
    ap.add_argument("--cutoff", type=date.fromisoformat, default=date(2024, 1, 1))
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-slope", action="store_true", help="ablation: unknown prior independent of size")
    ap.add_argument(
        "--year-out",
        action="store_true",
        help="variant: calibration report units also hold out the group's other reports of the same year",
    )
    ap.add_argument("--no-time", action="store_true", help="ablation: time of activity not weighed")
    ap.add_argument(
        "--pooled-out", action="store_true", help="variant: add campaign-sized unknown calibration units"
    )
    ap.add_argument("--mixtures", type=lambda t: tuple(float(x) for x in t.split(",")), default=MIXTURES)
    args = ap.parse_args(argv)
    if args.no_slope:
        FIXED.add("unknown_slope")
    if args.no_time:
        FIXED.update({"time_mixture", "time_scale"})
    MIXTURES_USED[:] = args.mixtures
    data = shared_data_dir()
    if data is None:
        print("reference data not found: set CASEFILE_SHARED_DATA", file=sys.stderr)
        return 2
    bundle = data / "attack" / "enterprise-attack.json.gz"
    names = {
        "galaxy_dir": data / "misp-galaxy",
        "vendor_map": data / "vendor-naming" / "MicrosoftMapping.json",
    }
    kb = load_knowledge_base([bundle], **names)  # type: ignore[arg-type]
    print(f"ATT&CK {kb.attack_version}: {len(kb.groups)} groups, {len(kb.group_uses)} group uses")
    results: dict[str, object] = {}

    # (a) campaigns; calibration fitted on report units that cite none of the campaigns' reports.
    years = kb.report_years
    tests = campaign_units(kb)
    campaign_reports = frozenset().union(*(u.held_reports for u in tests))
    base_uses = [u for u in kb.group_uses if not (u.reports & campaign_reports)]
    train = sample(report_units(base_uses, report_years=years, year_out=args.year_out), args.limit)
    train += group_out_units(base_uses, report_years=years) + pooled_units(base_uses, report_years=years)
    if args.pooled_out:
        train += pooled_units(base_uses, group_out=True, report_years=years)
    results["a"] = run_protocol("(a) campaigns", kb, list(kb.group_uses), train, tests)
    # (a') the same campaigns, constants fitted on the other campaigns (5 folds by campaign)
    t0 = time.time()
    sponsors = {g.id: g.sponsor for g in kb.groups.values()}
    scored_a = score_units(tests, list(kb.group_uses), MIXTURES_USED, sponsors, years)
    fold_a = [hash_fold(u.name, args.folds) for u in tests]
    params_a = [
        fit_all({m: [s for s, f in zip(ss, fold_a, strict=True) if f != k] for m, ss in scored_a.items()}, kb)
        for k in range(args.folds)
    ]
    engine_a = merge_folds(scored_a, fold_a, params_a, kb, args.folds)
    print(f"\n### (a') campaigns, calibration cross-fitted on other campaigns  {time.time() - t0:.0f}s")
    print(HEADER)
    print(row("engine", engine_a))
    results["a_crossfit"] = {"params": [asdict(p) for p in params_a], "engine": asdict(engine_a)}

    # (b) leave-one-report-out, k folds by report; calibration fitted on the other folds.
    units = sample(report_units(kb.group_uses, report_years=years), args.limit)
    units += group_out_units(kb.group_uses, report_years=years)
    t0 = time.time()
    scored = score_units(units, list(kb.group_uses), MIXTURES_USED, sponsors, years)
    fold_of = [hash_fold(sorted(u.held_reports)[0], args.folds) for u in units]
    fold_params = [
        fit_all({a: [s for s, f in zip(ss, fold_of, strict=True) if f != k] for a, ss in scored.items()}, kb)
        for k in range(args.folds)
    ]
    engine = merge_folds(scored, fold_of, fold_params, kb, args.folds)
    base = metrics(scored[MIXTURES_USED[0]], ModelParams(), kb, baseline=True)
    print(f"\n### (b) leave-one-report-out  {time.time() - t0:.0f}s  fold constants: {fold_params}")
    print(HEADER)
    print(row("engine", engine))
    print(row("tf-idf", base))
    results["b"] = {
        "params": [asdict(p) for p in fold_params],
        "engine": asdict(engine),
        "tfidf": asdict(base),
    }

    # (c) time split: profiles and calibration from relationships created before the cutoff.
    kb_cut = load_knowledge_base([bundle], before=args.cutoff, **names)  # type: ignore[arg-type]
    pre_reports = frozenset().union(*(u.reports for u in kb_cut.group_uses))
    pre_groups = {u.source for u in kb_cut.group_uses}
    later = [u for u in kb.group_uses if u.created >= args.cutoff and u.source in pre_groups]
    tests = campaign_units(kb_cut, truth_kb=kb, since=args.cutoff)
    tests += report_units(later, exclude_reports=pre_reports, report_years=years)
    train = sample(report_units(kb_cut.group_uses, report_years=years, year_out=args.year_out), args.limit)
    train += group_out_units(kb_cut.group_uses, report_years=years)
    train += pooled_units(kb_cut.group_uses, report_years=years)
    if args.pooled_out:
        train += pooled_units(kb_cut.group_uses, group_out=True, report_years=years)
    train += [u for u in campaign_units(kb_cut) if kb.campaigns[u.name.split()[-1]].created < args.cutoff]
    results["c"] = run_protocol(f"(c) time split at {args.cutoff}", kb, list(kb_cut.group_uses), train, tests)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def hash_fold(key: str, folds: int) -> int:
    import hashlib

    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % folds


def merge_folds(
    scored: dict[float, list[Scored]],
    fold_of: list[int],
    params: list[ModelParams],
    kb: KnowledgeBase,
    folds: int,
) -> Metrics:
    """Metrics over all folds, each fold's units judged with the constants fitted on the other folds."""
    per_fold = []
    for k in range(folds):
        test = [s for s, f in zip(scored[params[k].mixture], fold_of, strict=True) if f == k]
        per_fold.append((metrics(test, params[k], kb), len(test)))
    total_n = sum(m.n for m, _ in per_fold) or 1
    total_u = sum(m.n_unknown for m, _ in per_fold) or 1
    total_s = sum(m.sponsor_n for m, _ in per_fold) or 1
    total = sum(c for _, c in per_fold) or 1

    def avg(attr: str, weight: str) -> float:
        w = {"n": total_n, "u": total_u, "s": total_s, "all": total}[weight]
        key = {"n": "n", "u": "n_unknown", "s": "sponsor_n"}
        out = 0.0
        for m, c in per_fold:
            v = getattr(m, attr)
            if v != v:  # nan: no units of that kind in this fold
                continue
            out += v * (c if weight == "all" else getattr(m, key[weight]))
        return out / w

    return Metrics(
        n=total_n,
        n_unknown=sum(m.n_unknown for m, _ in per_fold),
        top1=avg("top1", "n"),
        top5=avg("top5", "n"),
        top10=avg("top10", "n"),
        mrr=avg("mrr", "n"),
        sponsor_top1=avg("sponsor_top1", "s"),
        sponsor_n=sum(m.sponsor_n for m, _ in per_fold),
        sponsor_top1_pooled=avg("sponsor_top1_pooled", "s"),
        ece=avg("ece", "all"),
        unknown_recall=avg("unknown_recall", "u"),
        false_unknown=avg("false_unknown", "n"),
    )


if __name__ == "__main__":
    sys.exit(main())
