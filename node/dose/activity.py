"""Y-90 activity per voxel from an emission image, at the time of administration.

Three sources, one result (:class:`ActivityMap`: GBq per voxel present at administration, which then decays
completely in place, the assumption of the local deposition method):

* **Predicted, from the 99mTc-MAA SPECT** (:func:`predicted_from_maa`). The MAA counts are taken as the shape of
  the Y-90 distribution. Convention (EANM 2021/2022 practice): the counts inside the liver VOI are scaled so that
  they sum to A x (1 - LSF), the counts inside the lung VOI so that they sum to A x LSF, and voxels outside both
  VOIs get no Y-90. Why the VOIs and not the whole field: counts outside the liver are either the SPECT's blur
  (13 mm FWHM: part of the liver's own activity) or extrahepatic MAA (free pertechnetate) that is not where the
  microspheres go; assigning all of A x (1 - LSF) to the liver VOI keeps the whole-liver mean dose equal to the
  partition model's and the administered activity in the field. The share of counts left outside is recorded.
* **Delivered, from a quantitative Y-90 PET** (:func:`delivered_from_pet`): Bq/mL x voxel volume, decay-corrected
  from the time the image values refer to (DecayCorrection START: series start; NONE: mid-frame; ADMIN: none
  needed) back to RadiopharmaceuticalStartDateTime with the Y-90 half-life (64.1 h).
* **Delivered, from a bremsstrahlung SPECT** (:func:`scaled_to_administered`): not quantitative; its counts in a
  VOI (the liver, or the whole field) are scaled to the administered activity (times the fraction that went to
  that VOI, e.g. 1 - LSF).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset

from node.dose.errors import DoseInputError
from node.imaging.dicomtime import parse_da_tm, parse_dt

logger = logging.getLogger(__name__)

__all__ = ["Y90_HALF_LIFE_H", "Y90_HALF_LIFE_S", "ActivityMap", "DecayInfo", "decay_factor", "pet_decay_info",
           "predicted_from_maa", "delivered_from_pet", "scaled_to_administered", "region_mask"]

Y90_HALF_LIFE_H = 64.1
Y90_HALF_LIFE_S = Y90_HALF_LIFE_H * 3600.0
#: A declared half-life further than this from Y-90's means the image is not of Y-90.
HALF_LIFE_TOLERANCE = 0.02
#: Fractional VOI membership from which a voxel belongs to the VOI (partial-volume maps on the emission grid).
VOI_FRACTION = 0.5
#: Warn when more than this share of the MAA counts lies outside the liver and lung VOIs.
OUTSIDE_COUNTS_WARNING = 0.15


@dataclass(frozen=True)
class ActivityMap:
    """Y-90 activity (GBq per voxel) present at administration, on the grid of `grid` (array order z, y, x)."""

    gbq: np.ndarray
    grid: sitk.Image  # geometry only (the emission image itself)
    method: str
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if tuple(self.gbq.shape) != tuple(self.grid.GetSize())[::-1]:
            raise ValueError(f"activity array {self.gbq.shape} does not match its grid {self.grid.GetSize()[::-1]}")

    @property
    def total_gbq(self) -> float:
        return float(self.gbq.sum())


@dataclass(frozen=True)
class DecayInfo:
    """When the image values were true and when the activity was administered."""

    administered_at: datetime
    image_reference_at: datetime
    half_life_s: float
    reference: str  # what image_reference_at is, in words

    @property
    def elapsed_h(self) -> float:
        return (self.image_reference_at - self.administered_at).total_seconds() / 3600.0

    @property
    def factor_to_administration(self) -> float:
        """Multiply image activity by this to get the activity at administration (>= 1)."""
        return decay_factor(self.elapsed_h * 3600.0, self.half_life_s)


def decay_factor(elapsed_s: float, half_life_s: float = Y90_HALF_LIFE_S) -> float:
    """2^(elapsed / half-life): activity at an earlier time from activity measured `elapsed_s` later."""
    return math.pow(2.0, elapsed_s / half_life_s)


def region_mask(voi: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """Boolean VOI on the emission grid: booleans as given, fractions (0..1) from VOI_FRACTION up."""
    if voi is None:
        return np.zeros(shape, dtype=bool)
    voi = np.asarray(voi)
    if voi.shape != shape:
        raise DoseInputError(f"a region mask has shape {voi.shape}, the emission image {shape}")
    return voi if voi.dtype == bool else voi >= VOI_FRACTION


def predicted_from_maa(counts: np.ndarray, grid: sitk.Image, liver: np.ndarray, lungs: np.ndarray | None,
                       planned_gbq: float, lsf: float) -> ActivityMap:
    """Y-90 activity predicted by the MAA SPECT for `planned_gbq` with lung shunt fraction `lsf`.

    `liver` and `lungs` are VOIs on the SPECT grid (bool, or fractions: >= 0.5 counts); where they overlap
    the voxel belongs to the liver. Without a lung VOI (lungs not imaged) the lungs' A x LSF is not in the map
    (it is stated in the notes; the lung dose then comes from the shunt and the lung mass alone).
    """
    if not planned_gbq > 0 or not math.isfinite(planned_gbq):
        raise DoseInputError(f"the planned Y-90 activity must be a positive number of GBq, got {planned_gbq}")
    if not 0.0 <= lsf < 1.0:
        raise DoseInputError(f"the lung shunt fraction must be in [0, 1), got {lsf}")
    counts = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    liver_voi = region_mask(liver, counts.shape)
    lung_voi = region_mask(lungs, counts.shape) & ~liver_voi
    liver_counts = float(counts[liver_voi].sum())
    if liver_counts <= 0:
        raise DoseInputError("the liver VOI holds no MAA counts: the predicted Y-90 distribution is undefined "
                             "(check the liver region and the SPECT)")
    gbq = np.zeros_like(counts)
    gbq[liver_voi] = counts[liver_voi] * (planned_gbq * (1.0 - lsf) / liver_counts)
    notes = []
    lung_counts = float(counts[lung_voi].sum())
    if lsf > 0:
        if lung_counts > 0:
            gbq[lung_voi] = counts[lung_voi] * (planned_gbq * lsf / lung_counts)
        else:
            notes.append(f"no lung VOI with counts on the SPECT: the lungs' {planned_gbq * lsf:.3g} GBq "
                         f"(LSF {lsf:.1%}) are not in the dose map; lung dose from the shunt and lung mass only")
    total = float(counts.sum())
    outside = 1.0 - (liver_counts + lung_counts) / total if total > 0 else 0.0
    notes.append(f"{outside:.1%} of the SPECT counts lie outside the liver and lung VOIs (resolution blur, "
                 "extrahepatic uptake) and are not assigned Y-90")
    if outside > OUTSIDE_COUNTS_WARNING:
        notes.append(f"warning: more than {OUTSIDE_COUNTS_WARNING:.0%} of the MAA counts are outside the liver and "
                     "lungs: check for extrahepatic uptake or a liver VOI that misses part of the liver")
    method = (f"MAA SPECT counts scaled to the planned {planned_gbq:.3g} GBq: liver VOI counts -> "
              f"A x (1 - LSF) = {planned_gbq * (1 - lsf):.3g} GBq, lung VOI counts -> A x LSF = "
              f"{planned_gbq * lsf:.3g} GBq (LSF {lsf:.1%}); nothing outside the two VOIs")
    return ActivityMap(gbq=gbq, grid=grid, method=method, notes=tuple(notes))


def delivered_from_pet(pet_bq_per_ml: sitk.Image, decay: DecayInfo) -> ActivityMap:
    """Y-90 activity at administration from a quantitative PET (Bq/mL), decay-corrected by `decay`.

    Negative reconstructed values are set to 0 (they cannot be deposited); the activity removed is recorded.
    """
    conc = sitk.GetArrayFromImage(pet_bq_per_ml).astype(np.float64)
    voxel_ml = float(np.prod(pet_bq_per_ml.GetSpacing())) / 1000.0
    factor = decay.factor_to_administration
    gbq = conc * (voxel_ml * factor * 1e-9)
    negative = float(-gbq[gbq < 0].sum())
    notes = [f"decay-corrected from {decay.reference} ({decay.image_reference_at:%Y-%m-%d %H:%M}) to the "
             f"administration ({decay.administered_at:%Y-%m-%d %H:%M}): {decay.elapsed_h:.2f} h, x{factor:.4f} "
             f"(half-life {decay.half_life_s / 3600:.1f} h)"]
    if negative > 0:
        np.clip(gbq, 0.0, None, out=gbq)
        notes.append(f"{negative:.3g} GBq of negative reconstructed values set to 0")
    method = (f"quantitative Y-90 PET (Bq/mL x voxel volume), decay-corrected to the administration time "
              f"(x{factor:.4f})")
    return ActivityMap(gbq=gbq, grid=pet_bq_per_ml, method=method, notes=tuple(notes))


def scaled_to_administered(counts: np.ndarray, grid: sitk.Image, voi: np.ndarray | None, administered_gbq: float,
                           fraction: float = 1.0) -> ActivityMap:
    """Activity of a non-quantitative image (bremsstrahlung SPECT): the counts in `voi` (None: the whole field)
    scaled to `administered_gbq` x `fraction` (e.g. 1 - LSF for a liver VOI); no activity outside the VOI."""
    if not administered_gbq > 0 or not math.isfinite(administered_gbq):
        raise DoseInputError(f"the administered Y-90 activity must be a positive number of GBq, got {administered_gbq}")
    if not 0.0 < fraction <= 1.0:
        raise DoseInputError(f"the fraction of the activity in the VOI must be in (0, 1], got {fraction}")
    counts = np.clip(np.asarray(counts, dtype=np.float64), 0.0, None)
    mask = np.ones(counts.shape, dtype=bool) if voi is None else region_mask(voi, counts.shape)
    total = float(counts[mask].sum())
    if total <= 0:
        raise DoseInputError("the image holds no counts in the scaling region: it cannot be scaled to the "
                             "administered activity")
    gbq = np.where(mask, counts * (administered_gbq * fraction / total), 0.0)
    where = "the whole field" if voi is None else "the VOI"
    method = (f"counts in {where} scaled to the administered {administered_gbq:.3g} GBq x {fraction:.3g} "
              "(image not quantitative)")
    return ActivityMap(gbq=gbq, grid=grid, method=method)


# ---- decay information of a PET (PS3.3 C.8.9.1 PET Series, C.8.9.2 PET Isotope) ----

def _parse_dt(value: str) -> datetime:
    parsed = parse_dt(value, keep_offset=True)
    if parsed is None:
        raise ValueError(f"not a DICOM date-time: {value!r}")
    return parsed


def _date_time(ds: Dataset, date_kw: str, time_kw: str) -> datetime | None:
    return _combine(ds.get(date_kw), ds.get(time_kw), f"{date_kw} + {time_kw}")


def _combine(date: object, time: object, what: str) -> datetime | None:
    """A DA and a TM as one datetime; None when either is absent, ValueError when one is unreadable."""
    if not date or not time:
        return None
    parsed = parse_da_tm(date, time)
    if parsed is None:
        raise ValueError(f"not a DICOM date and time: {what} {str(date)!r} {str(time)!r}")
    return parsed


def _naive(a: datetime, b: datetime) -> tuple[datetime, datetime]:
    if (a.tzinfo is None) != (b.tzinfo is None):  # one has an offset, the other not: same local clock assumed
        return a.replace(tzinfo=None), b.replace(tzinfo=None)
    return a, b


def pet_decay_info(ds: Dataset) -> DecayInfo:
    """Administration time, image reference time and half-life of a Y-90 PET image (one slice's header).

    Raises :class:`DoseInputError` when the image is not in Bq/mL, is not of Y-90, or lacks the times.
    """
    units = str(ds.get("Units", "") or "").upper()
    if units != "BQML":
        raise DoseInputError(f"the PET is in {units or 'undeclared units'}, not Bq/mL (Units BQML): it cannot be "
                             "read as activity; scale it to the administered activity instead")
    items = ds.get("RadiopharmaceuticalInformationSequence") or []
    if not items:
        raise DoseInputError("the PET has no RadiopharmaceuticalInformationSequence: administration time unknown")
    item = items[0]
    half_life = float(item.get("RadionuclideHalfLife", 0) or 0) or Y90_HALF_LIFE_S
    if abs(half_life / Y90_HALF_LIFE_S - 1.0) > HALF_LIFE_TOLERANCE:
        raise DoseInputError(f"the PET radionuclide half-life is {half_life / 3600:.3g} h, not Y-90's "
                             f"{Y90_HALF_LIFE_H} h: not a Y-90 PET")
    administered: datetime | None
    try:
        if item.get("RadiopharmaceuticalStartDateTime"):
            administered = _parse_dt(str(item.RadiopharmaceuticalStartDateTime))
        elif item.get("RadiopharmaceuticalStartTime") and ds.get("SeriesDate"):
            administered = _combine(ds.SeriesDate, item.RadiopharmaceuticalStartTime,
                                    "SeriesDate + RadiopharmaceuticalStartTime")
            logger.warning("Y-90 PET: no RadiopharmaceuticalStartDateTime; start time taken on the series date")
        else:
            raise DoseInputError("the PET does not say when the Y-90 was administered "
                                 "(RadiopharmaceuticalStartDateTime): the decay correction is impossible")
        correction = str(ds.get("DecayCorrection", "") or "").upper()
        reference: datetime | None
        if correction == "ADMIN":
            reference, what = administered, "the administration (image already decay-corrected to it)"
        elif correction == "START":
            reference = _date_time(ds, "SeriesDate", "SeriesTime")
            what = "the series start (DecayCorrection START)"
        elif correction == "NONE":
            start = _date_time(ds, "AcquisitionDate", "AcquisitionTime")
            duration_ms = float(ds.get("ActualFrameDuration", 0) or 0)
            reference = None if start is None else start + timedelta(milliseconds=duration_ms / 2.0)
            what = "the middle of the acquisition (not decay-corrected: DecayCorrection NONE)"
        else:
            raise DoseInputError(f"the PET's DecayCorrection is {correction or 'missing'}: the time its values "
                                 "refer to is unknown")
    except ValueError as exc:
        raise DoseInputError(f"the PET has an unreadable date or time: {exc}") from None
    if administered is None or reference is None:
        raise DoseInputError("the PET lacks the series or acquisition date/time its values refer to")
    administered, reference = _naive(administered, reference)
    if reference < administered:
        raise DoseInputError(f"the PET's values refer to {reference}, before the administration at {administered}")
    return DecayInfo(administered_at=administered, image_reference_at=reference, half_life_s=half_life,
                     reference=what)
