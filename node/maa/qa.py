"""Commissioning checks of the MAA workflow against the digital phantom's truth (the `demo` command)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.maa.measurements import MaaMeasurements
from node.workflow import TruthCheck

__all__ = ["phantom_checks", "TN_TOLERANCE"]

TN_TOLERANCE = 0.10          # MAA tumour/normal ratios: 10 %


def phantom_checks(m: MaaMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
    """T/N per tumour: automatic regions are matched to the truth tumours by centre (within their radius)."""
    found = m.uptake.tumours
    out = []
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
    return out
