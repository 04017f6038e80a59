"""Commissioning checks of the post-therapy dosimetry against the digital phantom's truth (`demo`, variant y90)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.workflow import TruthCheck
from node.y90post.measurements import ComparisonRecord, Y90PostMeasurements

__all__ = ["phantom_checks", "RATIO_TOLERANCE"]

#: delivered / predicted mean-dose ratio of a region against the truth's (absolute)
RATIO_TOLERANCE = 0.05


def _nearest(m: Y90PostMeasurements, centre: list[float], radius: float) -> ComparisonRecord | None:
    tumours = [r for r in m.regions.values() if r.kind == "tumour" and r.compared]
    best = min(tumours, default=None, key=lambda r: sum((a - b) ** 2 for a, b in zip(r.centre_mm, centre,
                                                                                       strict=True)))
    if best is None or sum((a - b) ** 2 for a, b in zip(best.centre_mm, centre, strict=True)) ** 0.5 > radius:
        return None
    return best


def phantom_checks(m: Y90PostMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
    """Per tumour (matched by centre) and the liver: delivered / predicted mean dose against the truth ratio; a
    mismatching tumour must also show the right sign (T3: the MAA over-predicted it)."""
    y90 = truth.get("y90")
    if not y90:
        return []
    comparison = y90["comparison"]
    # The truth compares with the prediction at the planned activity, the node at the administered one (the
    # prediction scaled to it): the truth's ratios in the node's convention, from the truth's own activities.
    planned = y90["maa_predicted"]["planned_activity_gbq"]
    factor = planned / y90["delivered"]["administered_activity_gbq"]
    out = []
    for t in truth["tumours"]:
        expected = comparison.get(t["name"])
        if expected is None:
            continue
        found = _nearest(m, t["centre_mm"]["maa"], t["radius_mm"])
        ratio = found.mean_ratio if found is not None else None
        want = expected["mean_ratio"] * factor
        ok = ratio is not None and abs(ratio - want) <= RATIO_TOLERANCE
        if ok and ratio is not None and abs(want - 1.0) > RATIO_TOLERANCE and (ratio - 1.0) * (want - 1.0) <= 0:
            ok = False  # a real mismatch must be reported with its sign (delivered below or above the prediction)
        out.append(TruthCheck(f"Y-90 delivered/predicted {t['name']}", ratio, want,
                              f"{RATIO_TOLERANCE:g} abs., same sign", ok))
    liver = next((r for r in m.regions.values() if r.kind == "whole liver" and r.compared), None)
    if liver is not None and "liver" in comparison:
        expected = comparison["liver"]["mean_ratio"] * factor
        out.append(TruthCheck("Y-90 delivered/predicted liver", liver.mean_ratio, expected,
                              f"{RATIO_TOLERANCE:g} abs.", liver.mean_ratio is not None
                              and abs(liver.mean_ratio - expected) <= RATIO_TOLERANCE))
    return out
