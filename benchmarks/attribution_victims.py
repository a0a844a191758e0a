"""Does the stated victim country help? Protocol (a) of benchmarks/attribution.py (each ATT&CK campaign
against profiles with every relationship citing its reports removed), scored with and without the victim
country that the campaign's own ATT&CK description names, weighed against the MISP galaxy's CFR victim lists.

Run: .venv/bin/python benchmarks/attribution_victims.py

The victim country is the first country the description names (pycountry's names plus common ones), which
is sometimes the sponsor ("attributed to China") rather than the victim: every campaign's pick is printed
so a reader can judge. The CFR lists come from outside ATT&CK but describe the same public incidents, so
this measures how much a correct victim statement moves the ranking, not an independent replication.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import pycountry

from casefile.attack import load_knowledge_base
from casefile.attack.aliases import COUNTRY_CODES
from casefile.attribute.engine import ModelParams, victim_evidence
from casefile.attribute.evaluation import Scored, _fair_rank, _probs, campaign_units, metrics, score_units
from casefile.attribute.models import Evidence
from casefile.config import shared_data_dir

#: victim_mixture values compared (the engine's default is marked).
MIXTURES = (0.5, 0.7, 0.8, 0.9)


def country_names() -> list[tuple[str, str]]:
    """(name, ISO code), longest names first so "South Korea" wins over "Korea"."""
    names: dict[str, str] = {k: v for k, v in COUNTRY_CODES.items() if len(k) > 3}
    for c in pycountry.countries:
        for attr in ("name", "common_name", "official_name"):
            n = getattr(c, attr, None)
            if n:
                names.setdefault(n.casefold(), c.alpha_2)
    return sorted(names.items(), key=lambda kv: -len(kv[0]))


def first_country(text: str, names: list[tuple[str, str]]) -> str | None:
    low = text.casefold()
    best: tuple[int, str] | None = None
    for name, code in names:
        m = re.search(rf"\b{re.escape(name)}\b", low)
        if m and (best is None or m.start() < best[0]):
            best = (m.start(), code)
    return best[1] if best else None


def descriptions(bundle: Path) -> dict[str, str]:
    opener = gzip.open if bundle.suffix == ".gz" else open
    with opener(bundle, "rt", encoding="utf-8") as fh:
        objects = json.load(fh)["objects"]
    out = {}
    for o in objects:
        if o.get("type") != "campaign":
            continue
        ext = next((r["external_id"] for r in o.get("external_references", []) if r.get("external_id")), None)
        if ext:
            out[ext] = o.get("description", "")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.parse_args(argv)
    shared = shared_data_dir()
    if shared is None:
        print("skipped: no shared data (set CASEFILE_SHARED_DATA)", file=sys.stderr)
        return 0
    bundle = shared / "attack" / "enterprise-attack.json.gz"
    kb = load_knowledge_base(
        [bundle],
        galaxy_dir=shared / "misp-galaxy",
        vendor_map=shared / "vendor-naming" / "MicrosoftMapping.json",
    )
    params = ModelParams()
    names = country_names()
    texts = descriptions(bundle)
    units = [u for u in campaign_units(kb) if u.truth]  # attributed campaigns only: victims need a group
    scored = [
        (s, country)
        for s in score_units(units, kb.group_uses, [params.mixture])[params.mixture]
        if (country := first_country(texts.get(s.unit.name.split()[-1], ""), names)) is not None
    ]
    print(f"{len(scored)} of {len(units)} attributed campaigns name a country in their description")

    def with_victim(s: Scored, country: str, p: ModelParams) -> Scored:
        bonus = victim_evidence(Evidence(victim_country=country), kb, p)
        return replace(
            s, present={g: v + sum(i.weight for i in bonus.get(g, ())) for g, v in s.present.items()}
        )

    print(
        f"\n{'campaign':9} {'victim':6} {'true group(s)':14} {'listed':6} "
        "rank without / with (default mixture)"
    )
    for s, country in scored:
        truth = s.unit.truth
        listed = any(country in kb.groups[g].victims for g in truth if g in kb.groups)
        before = _fair_rank(_probs(s, params)[0], truth)
        after = _fair_rank(_probs(with_victim(s, country, params), params)[0], truth)
        name = s.unit.name.split()[-1]
        print(
            f"{name:9} {country:6} {','.join(sorted(truth)):14} {'yes' if listed else 'no':6} "
            f"{before:g} / {after:g}"
        )
    head = f"{'':28} {'top-1':>6} {'top-5':>6} {'top-10':>6} {'MRR':>6} {'mean rank':>9} "
    head += f"{'sponsor':>8} {'ECE':>6}"
    print("\n" + head)
    rows = [("without victim", params, [s for s, _ in scored])]
    for beta in MIXTURES:
        p = replace(params, victim_mixture=beta)
        mark = " (default)" if beta == params.victim_mixture else ""
        rows.append((f"victim, mixture {beta}{mark}", p, [with_victim(s, c, p) for s, c in scored]))
    for label, p, group in rows:
        m = metrics(group, p, kb)
        mean_rank = sum(_fair_rank(_probs(s, p)[0], s.unit.truth) for s in group) / max(1, len(group))
        print(
            f"{label:28} {m.top1:6.1%} {m.top5:6.1%} {m.top10:6.1%} {m.mrr:6.3f} {mean_rank:9.1f} "
            f"{m.sponsor_top1:8.1%} {m.ece:6.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
