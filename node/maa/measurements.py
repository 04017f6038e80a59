"""What the MAA workflow records for a case (typed; serialised to the case record by node.record).

Built from the science objects (Uptake, Shunt, PartitionPlan) with the rounding the record keeps.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from node.dose.records import RegionDoseRecord, SafetyFlagRecord
from node.imaging.registration import RefinementRecord, RegistrationRecord
from node.maa.partition import TISSUE_DENSITY_G_PER_ML, PartitionPlan
from node.maa.shunt import METHOD as SHUNT_METHOD
from node.maa.shunt import Shunt
from node.maa.uptake import METHOD as UPTAKE_METHOD
from node.maa.uptake import SPILL_MARGIN_MM, TumourUptake, Uptake

__all__ = ["TumourRecord", "UptakeRecord", "ShuntRecord", "PartitionRecord", "TumourPerfusion", "CorrelationRow",
           "PearsonRecord", "MapRecord", "CorrelationRegistration", "CorrelationRecord", "SpectRecord",
           "RegionsRecord", "MaaMeasurements", "LungDoseRecord", "PredictedDoseRecord"]


def _r(v: float | None, n: int = 3) -> float | None:
    return None if v is None else round(float(v), n)


@dataclass(frozen=True)
class TumourRecord:
    volume_ml: float
    tn_ratio: float
    tn_ratio_uncorrected: float  # ratio of mean counts inside the contour, no spill-out compensation
    shell_in_liver_fraction: float
    centre_mm: list[float]  # SPECT/CT patient coordinates

    @classmethod
    def of(cls, t: TumourUptake) -> TumourRecord:
        return cls(round(t.volume_ml, 2), round(t.tn_ratio, 3), round(t.tn_ratio_uncorrected, 3),
                   round(t.shell_in_liver_fraction, 3), [round(v, 1) for v in t.centre_mm])


@dataclass(frozen=True)
class UptakeRecord:
    method: str
    spill_margin_mm: float
    overall_tn_ratio: float | None
    normal_liver_counts_per_ml: float
    normal_liver_core_ml: float
    liver_ml: float
    normal_liver_ml: float
    tumour_ml: float
    tumours: dict[str, TumourRecord]

    @classmethod
    def of(cls, u: Uptake) -> UptakeRecord:
        return cls(UPTAKE_METHOD, SPILL_MARGIN_MM, _r(u.overall_tn, 3), round(u.normal_counts_per_ml, 3),
                   round(u.normal_core_ml, 1), round(u.liver_ml, 1), round(u.normal_liver_ml, 1),
                   round(u.tumour_ml, 2), {t.name: TumourRecord.of(t) for t in u.tumours})


@dataclass(frozen=True)
class ShuntRecord:
    lung_shunt_fraction: float | None
    source: str  # "measured on SPECT", "configuration", or "not available"
    reason: str
    configured_lung_shunt_fraction: float | None
    method: str
    lung_volume_ml: float | None
    lung_core_ml: float | None
    lung_to_normal_liver_concentration: float | None

    @classmethod
    def of(cls, s: Shunt) -> ShuntRecord:
        method = (SHUNT_METHOD if s.source == "measured on SPECT" else
                  "analysis.maa.lung_shunt_fraction from config.toml" if s.source == "configuration" else "")
        return cls(_r(s.lsf, 4), s.source, s.reason, s.configured, method, _r(s.lung_volume_ml, 1),
                   _r(s.lung_core_ml, 1), _r(s.lung_to_liver_concentration, 4))


@dataclass(frozen=True)
class PartitionRecord:
    """The partition-model plan, or why there is none (`computed` False and `reason`)."""

    computed: bool
    reason: str = ""
    model: str = ""
    activity_gbq: float | None = None
    limited_by: str = ""
    activity_normal_liver_limit_gbq: float | None = None
    activity_lung_limit_gbq: float | None = None  # None when LSF = 0 (no lung limit)
    normal_liver_dose_gy: float | None = None
    tumour_dose_gy: float | None = None
    lung_dose_gy: float | None = None
    tumour_doses_gy: dict[str, float | None] = field(default_factory=dict)
    tumour_mass_kg: float | None = None
    normal_liver_mass_kg: float | None = None
    lung_mass_kg: float | None = None
    lung_mass_source: str = ""
    lung_shunt_fraction: float | None = None
    normal_liver_limit_gy: float | None = None
    lung_limit_gy: float | None = None
    densities_g_per_ml: dict[str, float] = field(default_factory=dict)
    sphere_type: str = ""  # the Y-90 microspheres the limits are meant for ("glass", "resin"; stated only)
    limits_basis: str = ""  # where the two dose targets come from (site setting or safety limit)

    @classmethod
    def of(cls, p: PartitionPlan, sphere_type: str = "", limits_basis: str = "") -> PartitionRecord:
        return cls(
            computed=True, model="partition model (Ho 1996), Y-90 complete decay, 49.67 Gy kg/GBq",
            activity_gbq=_r(p.activity_gbq, 3), limited_by=p.limited_by,
            activity_normal_liver_limit_gbq=_r(p.activity_normal_liver_limit_gbq, 3),
            activity_lung_limit_gbq=_r(p.activity_lung_limit_gbq, 3),
            normal_liver_dose_gy=_r(p.normal_liver_dose_gy, 2), tumour_dose_gy=_r(p.tumour_dose_gy, 2),
            lung_dose_gy=_r(p.lung_dose_gy, 2), tumour_doses_gy={k: _r(v, 2) for k, v in p.tumour_doses_gy.items()},
            tumour_mass_kg=_r(p.tumour_mass_kg, 4), normal_liver_mass_kg=_r(p.normal_liver_mass_kg, 4),
            lung_mass_kg=_r(p.lung_mass_kg, 4), lung_mass_source=p.lung_mass_source,
            lung_shunt_fraction=_r(p.lsf, 4), normal_liver_limit_gy=p.normal_liver_limit_gy,
            lung_limit_gy=p.lung_limit_gy,
            densities_g_per_ml={"liver_and_tumour": TISSUE_DENSITY_G_PER_ML} | (
                {} if p.lung_density_g_per_ml is None else {"lung": p.lung_density_g_per_ml}),
            sphere_type=sphere_type, limits_basis=limits_basis)


@dataclass(frozen=True)
class TumourPerfusion:
    """A tumour's mean perfusion values on the maps of one method (None where not measured)."""

    voxels: int
    in_field_fraction: float
    ALP: float | None  # noqa: N815 (the parameters' own abbreviations)
    PVP: float | None  # noqa: N815
    HPI: float | None  # noqa: N815
    #: parameter -> why the value is not measurable: the CT perfusion reports the same lesion's value so
    not_measurable: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CorrelationRow:
    tumour: str
    tn_ratio: float
    perfusion: dict[str, TumourPerfusion]  # map method (e.g. "maxslope") -> values


@dataclass(frozen=True)
class PearsonRecord:
    r: float | None
    n: int


@dataclass(frozen=True)
class MapRecord:
    method: str
    parameter: str
    unit: str
    sop_instance_uid: str


@dataclass(frozen=True)
class CorrelationRegistration:
    initial: RegistrationRecord
    refinement: RefinementRecord
    matrix_4x4: list[list[float]]
    matrix_direction: str


@dataclass(frozen=True)
class CorrelationRecord:
    """MAA uptake next to the CT perfusion maps per tumour, or why it was not done."""

    done: bool
    reason: str = ""
    method: str = ""
    registration: CorrelationRegistration | None = None
    rows: list[CorrelationRow] = field(default_factory=list)
    pearson_r_tn_vs_alp: dict[str, PearsonRecord] = field(default_factory=dict)
    maps: list[MapRecord] = field(default_factory=list)


@dataclass(frozen=True)
class SpectRecord:
    series_instance_uid: str
    sop_instance_uid: str
    tracer: str
    shape_zyx: list[int]
    spacing_mm_zyx: list[float]
    total_counts: float


@dataclass(frozen=True)
class SpectCtRecord:
    series_instance_uid: str
    slices: int


@dataclass(frozen=True)
class RegionsRecord:
    liver_source: str
    tumour_source: str
    assumed_spect_fwhm_mm: float
    segmentation_filter_fwhm_mm: float
    automatic: dict[str, Any]  # thresholds and levels of the automatic segmentation (diagnostics, not reported)


@dataclass(frozen=True)
class MaaMeasurements:
    spect: SpectRecord
    spect_ct: SpectCtRecord | None
    regions: RegionsRecord
    uptake: UptakeRecord
    lung_shunt: ShuntRecord
    partition_model: PartitionRecord
    correlation: CorrelationRecord | None  # None when the case has no perfusion maps
    timings_s: dict[str, float]
    predicted_dose: PredictedDoseRecord | None = None  # None: not asked for ([analysis.maa] predicted_dose)


# ------------------------------------------------------------------------------------- predicted Y-90 dose
@dataclass(frozen=True)
class LungDoseRecord:
    """The lung mean dose the limits apply to, and how it was obtained."""

    mean_gy: float | None
    method: str
    shunted_gbq: float
    mass_kg: float | None
    voxel_mean_gy: float | None  # mean of the voxel dose over the lung VOI (when the lungs are in the SPECT)


@dataclass(frozen=True)
class PredictedDoseRecord:
    """The Y-90 dose predicted from the MAA SPECT/CT for the planned activity, or why there is none."""

    computed: bool
    reason: str = ""
    method: str = ""
    activity_gbq: float | None = None
    activity_source: str = ""
    lung_shunt_fraction: float | None = None
    sphere_type: str = ""
    bilobar: bool = False
    compromised_liver: bool = False
    prior_lung_dose_gy: float = 0.0
    limits_gy: dict[str, float | None] = field(default_factory=dict)
    limits_source: str = ""
    density_calibration: str = ""
    dose_grid: str = ""
    structure_grid: str = ""
    deposited_gbq: float | None = None
    dropped_gbq: float | None = None
    regions: dict[str, RegionDoseRecord] = field(default_factory=dict)
    lungs: LungDoseRecord | None = None
    flags: list[SafetyFlagRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: the activity at which the voxel means of the normal liver and lungs meet their limits (node.dose.safety)
    voxel_max_activity_gbq: float | None = None
    voxel_max_activity_limited_by: str = ""
    rt_dose_sop_instance_uid: str = ""
    rt_plan_sop_instance_uid: str = ""
    structure_set_sop_instance_uid: str = ""
