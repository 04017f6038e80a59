"""Commissioning checks of the GSA workflow against the digital phantom's truth (the `demo` command)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from node.gsa.measurements import GsaMeasurements
from node.workflow import TruthCheck

__all__ = ["phantom_checks"]

VOLUME_TOLERANCE = 0.10      # FLS/ITV/PTV volumes: 10 % (the Dice criteria are checked by the tests)
TRANSLATION_TOLERANCE_MM = 2.0
ROTATION_TOLERANCE_DEG = 1.0


def phantom_checks(m: GsaMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
    out = []
    for name in ("FLS", "ITV", "PTV"):
        v, tv = m.volumes_cm3.get(name), truth["gsa"][f"{name.lower()}_volume_ml"]
        out.append(TruthCheck(f"{name} volume (cm3)", v, tv, "10 %",
                              v is not None and abs(v - tv) <= VOLUME_TOLERANCE * abs(tv)))
    t_true = truth["transforms"]["planning_to_spect_gsa"]
    reg = m.registration
    err_t = max(abs(a - b) for a, b in zip(reg.translation_mm, t_true["translation_mm"], strict=True))
    out.append(TruthCheck("registration translation error (mm)", err_t, 0.0, "2 mm",
                          err_t <= TRANSLATION_TOLERANCE_MM))
    err_r = max(abs(a - b) for a, b in zip(reg.euler_xyz_deg, t_true["rotation_deg_xyz"], strict=True))
    out.append(TruthCheck("registration rotation error (deg)", err_r, 0.0, "1 deg", err_r <= ROTATION_TOLERANCE_DEG))
    return out
