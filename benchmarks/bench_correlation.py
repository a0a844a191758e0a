"""Throughput of `casefile.hunt.correlation.correlate` on synthetic base-rule hits.

    .venv/bin/python benchmarks/bench_correlation.py [--detections 500000] [--groups 200]

Builds one correlation of each type over three base rules (real pySigma parsing), generates
hits spread over `--groups` hosts and a day, and prints detections/second per correlation type.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime, timedelta

from sigma.collection import SigmaCollection
from sigma.correlations import SigmaCorrelationRule

from casefile.hunt.correlation import compile_correlation, correlate
from casefile.models import Detection, DetectionKind, Level, RuleInfo

BASE = """
title: A
id: aaaaaaaa-0000-4000-8000-00000000000a
name: rule_a
logsource: {product: windows, service: security}
detection: {sel: {EventID: 1}, condition: sel}
---
title: B
id: bbbbbbbb-0000-4000-8000-00000000000b
name: rule_b
logsource: {product: windows, service: security}
detection: {sel: {EventID: 2}, condition: sel}
---
title: C
id: cccccccc-0000-4000-8000-00000000000c
name: rule_c
logsource: {product: windows, service: security}
detection: {sel: {EventID: 3}, condition: sel}
"""

CORRELATIONS = {
    "event_count": "type: event_count\n    rules: [rule_a]\n    condition: {gte: 50}",
    "value_count": "type: value_count\n    rules: [rule_a]\n    condition: {field: User, gte: 20}",
    "temporal": "type: temporal\n    rules: [rule_a, rule_b, rule_c]",
    "temporal_ordered": "type: temporal_ordered\n    rules: [rule_a, rule_b, rule_c]",
    "value_sum": "type: value_sum\n    rules: [rule_a]\n    condition: {field: Bytes, gte: 100000}",
    "value_avg": "type: value_avg\n    rules: [rule_a]\n    condition: {field: Bytes, gt: 900}",
    "value_percentile": (
        "type: value_percentile\n    rules: [rule_a]\n    condition: {field: Bytes, percentile: 95, gt: 990}"
    ),
    "event_count_lt": "type: event_count\n    rules: [rule_a]\n    condition: {lt: 3}",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=int, default=500_000)
    parser.add_argument("--groups", type=int, default=200)
    args = parser.parse_args()

    docs = [BASE]
    for i, (name, body) in enumerate(CORRELATIONS.items()):
        docs.append(
            f"title: bench {name}\nid: 99999999-0000-4000-8000-{i:012d}\ncorrelation:\n    {body}\n"
            "    group-by: [Computer]\n    timespan: 10m\n"
        )
    collection = SigmaCollection.from_yaml("\n---\n".join(docs))
    compiled = {
        c.info.title.removeprefix("bench "): c
        for c in (compile_correlation(r) for r in collection.rules if isinstance(r, SigmaCorrelationRule))
    }

    rng = random.Random(7)
    infos = [
        RuleInfo(
            id=f"{c * 8}-0000-4000-8000-00000000000{c}", title=c, level=Level.LOW, status=None, author=None
        )
        for c in "abc"
    ]
    start = datetime(2022, 7, 15, tzinfo=UTC)
    detections = []
    for n in range(args.detections):
        host = f"host{rng.randrange(args.groups)}"
        detections.append(
            Detection(
                rule=rng.choice(infos),
                kind=DetectionKind.SIGMA,
                timestamp=start + timedelta(seconds=rng.uniform(0, 86_400)),
                computer=host,
                channel="Security",
                event_id=4625,
                record_id=n,
                file="bench.evtx",
                fields={"Computer": host, "User": f"user{rng.randrange(100)}", "Bytes": rng.randrange(1000)},
            )
        )
    print(f"{len(detections)} base detections over {args.groups} hosts and 24h")
    for name, corr in compiled.items():
        t0 = time.perf_counter()
        hits = correlate([corr], detections)
        elapsed = time.perf_counter() - t0
        print(
            f"{name:18s} {elapsed:7.2f}s {len(detections) / elapsed:10,.0f} detections/s {len(hits):6d} hits"
        )


if __name__ == "__main__":
    main()
