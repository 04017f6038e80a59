"""Commissioning checks of the MAA workflow against the digital phantom's truth (the `demo` command)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.maa.measurements import MaaMeasurements
from node.workflow import TruthCheck

__all__ = ["phantom_checks", "TN_TOLERANCE", "LIVER_DOSE_TOLERANCE", "REGION_DOSE_TOLERANCE"]

TN_TOLERANCE = 0.10          # MAA tumour/normal ratios: 10 %
#: predicted Y-90 mean dose of the whole and non-tumoural liver against the truth (the issue's 3 %)
LIVER_DOSE_TOLERANCE = 0.03
#: tumours and lungs: the node's automatic regions are not the truth's masks (their edges move the means)
REGION_DOSE_TOLERANCE = 0.05


def phantom_checks(m: MaaMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
    """T/N per tumour: automatic regions are matched to the truth tumours by centre (within their radius)."""
    found = m.uptake.tumours
    out = []
    matched: dict[str, str] = {}  # truth tumour -> the node's region
    for t in truth["tumours"]:
        centre = t["centre_mm"]["maa"]
        best = min(found.values(), default=None,
                   key=lambda f: sum((a - b) ** 2 for a, b in zip(f.centre_mm, centre, strict=True)))
        near = best is not None and sum((a - b) ** 2 for a, b in zip(best.centre_mm, centre, strict=True)) ** 0.5 \
            <= t["radius_mm"]
        v = best.tn_ratio if near and best is not None else None
        tv = t["maa_tn_ratio"]
        out.append(TruthCheck(f"MAA T/N {t['name']}", v, tv, "10 %",
                              v is not None and abs(v - tv) <= TN_TOLERANCE * abs(tv)))
        if near and best is not None:
            matched[t["name"]] = next(n for n, f in found.items() if f is best)
    return out + _dose_checks(m, truth, matched)


def _dose_checks(m: MaaMeasurements, truth: Mapping[str, Any], tumours: dict[str, str]) -> list[TruthCheck]:
    """Predicted mean dose per region against the phantom's LDM truth (variant y90), at the node's activity: the
    truth is for its planned activity and the dose is linear in it."""
    pd, y90 = m.predicted_dose, truth.get("y90")
    if not y90 or pd is None or not pd.computed or pd.activity_gbq is None:
        return []
    p = y90["maa_predicted"]
    scale = pd.activity_gbq / p["planned_activity_gbq"]
    imaged = p["imaged"]
    pairs = [("whole liver", "liver", LIVER_DOSE_TOLERANCE), ("non-tumoural liver", "normal_liver",
                                                               LIVER_DOSE_TOLERANCE)]
    pairs += [(node, name, REGION_DOSE_TOLERANCE) for name, node in tumours.items()]
    out = []
    for node, name, tolerance in pairs:
        region = pd.regions.get(node)
        v = region.mean_gy if region is not None else None
        tv = imaged[name]["mean_gy"] * scale
        out.append(TruthCheck(f"Y-90 predicted mean dose {name}", v, tv, f"{tolerance:.0%}",
                              v is not None and abs(v - tv) <= tolerance * tv))
    lungs = pd.lungs.voxel_mean_gy if pd.lungs is not None else None
    tv = imaged["lungs"]["mean_gy"] * scale
    out.append(TruthCheck("Y-90 predicted mean dose lungs (voxels)", lungs, tv, f"{REGION_DOSE_TOLERANCE:.0%}",
                          lungs is not None and abs(lungs - tv) <= REGION_DOSE_TOLERANCE * tv))
    return out
