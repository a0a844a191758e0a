"""A small, fast run of the leak-free evaluation (the full one is benchmarks/attribution.py)."""

from __future__ import annotations

import math

import pytest

from casefile.attack import KnowledgeBase
from casefile.attribute.engine import ModelParams
from casefile.attribute.evaluation import (
    campaign_units,
    expected_calibration_error,
    fit,
    group_out_units,
    metrics,
    report_units,
    sample,
    score_units,
)


def test_ece_definition() -> None:
    assert expected_calibration_error([(0.9, True), (0.9, False)]) == pytest.approx(0.4)
    assert expected_calibration_error([(0.75, True)] * 3 + [(0.75, False)]) == pytest.approx(0.0)


@pytest.mark.shared
def test_campaign_units_hold_out_their_reports(real_kb: KnowledgeBase) -> None:
    units = campaign_units(real_kb)
    assert len(units) > 40
    attributed = [u for u in units if u.truth]
    assert 15 < len(attributed) < len(units)  # unattributed campaigns test "unknown"
    for u in attributed:
        assert u.held_reports and u.drop_relationships


@pytest.mark.shared
def test_smoke_protocols_a_and_b(real_kb: KnowledgeBase) -> None:
    uses = list(real_kb.group_uses)
    tests = sample(campaign_units(real_kb), 12)
    held = frozenset().union(*(u.held_reports for u in campaign_units(real_kb)))
    base = [u for u in uses if not (u.reports & held)]
    train = sample(report_units(base), 40) + group_out_units(base)[:15]
    params = fit(score_units(train, uses, (0.5,))[0.5], ModelParams(mixture=0.5))
    scored = score_units(tests, uses, (params.mixture,))[params.mixture]
    engine = metrics(scored, params, real_kb)
    plain = metrics(scored, params, real_kb, baseline=True)
    for m in (engine, plain):
        assert m.n + m.n_unknown == len(tests)
        assert 0 <= m.top1 <= m.top5 <= m.top10 <= 1
        assert 0 < m.mrr <= 1 and 0 <= m.ece <= 1
    assert not math.isnan(engine.unknown_recall)
    # leave-one-report-out keeps other citations: most units' groups keep a profile
    lor = sample(report_units(uses), 30)
    lor_scored = score_units(lor, uses, (0.5,))[0.5]
    assert sum(s.unit.truth <= set(s.present) for s in lor_scored) > len(lor) // 2
    assert metrics(lor_scored, ModelParams(), real_kb).top10 > 0.3
