"""Commissioning checks of the GSA plan evaluation against the phantom's analytic plan dose (variant tps-rtdose)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.gsaplan.measurements import GsaPlanMeasurements
from node.workflow import TruthCheck

__all__ = ["phantom_checks", "PERCENT_TOLERANCE", "MEAN_TOLERANCE"]

#: FLV20Gy and F20Gy: percentage points (the node's FLS and registered GSA against the truth's masks and
#: noiseless GSA; the hand-computed truth uses the same dose function)
PERCENT_TOLERANCE = 2.0
MEAN_TOLERANCE = 0.03


def phantom_checks(m: GsaPlanMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
    plan = truth.get("tps_dose")
    if not plan:
        return []
    out = [TruthCheck("GSA plan FLV20Gy (%)", m.flv_percent, plan["flv20_percent"], f"{PERCENT_TOLERANCE:g} pp",
                      abs(m.flv_percent - plan["flv20_percent"]) <= PERCENT_TOLERANCE),
           TruthCheck("GSA plan F20Gy (%)", m.f_percent, plan["f20_percent"], f"{PERCENT_TOLERANCE:g} pp",
                      abs(m.f_percent - plan["f20_percent"]) <= PERCENT_TOLERANCE)]
    for key, name in (("liver", "whole liver"), ("fls", "FLS"), ("itv", "ITV"), ("ptv", "PTV")):
        measured = m.regions[name].mean_gy if name in m.regions else None
        expected = plan["mean_dose_gy"][key]
        out.append(TruthCheck(f"GSA plan mean dose {name}", measured, expected, f"{MEAN_TOLERANCE:.0%}",
                              measured is not None and abs(measured - expected) <= MEAN_TOLERANCE * expected))
    return out
