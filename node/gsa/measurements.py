"""What the GSA workflow records for a case (typed; serialised to the case record by node.record)."""
from __future__ import annotations

from dataclasses import dataclass, field

from node.imaging.registration import RegistrationRecord

__all__ = ["SeriesRef", "GsaMeasurements"]


@dataclass(frozen=True)
class SeriesRef:
    series_instance_uid: str
    sop_instance_uid: str = ""
    study_instance_uid: str = ""
    slices: int = 0
    voxel_mm_zyx: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class GsaMeasurements:
    """FLS/ITV/PTV on the planning CT: method, parameters, registration quality, volumes."""

    method: str
    fls_threshold_fraction: float
    ptv_margin_mm: float
    spect_filter: str
    spect_max_in_liver: float
    fls_threshold_value: float
    liver_source: str
    liver_derived: bool
    liver_roi_name: str
    liver_note: str
    volumes_cm3: dict[str, float]  # ROI name as written to the RTSTRUCT ("liver" for the liver) -> cm3
    liver_in_spect_fov_fraction: float
    hot_spect_in_liver_fraction: float
    registration: RegistrationRecord
    planning_ct: SeriesRef
    spect: SeriesRef
    timings_s: dict[str, float]
