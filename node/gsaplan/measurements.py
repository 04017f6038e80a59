"""What the GSA plan evaluation records for a case (typed; serialised to the case record)."""
from __future__ import annotations

from dataclasses import dataclass, field

from node.dose.records import RegionDoseRecord

__all__ = ["PlanDoseRecord", "GsaPlanMeasurements"]


@dataclass(frozen=True)
class PlanDoseRecord:
    """The RT Dose the TPS sent back (and its plan, when received)."""

    sop_instance_uid: str
    series_instance_uid: str
    description: str
    manufacturer: str
    dose_type: str
    summation_type: str
    referenced_plan_uids: list[str]
    plan_received: bool
    plan_label: str
    plan_name: str
    fractions: int | None
    grid_mm: list[float]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class GsaPlanMeasurements:
    dose: PlanDoseRecord
    method: str
    threshold_gy: float
    flv_percent: float  # FLV<threshold>Gy: % of the FLS volume receiving >= threshold
    f_percent: float  # F<threshold>Gy: % of the liver's GSA counts in voxels receiving >= threshold
    flv_warning_percent: float
    regions: dict[str, RegionDoseRecord]  # whole liver, FLS, ITV, PTV
    functional_mean_gy: float  # GSA-weighted mean liver dose
    counts: str  # which GSA image weighted the functional DVH
    timings_s: dict[str, float] = field(default_factory=dict)
