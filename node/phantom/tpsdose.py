"""An RT Dose "from the TPS" for the GSA case (variant `tps-rtdose`): an analytic plan dose on the planning CT's
frame of reference, and the functional-liver figures computed by hand from the same function.

The dose (body-frame mm, so it follows the patient into the planning CT):

    s_i(p) = |p - c_i| x (1 - 1/q_i(p))  signed distance to target ellipsoid i along the ray from its centre
                                         (q_i = ellipsoidal radius: q_i < 1 inside); s = min_i s_i
    D(p) = PLATEAU_GY x erfc(s / (sigma sqrt 2)) / 2
           + BATH_GY x exp(-max(s, 0) / BATH_LENGTH_MM) x erfc(-s / (sigma sqrt 2)) / 2

a plateau over the targets (the left-medial liver and the low-function superior right lobe, the bulk of the
ITV), a Gaussian penumbra and a low-dose bath. It is encoded as a TPS writes it: a 3 mm grid of its
own (not the CT's), axial, 32-bit pixels with Dose Grid Scaling, Grid Frame Offset Vector relative, Dose
Summation Type PLAN with a Referenced RT Plan (the plan itself is not sent: "with or without its RT Plan").

Truth (truth.json["tps_dose"]), evaluated with D at the planning-CT voxel centres (not on the dose grid):
FLV20Gy = % of the FLS truth mask with D >= 20 Gy; F20Gy = % of the noiseless mapped GSA (gsa_mapped) of the
liver in voxels with D >= 20 Gy; mean D over liver, FLS, ITV, PTV.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import RTDoseStorage, RTPlanStorage
from scipy.special import erfc

from node.phantom import dicomio
from node.phantom.geometry import Grid

#: (centre, semi-axes) of the target ellipsoids, body-frame mm
TARGETS = (((5.0, -20.0, 20.0), (50.0, 50.0, 50.0)), ((-90.0, 10.0, 55.0), (48.0, 45.0, 35.0)))
PLATEAU_GY = 24.0
PENUMBRA_SIGMA_MM = 6.0
BATH_GY = 4.0
BATH_LENGTH_MM = 35.0
THRESHOLD_GY = 20.0
DOSE_SPACING_MM = 3.0
#: Dose grid extent (mm, x y z) around DOSE_GRID_CENTRE_BODY.
DOSE_GRID_CENTRE_BODY = (-40.0, -5.0, 30.0)
DOSE_EXTENT_MM = (270.0, 240.0, 260.0)


def dose_at(points_body: np.ndarray) -> np.ndarray:
    """The analytic plan dose (Gy) at body-frame points (..., 3)."""
    p = np.asarray(points_body, dtype=float)
    distances = []
    for centre, semi_axes in TARGETS:
        a = np.asarray(semi_axes)
        d = p - np.asarray(centre)
        q = np.sqrt(((d / a) ** 2).sum(axis=-1))
        r = np.sqrt((d * d).sum(axis=-1))
        distances.append(np.where(q > 1e-9, r * (1.0 - 1.0 / np.maximum(q, 1e-9)), -a.min()))
    s = np.min(distances, axis=0)
    k = PENUMBRA_SIGMA_MM * np.sqrt(2.0)
    return (PLATEAU_GY * 0.5 * erfc(s / k)
            + BATH_GY * np.exp(-np.maximum(s, 0.0) / BATH_LENGTH_MM) * 0.5 * erfc(-s / k))


def _on_grid(grid: Grid, to_body: Any) -> np.ndarray:
    out = np.empty(grid.shape)
    for k, points in grid.iter_slices():
        out[k] = dose_at(to_body.apply(points))
    return out


def _rt_dose(ct: Dataset, grid: Grid, dose: np.ndarray, plan_uid: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = RTDoseStorage
    ds.SOPInstanceUID = dicomio.new_uid()
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription",
               "FrameOfReferenceUID"):
        setattr(ds, kw, ct.get(kw, ""))
    ds.Modality = "RTDOSE"
    ds.SeriesInstanceUID = dicomio.new_uid()
    ds.SeriesNumber = 20
    ds.SeriesDescription = "VMAT liver 20 Gy/5 fx plan dose"
    ds.OperatorsName = "Planner^Phantom"
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "Phantom TPS"
    ds.ManufacturerModelName = "analytic dose"
    ds.InstanceNumber = 1
    ds.ContentDate, ds.ContentTime = ct.StudyDate, "160000"
    ds.ImagePositionPatient = [f"{v:.4f}" for v in grid.origin]
    ds.ImageOrientationPatient = [f"{v:g}" for v in (*grid.row_dir, *grid.col_dir)]
    ds.PixelSpacing = [f"{grid.spacing[1]:g}", f"{grid.spacing[2]:g}"]
    ds.SliceThickness = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 32, 32, 31, 0
    ds.NumberOfFrames = grid.shape[0]
    ds.FrameIncrementPointer = Tag("GridFrameOffsetVector")
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseComment = "analytic phantom plan dose"
    ds.GridFrameOffsetVector = [f"{k * grid.spacing[0]:g}" for k in range(grid.shape[0])]
    scale = float(f"{dose.max() / 4.0e9:.8g}")
    ds.DoseGridScaling = f"{scale:.8g}"
    ds.TissueHeterogeneityCorrection = "IMAGE"
    ref = Dataset()
    ref.ReferencedSOPClassUID = RTPlanStorage
    ref.ReferencedSOPInstanceUID = plan_uid
    ds.ReferencedRTPlanSequence = Sequence([ref])
    ds.PixelData = np.rint(dose / scale).astype(np.uint32).tobytes()
    return ds


def write_tps_dose(ctx: Any) -> None:
    """Write tps-rtdose/RD00001.dcm and truth.json["tps_dose"] (after the planning truth masks exist)."""
    outdir: Path = ctx.outdir
    plan_grid = ctx.lay.grids["planning"]
    to_body = ctx.lay.poses["planning"].inverse()
    centre = ctx.lay.poses["planning"].apply(np.asarray(DOSE_GRID_CENTRE_BODY))
    shape = tuple(int(round(e / DOSE_SPACING_MM)) + 1 for e in DOSE_EXTENT_MM[::-1])
    grid = Grid.centred(shape, (DOSE_SPACING_MM,) * 3, centre, tuple(plan_grid.row_dir), tuple(plan_grid.col_dir))
    dose = _on_grid(grid, to_body)
    ct = pydicom.dcmread(next((outdir / "planning-ct").glob("*.dcm")), stop_before_pixels=True)
    plan_uid = dicomio.new_uid()
    ds = _rt_dose(ct, grid, dose, plan_uid)
    (outdir / "tps-rtdose").mkdir(parents=True, exist_ok=True)
    dicomio.write(ds, outdir / "tps-rtdose" / "RD00001.dcm")
    with np.load(outdir / "truth" / "planning_masks.npz") as m:
        masks = {k: m[k] for k in ("liver", "fls", "itv", "ptv")}
        gsa = m["gsa_mapped"].astype(np.float64)
    truth_dose = _on_grid(plan_grid, to_body)
    hot = truth_dose >= THRESHOLD_GY
    liver = masks["liver"]
    ctx.doc["tps_dose"] = {
        "file": "tps-rtdose/RD00001.dcm", "referenced_rt_plan_uid": plan_uid,
        "sop_instance_uid": ds.SOPInstanceUID, "threshold_gy": THRESHOLD_GY,
        "flv20_percent": 100.0 * float(hot[masks["fls"]].mean()),
        "f20_percent": 100.0 * float(gsa[liver & hot].sum() / gsa[liver].sum()),
        "mean_dose_gy": {name: float(truth_dose[mask].mean()) for name, mask in masks.items()},
        "function": {"targets_body_mm": [{"centre": list(c), "semi_axes": list(a)} for c, a in TARGETS],
                     "plateau_gy": PLATEAU_GY, "penumbra_sigma_mm": PENUMBRA_SIGMA_MM, "bath_gy": BATH_GY,
                     "bath_length_mm": BATH_LENGTH_MM},
        "dose_grid": grid.describe(),
        "evaluation": "analytic D at the planning-CT voxel centres of the truth masks (planning_masks.npz); "
                      "F20Gy weights by gsa_mapped",
    }
