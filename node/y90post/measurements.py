"""What the post-therapy dosimetry workflow records for a case (typed; serialised to the case record)."""
from __future__ import annotations

from dataclasses import dataclass, field

from node.dose.records import RegionDoseRecord, SafetyFlagRecord
from node.imaging.registration import RegistrationRecord

__all__ = ["ComparisonRecord", "SourceRecord", "Y90PostMeasurements"]


@dataclass(frozen=True)
class ComparisonRecord:
    """Predicted (MAA) vs delivered dose of one region; differences are delivered - predicted (negative: the MAA
    over-predicted), ratios delivered / predicted. None where the region is not (fully) in the post-therapy field."""

    kind: str
    centre_mm: list[float]  # MAA SPECT/CT patient coordinates
    coverage: float  # share of the region inside the post-therapy field of view
    compared: bool
    predicted_mean_gy: float | None
    delivered_mean_gy: float | None
    mean_difference_gy: float | None
    mean_ratio: float | None
    predicted_d70_gy: float | None
    delivered_d70_gy: float | None
    d70_difference_gy: float | None
    d70_ratio: float | None
    delivered: RegionDoseRecord | None = None


@dataclass(frozen=True)
class SourceRecord:
    """The post-therapy image and how its values became activity."""

    modality: str
    series_instance_uid: str
    description: str
    quantitative: bool
    activity_method: str
    administered_gbq: float | None
    administered_source: str
    activity_in_field_gbq: float
    decay_factor_to_administration: float | None
    hours_after_administration: float | None


@dataclass(frozen=True)
class Y90PostMeasurements:
    source: SourceRecord
    registration: RegistrationRecord
    dose_method: str
    predicted_activity_gbq: float  # the MAA plan's activity
    compared_at_gbq: float  # the administered activity both doses are compared at (the prediction scaled to it)
    mismatch_warning: float
    regions: dict[str, ComparisonRecord]
    flags: list[SafetyFlagRecord] = field(default_factory=list)  # the delivered dose against the MAA's limits
    notes: list[str] = field(default_factory=list)
    rt_dose_sop_instance_uid: str = ""
    timings_s: dict[str, float] = field(default_factory=dict)
