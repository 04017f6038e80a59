"""Dose figures as the workflows record them (typed; serialised to the case record by node.record): one region's
DVH figures and one safety flag, shared by the MAA's predicted dose, the post-therapy dose and the GSA plan
evaluation so that every dose reads the same in every record and report.
"""
from __future__ import annotations

from dataclasses import dataclass

from node.dose.dvh import RegionDose
from node.dose.safety import SafetyFlag

__all__ = ["RegionDoseRecord", "SafetyFlagRecord"]


def _r(v: float | None, n: int = 3) -> float | None:
    return None if v is None else round(float(v), n)


@dataclass(frozen=True)
class RegionDoseRecord:
    """Dose figures of one region (node.dose.dvh convention). `v_percent`: dose threshold in Gy (as text) ->
    percent of the region receiving at least that dose."""

    kind: str  # "tumour", "non-tumoural liver", "whole liver", "lungs" (GSA plan: "FLS", "ITV", "PTV")
    volume_ml: float
    mean_gy: float | None
    min_gy: float | None
    max_gy: float | None
    d50_gy: float | None
    d70_gy: float | None
    d90_gy: float | None
    v_percent: dict[str, float | None]
    outside_dose_grid_fraction: float

    @classmethod
    def of(cls, kind: str, r: RegionDose, v_gy: tuple[float, ...] = ()) -> RegionDoseRecord:
        return cls(kind, round(r.volume_ml, 2), _r(r.mean_gy, 3), _r(r.min_gy, 3), _r(r.max_gy, 3),
                   _r(r.d50_gy, 3), _r(r.d70_gy, 3), _r(r.d90_gy, 3),
                   {f"{v:g}": _r(r.v_percent(v), 3) for v in v_gy}, round(r.outside_dose_grid_fraction, 4))


@dataclass(frozen=True)
class SafetyFlagRecord:
    severity: str  # "warning" (a limit is crossed) or "note" (between a minimum and a goal)
    quantity: str
    value_gy: float
    limit_gy: float
    message: str

    @classmethod
    def of(cls, f: SafetyFlag) -> SafetyFlagRecord:
        return cls(f.severity, f.quantity, round(f.value_gy, 2), f.limit_gy, f.message)
