"""Y-90 radioembolization truth (variant `y90`): the activity the MAA predicts, its local-deposition (LDM) dose,
and a post-therapy Y-90 PET/CT whose distribution differs from the MAA's in one lesion.

Written by phantom code only (no node import); every number in truth.json["y90"] comes from the analytic
phantom, its densities (tissue.py) and the noiseless images.

Predicted (MAA) truth, on the MAA SPECT grid:
* physical: the planned activity PLANNED_GBQ goes LSF to the lungs and (1 - LSF) to the liver, shared between
  normal liver (concentration 1) and tumours (T/N) as the MAA is; each compartment's mean dose is
  49.67 x A_c / (rho_c x V_c) (uniform compartments, no blur). This is what the partition model gives.
* imaged: the same activity as the SPECT sees it, by the convention of the MAA-based LDM (EANM practice): the
  noiseless SPECT counts inside the liver VOI scaled to A x (1 - LSF), inside the lung VOI to A x LSF, nothing
  elsewhere; dose per voxel 49.67 x a / m with m the true voxel mass (tissue fractions x densities).
  VOIs and regions are voxel-centre masks on the SPECT grid (liver = the liver envelope; lungs = lung label;
  normal liver = liver minus tumours). Region figures: mean of the voxel doses and D70 (the highest dose
  received by at least 70 % of the voxels). This is what an exact LDM implementation must reproduce.

Delivered (post-therapy PET) truth: ADMINISTERED_GBQ, the same lung shunt, but tumour T3 received
MISMATCH["T3"] x the concentration the MAA predicted (the MAA over-predicted it); PET resolution PET_FWHM_MM.
Its imaged dose (quantitative PET, Bq/mL at the series start, decay-corrected back to the administration)
is computed on the PET grid, carried onto the MAA SPECT grid through the known transform (trilinear) and
read in the same regions: truth.json["y90"]["comparison"] gives delivered - predicted and delivered /
predicted for Dmean and D70 per region that lies (>= 99 %) inside the PET field (the lungs do not: one bed
position over the liver, as usual).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from node.phantom import anatomy as A
from node.phantom import layout as L
from node.phantom import render, tissue, truth
from node.phantom.ct import CtOptions, write_ct_series
from node.phantom.dicomio import Series, Study, new_uid
from node.phantom.geometry import Grid, Rigid
from node.phantom.pet import PetAcquisition, write_pet_series

Y90_GY_KG_PER_GBQ = 49.67
Y90_HALF_LIFE_S = 64.1 * 3600.0
PLANNED_GBQ = 1.8
ADMINISTERED_GBQ = 1.75  # a little stays in the vial and catheter
#: delivered / MAA-predicted activity concentration per tumour (1 where not listed)
MISMATCH = {"T3": 0.55}
ADMINISTERED_AT = datetime(2024, 1, 23, 10, 30, 0)
PET_STUDY = ("20240124", "090000", "Y-90 PET/CT after radioembolization", "5", "PHA0005")
PET_FWHM_MM = 9.0
PET_FRAME_MS = 20 * 60 * 1000
#: Poisson "counts" per voxel of normal liver in the noisy PET (sets its noise: 1/sqrt(150) = 8 %)
PET_COUNTS_NORMAL_LIVER = 150.0
PLANNING_TO_PET = {"rotation_deg": (1.5, -1.0, -2.5), "translation_mm": (12.0, -20.0, 18.0)}
PET_CENTRE_BODY = (0.0, 0.0, 40.0)
_PET_SHAPES = {"small": {"pet": ((64, 96, 96), (4.0, 4.0728, 4.0728)), "ct": ((64, 128, 128), (5.0, 3.2, 3.2))},
               "full": {"pet": ((96, 168, 168), (3.0, 3.3, 3.3)),
                        "ct": ((128, 512, 512), (2.5, 0.9765625, 0.9765625))}}
REGIONS = ("liver", "normal_liver", "T1", "T2", "T3", "lungs")
#: A region is compared (predicted vs delivered) only when this share of it lies inside the PET field.
MIN_COVERAGE = 0.99


def pet_pose() -> Rigid:
    return L.poses()["planning"].then(Rigid.from_params(**PLANNING_TO_PET))


def region_masks(grid: Grid, pose: Rigid) -> dict[str, np.ndarray]:
    """Voxel-centre masks of the dose regions on `grid`."""
    labels = render.label_volume(grid, pose)
    liver = render.sample_volume(grid, pose, A.liver_envelope, bool)
    tumours = {t.name: labels == A.tumour_label(n) for n, t in enumerate(A.TUMOURS)}
    normal = liver.copy()
    for m in tumours.values():
        normal &= ~m
    return {"liver": liver, "normal_liver": normal, **tumours, "lungs": labels == A.LUNG}


def _d_percent(values: np.ndarray, percent: float) -> float:
    """Highest dose received by at least `percent` % of the voxels (equal voxel volumes)."""
    ordered = np.sort(values)[::-1]
    k = int(np.ceil(percent / 100.0 * ordered.size - 1e-9))
    return float(ordered[max(k, 1) - 1])


def region_figures(dose: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {name: {"mean_gy": float(dose[m].mean()), "d70_gy": _d_percent(dose[m], 70.0),
                   "volume_ml_voxels": int(m.sum())} for name, m in masks.items()}


def _occupancy(grid: Grid, pose: Rigid) -> tuple[dict[int, np.ndarray], dict[int, float]]:
    """Fraction of each voxel every label occupies, and the label volumes (mL) on the grid."""
    occ, _ = render.occupancy(grid, pose, L.SPECT_SUPERSAMPLE, tuple(range(A.N_LABELS)))
    return occ, {lab: float(occ[lab].sum()) * grid.voxel_volume_ml for lab in occ}


def _concentrations(volume: dict[int, float], tn: dict[str, float], lsf: float) -> dict[int, float]:
    """MAA-like relative concentration per label: liver 1, tumours T/N, lungs at the concentration giving
    `lsf` (lung / (lung + liver incl. tumours))."""
    conc = {A.LIVER: 1.0, **{A.tumour_label(n): tn[t.name] for n, t in enumerate(A.TUMOURS)}}
    liver_total = sum(c * volume[lab] for lab, c in conc.items())
    conc[A.LUNG] = lsf / (1.0 - lsf) * liver_total / volume[A.LUNG]
    return conc


def _physical(conc: dict[int, float], volume: dict[int, float], total_gbq: float) -> dict[str, dict[str, float]]:
    weight = sum(c * volume[lab] for lab, c in conc.items())
    out = {}
    for lab, c in conc.items():
        gbq = total_gbq * c * volume[lab] / weight
        mass = tissue.TISSUE_DENSITY_G_PER_ML[lab] * volume[lab] / 1000.0
        name = "normal_liver" if lab == A.LIVER else "lungs" if lab == A.LUNG else A.TUMOURS[lab - A.TUMOUR_LABEL0].name
        out[name] = {"activity_gbq": gbq, "mass_kg": mass, "volume_ml": volume[lab],
                     "concentration_gbq_per_ml": gbq / volume[lab], "mean_dose_gy": Y90_GY_KG_PER_GBQ * gbq / mass}
    return out


def maa_truth(grid: Grid, pose: Rigid, expected_counts: np.ndarray, occ: dict[int, np.ndarray],
              volume: dict[int, float]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Predicted Y-90 truth on the MAA SPECT grid (arrays for the npz, block for truth.json)."""
    lsf = L.MAA_LUNG_SHUNT_FRACTION
    conc = _concentrations(volume, dict(L.MAA_TN_RATIO), lsf)
    mass = tissue.voxel_mass_kg(occ, grid.voxel_volume_ml)
    masks = region_masks(grid, pose)
    e = np.asarray(expected_counts, dtype=np.float64)
    activity = np.zeros_like(e)
    liver, lungs = masks["liver"], masks["lungs"]
    activity[liver] = PLANNED_GBQ * (1.0 - lsf) * e[liver] / e[liver].sum()
    activity[lungs] = PLANNED_GBQ * lsf * e[lungs] / e[lungs].sum()
    dose = np.zeros_like(e)
    dose[liver | lungs] = Y90_GY_KG_PER_GBQ * activity[liver | lungs] / mass[liver | lungs]
    unblurred = sum(c * occ[lab] for lab, c in conc.items())
    physical_activity = PLANNED_GBQ * unblurred / sum(c * volume[lab] / grid.voxel_volume_ml
                                                      for lab, c in conc.items())
    arrays = {"activity_gbq": activity.astype(np.float32), "dose_gy": dose.astype(np.float32),
              "mass_kg": mass, "physical_activity_gbq": physical_activity.astype(np.float32),
              **{f"mask_{k}": v for k, v in masks.items()}, "affine_kij_to_patient": grid.affine}
    doc = {"planned_activity_gbq": PLANNED_GBQ, "lung_shunt_fraction": lsf,
           "tn_ratio": dict(L.MAA_TN_RATIO),
           "physical": _physical(conc, volume, PLANNED_GBQ),
           "imaged": region_figures(dose, masks),
           "imaged_activity_in_field_gbq": float(activity.sum()),
           "energy_gy_kg": float((dose * mass).sum())}
    return arrays, doc


def _static_ct(grid: Grid, pose: Rigid, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Unenhanced CT (HU) with the vertebral column's slice-profile partial volume, as the other CTs."""
    labels = render.label_volume(grid, pose)
    table = np.zeros(A.N_LABELS, np.float32)
    for label, hu in L.BASELINE_HU.items():
        table[label] = hu
    hu = table[labels]
    column = (labels == A.BONE) | (labels == A.DISC)
    idx = np.argwhere(column).astype(float)
    if idx.size:
        z_body = pose.inverse().apply(grid.to_patient(idx))[:, 2]
        frac = A.VERTEBRAE.bone_fraction(z_body, float(grid.spacing[0]))
        bone, disc = L.BASELINE_HU[A.BONE], L.BASELINE_HU[A.DISC]
        hu[column] = (disc + (bone - disc) * frac).astype(np.float32)
    if sigma > 0:
        hu = hu + np.float32(sigma) * rng.standard_normal(hu.shape, dtype=np.float32)
    return hu


def delivered_truth(size: str, maa_grid: Grid, maa_pose: Rigid, maa_volume: dict[int, float]
                    ) -> tuple[Grid, np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    """PET grid, expected PET (Bq/mL at the series start), arrays and truth block of the delivered dose."""
    lsf = L.MAA_LUNG_SHUNT_FRACTION
    tn_delivered = {n: v * MISMATCH.get(n, 1.0) for n, v in L.MAA_TN_RATIO.items()}
    # absolute concentrations from the complete organs on the MAA SPECT grid (its field holds liver and lungs)
    volume = maa_volume
    conc = _concentrations(volume, tn_delivered, lsf)
    physical = _physical(conc, volume, ADMINISTERED_GBQ)
    gbq_per_ml = {lab: ADMINISTERED_GBQ * c / sum(cc * volume[ll] for ll, cc in conc.items())
                  for lab, c in conc.items()}
    shape, spacing = _PET_SHAPES[size]["pet"]
    pose = pet_pose()
    grid = Grid.centred(shape, spacing, pose.apply(np.asarray(PET_CENTRE_BODY)))
    occ, _ = render.occupancy(grid, pose, L.SPECT_SUPERSAMPLE, tuple(range(A.N_LABELS)))
    conc_admin = sum(gbq_per_ml[lab] * occ[lab] for lab in gbq_per_ml)  # GBq/mL at administration
    blurred_admin = render.blur(conc_admin, grid, PET_FWHM_MM)
    mass = tissue.voxel_mass_kg(occ, grid.voxel_volume_ml)
    density = mass * 1000.0 / grid.voxel_volume_ml  # g/mL
    activity = blurred_admin * grid.voxel_volume_ml
    dose = np.where(density >= 0.05, Y90_GY_KG_PER_GBQ * activity / np.maximum(mass, 1e-12), 0.0)
    elapsed_s = (_pet_start() - ADMINISTERED_AT).total_seconds()
    at_scan_bq_per_ml = blurred_admin * 1e9 * 2.0 ** (-elapsed_s / Y90_HALF_LIFE_S)
    maa_to_pet = maa_pose.inverse().then(pose)
    on_maa = truth.map_volume(dose, grid, maa_grid, maa_to_pet)
    arrays = {"dose_gy": dose.astype(np.float32), "expected_bq_per_ml": at_scan_bq_per_ml.astype(np.float32),
              "mass_kg": mass, "dose_on_maa_grid_gy": on_maa.astype(np.float32),
              "affine_kij_to_patient": grid.affine}
    doc = {"administered_activity_gbq": ADMINISTERED_GBQ, "administered_at": ADMINISTERED_AT.isoformat(),
           "pet_series_start": _pet_start().isoformat(), "elapsed_h": elapsed_s / 3600.0,
           "decay_factor_to_administration": 2.0 ** (elapsed_s / Y90_HALF_LIFE_S),
           "half_life_h": Y90_HALF_LIFE_S / 3600.0, "pet_fwhm_mm": PET_FWHM_MM,
           "mismatch_delivered_over_predicted_concentration": dict(MISMATCH),
           "lung_shunt_fraction": lsf, "physical": physical,
           "activity_in_pet_field_gbq": float(activity.sum()),
           "energy_gy_kg_on_pet_grid": float((dose * mass).sum())}
    return grid, at_scan_bq_per_ml, arrays, doc


def _pet_start() -> datetime:
    return datetime.strptime(PET_STUDY[0] + PET_STUDY[1], "%Y%m%d%H%M%S")


def comparison(predicted: dict[str, dict[str, float]], delivered: dict[str, dict[str, float]]
               ) -> dict[str, dict[str, float]]:
    out = {}
    for name in predicted:
        p, d = predicted[name], delivered[name]
        out[name] = {"predicted_mean_gy": p["mean_gy"], "delivered_mean_gy": d["mean_gy"],
                     "mean_difference_gy": d["mean_gy"] - p["mean_gy"], "mean_ratio": d["mean_gy"] / p["mean_gy"],
                     "predicted_d70_gy": p["d70_gy"], "delivered_d70_gy": d["d70_gy"],
                     "d70_difference_gy": d["d70_gy"] - p["d70_gy"], "d70_ratio": d["d70_gy"] / p["d70_gy"]}
    return out


def write_y90(ctx: Any) -> None:
    """Write the Y-90 truth and the post-therapy PET/CT visit (called by build.write_phantom for variant y90).

    Reads the MAA expected counts and NM header written before; adds truth.json["y90"], truth/y90_*.npz and
    the folders y90-pet/ (PT) and y90-pet-ct/ (its CT, same study and frame of reference)."""
    outdir: Path = ctx.outdir
    maa_grid, maa_pose = ctx.lay.grids["maa-nm"], ctx.lay.poses["maa"]
    with np.load(outdir / "truth" / "spect_maa_expected.npz") as f:
        expected = f["expected_counts"].astype(np.float64)
    occ, volume = _occupancy(maa_grid, maa_pose)
    pred_arrays, pred_doc = maa_truth(maa_grid, maa_pose, expected, occ, volume)
    np.savez_compressed(outdir / "truth" / "y90_maa_predicted.npz", **pred_arrays)
    pet_grid, at_scan, del_arrays, del_doc = delivered_truth(ctx.size, maa_grid, maa_pose, volume)
    masks = {k[5:]: v for k, v in pred_arrays.items() if k.startswith("mask_")}
    delivered_on_maa = region_figures(del_arrays["dose_on_maa_grid_gy"].astype(np.float64), masks)
    inside_pet = truth.map_volume(np.ones(pet_grid.shape), pet_grid, maa_grid,
                                  maa_pose.inverse().then(pet_pose())) > 0.999
    for name, m in masks.items():
        delivered_on_maa[name]["pet_coverage"] = float(inside_pet[m].mean())
    compared = {n: v for n, v in pred_doc["imaged"].items() if delivered_on_maa[n]["pet_coverage"] >= MIN_COVERAGE}
    np.savez_compressed(outdir / "truth" / "y90_delivered.npz", **del_arrays)

    study = Study(new_uid(), *PET_STUDY)
    frame = new_uid()
    start = _pet_start()
    pet_series = Series(study, new_uid(), 2, "PET Y-90 (Bq/mL) post-radioembolization", "PT", frame, start)
    ct_series = Series(study, new_uid(), 1, "PET/CT CT (Y-90)", "CT", frame, start - timedelta(minutes=3))
    rng = np.random.default_rng([ctx.seed, 21])
    noiseless = "noiseless" in ctx.chosen
    if noiseless:
        image = at_scan
    else:
        k = PET_COUNTS_NORMAL_LIVER / float(np.median(at_scan[render.label_volume(pet_grid, pet_pose()) == A.LIVER]))
        image = rng.poisson(at_scan * k) / k
    acq = PetAcquisition(ADMINISTERED_AT, ADMINISTERED_GBQ * 1e9, PET_FRAME_MS, PET_FWHM_MM)
    write_pet_series(outdir / "y90-pet", ctx.patient, pet_series, pet_grid, image, acq)
    ct_shape, ct_spacing = _PET_SHAPES[ctx.size]["ct"]
    dirs = (np.array([-1.0 if "feet-first" in ctx.chosen else 1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    ct_grid = Grid.centred(ct_shape, ct_spacing, pet_pose().apply(np.asarray(PET_CENTRE_BODY)), *dirs)
    sigma = 0.0 if noiseless else (ctx.noise_override_hu if ctx.noise_override_hu is not None
                                   else L.ct_noise_sd_hu(ct_grid.spacing))
    write_ct_series(outdir / "y90-pet-ct", ctx.patient, ct_series, ct_grid,
                    [_static_ct(ct_grid, pet_pose(), np.random.default_rng([ctx.seed, 22]), sigma)],
                    CtOptions(patient_position=ctx.ct_position, compression=None))
    maa_to_pet = maa_pose.inverse().then(pet_pose())
    maa_nm = pydicom.dcmread(next((outdir / "spect-maa").glob("*.dcm")), stop_before_pixels=True)
    ctx.doc["y90"] = {
        "note": "see node/phantom/y90.py and README.md: predicted (MAA) and delivered (PET) Y-90 truth",
        "maa_predicted": pred_doc,
        "delivered": {**del_doc, "imaged_on_maa_grid": delivered_on_maa},
        "comparison": comparison(compared, delivered_on_maa),
        "not_compared": {n: f"only {delivered_on_maa[n]['pet_coverage']:.0%} inside the PET field"
                         for n in pred_doc["imaged"] if n not in compared},
        "transform_maa_to_pet": {"matrix": np.round(maa_to_pet.matrix, 9).tolist(),
                                 "direction": "maps MAA SPECT/CT patient coordinates to Y-90 PET/CT patient "
                                              "coordinates: p_pet = M @ p_maa"},
        "grids": {"maa-nm": maa_grid.describe(), "pet": pet_grid.describe(), "pet-ct": ct_grid.describe()},
        "study_instance_uid": study.uid, "frame_of_reference_uid": frame,
        "series": {"y90-pet": pet_series.uid, "y90-pet-ct": ct_series.uid},
        "maa_frame_of_reference_uid": str(maa_nm.FrameOfReferenceUID),
        "pet_noise": ("noiseless" if noiseless
                      else f"Poisson, {PET_COUNTS_NORMAL_LIVER:g} counts per normal-liver voxel"),
        "files": {"predicted": "truth/y90_maa_predicted.npz", "delivered": "truth/y90_delivered.npz"},
    }
