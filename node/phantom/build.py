"""write_phantom: one synthetic patient as DICOM series plus the ground truth (see README.md)."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np

from node.phantom import anatomy as A
from node.phantom import compress, dicomio, layout as L, nm, render, truth
from node.phantom.ct import CtOptions, write_ct_series
from node.phantom.curves import NONUNIFORM_TIMES_S, UNIFORM_TIMES_S, build_curves, sample
from node.phantom.dicomio import Patient, Series, Study
from node.phantom.enhanced import write_enhanced_ct
from node.phantom.geometry import Grid, Rigid
from node.phantom.rtss import write_liver_rtstruct
from node.phantom.variants import check_variants

logger = logging.getLogger(__name__)

PHANTOM_VERSION = 1
MOTION_MAX_MM = (1.5, 1.5, 6.0)   # per-frame rigid breathing displacement bounds (x, y, z)
#: Region name of each enhancing CT label.
_ENHANCING = {A.AORTA: "aorta", A.PORTAL_VEIN: "portal_vein", A.SPLEEN: "spleen", A.LIVER: "liver",
              **{A.tumour_label(n): t.name for n, t in enumerate(A.TUMOURS)}}


def _studies() -> dict[str, Study]:
    return {visit: Study(dicomio.new_uid(), *values) for visit, values in L.STUDIES.items()}


def _series(study: Study, number: int, description: str, modality: str, frame_uid: str,
            offset_s: float = 0.0) -> Series:
    return Series(study, dicomio.new_uid(), number, description, modality, frame_uid,
                  study.start() + timedelta(seconds=offset_s))


def _hu_table(frame: int | None, sampled: dict[str, np.ndarray]) -> np.ndarray:
    """HU of every label at one time point (None = unenhanced)."""
    table = np.zeros(A.TUMOUR_LABEL0 + len(A.TUMOURS), np.float64)
    for label, hu in L.BASELINE_HU.items():
        table[label] = hu
    if frame is not None:
        for label, name in _ENHANCING.items():
            table[label] += sampled[name][frame]
    return table


def _noisy(hu: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return hu
    return hu + rng.normal(0.0, sigma, hu.shape).astype(np.float32)


def _motion(n_frames: int, seed: int) -> np.ndarray:
    """Per-frame patient displacement (mm); frame 0 is the reference (zero)."""
    rng = np.random.default_rng([seed, 7])
    d = rng.uniform(-1.0, 1.0, (n_frames, 3)) * np.asarray(MOTION_MAX_MM)
    d[0] = 0.0
    return np.round(d, 1)


def _static_ct(grid: Grid, pose: Rigid, rng: np.random.Generator, sigma: float) -> np.ndarray:
    return _noisy(_hu_table(None, {})[render.label_volume(grid, pose)], rng, sigma)


def _instance_numbers(n: int, shuffled: bool, seed: int) -> np.ndarray | None:
    return np.random.default_rng([seed, 11]).permutation(n) + 1 if shuffled else None


def write_phantom(outdir: Path, size: str = "small", seed: int = 0, variants: Sequence[str] = ()) -> Path:
    """Write the phantom patient PHANTOM<seed> under `outdir` and return `outdir`.

    `size` is 'small' (tests) or 'full' (clinical matrix sizes); `variants` are names from VARIANTS.
    The seed drives image noise, Poisson counts, motion and InstanceNumber shuffling; anatomy, kinetics
    and poses are fixed.
    """
    started = time.perf_counter()
    chosen = check_variants(variants)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    lay = L.build_layout(size, feet_first="feet-first" in chosen)
    noiseless = "noiseless" in chosen
    sigma = 0.0 if noiseless else L.CT_NOISE_HU
    patient = Patient(id=f"PHANTOM{seed}", name=f"Phantom^Liver{seed}")
    studies = _studies()
    frames_of_reference = {visit: dicomio.new_uid() for visit in ("perfusion", "planning", "gsa", "maa")}
    ct_position = "FFS" if "feet-first" in chosen else "HFS"
    compression = next((c for c in ("jpeg2000", "jpeg-lossless") if c in chosen), None)
    shuffled = "shuffled-instance-numbers" in chosen
    rng_ct = np.random.default_rng([seed, 1])
    rng_nm = np.random.default_rng([seed, 2])

    # --- perfusion CT -------------------------------------------------------------------------------
    times = np.array(NONUNIFORM_TIMES_S if "nonuniform-time" in chosen else UNIFORM_TIMES_S)
    curves = build_curves(L.KINETICS)
    sampled = {"aorta": sample(curves.t_fine, curves.aorta, times),
               "portal_vein": sample(curves.t_fine, curves.portal_vein, times),
               "spleen": sample(curves.t_fine, curves.spleen, times),
               **{n: sample(curves.t_fine, c, times) for n, c in curves.tissues.items()}}
    grid_p, pose_p = lay.grids["perfusion"], lay.poses["perfusion"]
    motion = _motion(len(times), seed) if "motion" in chosen else np.zeros((len(times), 3))
    static_labels = render.label_volume(grid_p, pose_p)

    def perfusion_volumes() -> Iterator[np.ndarray]:
        for f in range(len(times)):
            labels = static_labels if not motion[f].any() else render.label_volume(grid_p, pose_p, motion[f])
            yield _noisy(_hu_table(f, sampled)[labels].astype(np.float32), rng_ct, sigma)

    perf_series = _series(studies["perfusion"], 1, f"CT liver perfusion {len(times)} phases", "CT",
                          frames_of_reference["perfusion"])
    perf_dir = outdir / "ct-perfusion"
    uniform_spacing = float(times[1] - times[0])
    if "enhanced-ct" in chosen:
        perf_paths = [write_enhanced_ct(perf_dir / "CT_ENHANCED.dcm", patient, perf_series, grid_p,
                                        perfusion_volumes(), times, ct_position,
                                        "jpeg2000" if compression == "jpeg2000" else None)]
    else:
        perf_opts = CtOptions(patient_position=ct_position, contrast=True, times_s=list(times),
                              time_in_temporal_position="temporal-position" in chosen,
                              temporal_spacing_s=uniform_spacing, compression=compression,
                              instance_numbers=_instance_numbers(len(times) * grid_p.shape[0], shuffled, seed))
        perf_paths = write_ct_series(perf_dir, patient, perf_series, grid_p, perfusion_volumes(), perf_opts)

    # --- planning CT + RTSTRUCT --------------------------------------------------------------------
    grid_pl, pose_pl = lay.grids["planning"], lay.poses["planning"]
    plan_series = _series(studies["planning"], 1, "Planning CT", "CT", frames_of_reference["planning"])
    single_opts = CtOptions(patient_position=ct_position, compression=compression,
                            instance_numbers=_instance_numbers(grid_pl.shape[0], shuffled, seed))
    plan_paths = write_ct_series(outdir / "planning-ct", patient, plan_series, grid_pl,
                                 [_static_ct(grid_pl, pose_pl, rng_ct, sigma)], single_opts)
    liver_planning = render.sample_volume(grid_pl, pose_pl, A.liver_envelope, bool)

    # --- SPECT/CT visits ---------------------------------------------------------------------------
    spect_truth = {}
    for visit, tracer in (("gsa", nm.GSA), ("maa", nm.MAA)):
        grid_ct, grid_nm, pose = lay.grids[f"{visit}-ct"], lay.grids[f"{visit}-nm"], lay.poses[visit]
        study, frame_uid = studies[visit], frames_of_reference[visit]
        nm_series = _series(study, 2, f"SPECT {tracer.text} OSEM", "NM", frame_uid)
        ct_series = _series(study, 1, f"SPECT/CT CT ({tracer.text})", "CT", frame_uid, offset_s=-120.0)
        ct_opts = CtOptions(patient_position=ct_position, compression=compression,
                            instance_numbers=_instance_numbers(grid_ct.shape[0], shuffled, seed + 1))
        write_ct_series(outdir / f"spect-{visit}-ct", patient, ct_series, grid_ct,
                        [_static_ct(grid_ct, pose, rng_ct, sigma)], ct_opts)
        expected, info = (_gsa_expected(grid_nm, pose) if visit == "gsa" else _maa_expected(grid_nm, pose))
        counts = np.rint(expected) if noiseless else rng_nm.poisson(expected)
        ds = nm.nm_dataset(patient, nm_series, grid_nm, counts, tracer, "negative-spacing" in chosen)
        nm.write_nm(outdir / f"spect-{visit}" / "NM00001.dcm", ds)
        spect_truth[visit] = {"expected": expected, "info": info, "sop_instance_uid": ds.SOPInstanceUID}

    if compression == "jpeg-lossless":
        compress.jpeg_lossless_inplace(sorted(outdir.glob("*ct*/*.dcm")))

    # --- truth ----------------------------------------------------------------------------------------
    truth_dir = outdir / "truth"
    plan_to_gsa = lay.poses["planning"].inverse().then(lay.poses["gsa"])
    mapped = truth.map_volume(spect_truth["gsa"]["expected"], lay.grids["gsa-nm"], grid_pl, plan_to_gsa)
    rt = truth.rt_volumes(mapped, liver_planning, grid_pl)
    planning_labels = render.label_volume(grid_pl, pose_pl)
    tumour_masks_pl = {t.name: planning_labels == A.tumour_label(n) for n, t in enumerate(A.TUMOURS)}
    plan_uids = _sorted_uids(plan_paths)
    truth.save_masks(truth_dir / "planning_masks.npz", grid_pl,
                     {"liver": liver_planning, **rt, **tumour_masks_pl},
                     labels=planning_labels, gsa_mapped=mapped.astype(np.float32),
                     sop_instance_uids=np.array(plan_uids))
    perf_masks = {
        "aorta": static_labels == A.AORTA, "portal_vein": static_labels == A.PORTAL_VEIN,
        "spleen": static_labels == A.SPLEEN, "liver_parenchyma": static_labels == A.LIVER,
        "liver": render.sample_volume(grid_p, pose_p, A.liver_envelope, bool),
        **{t.name: static_labels == A.tumour_label(n) for n, t in enumerate(A.TUMOURS)},
    }
    truth.save_masks(truth_dir / "perfusion_masks.npz", grid_p, perf_masks, labels=static_labels)
    for visit in ("gsa", "maa"):
        np.savez_compressed(truth_dir / f"spect_{visit}_expected.npz",
                            expected_counts=spect_truth[visit]["expected"].astype(np.float32),
                            affine_kij_to_patient=lay.grids[f"{visit}-nm"].affine)

    rtss_path = write_liver_rtstruct(outdir / "planning-rtstruct" / "RS00001.dcm", plan_paths, liver_planning)

    doc = _truth_document(
        seed=seed, size=size, chosen=chosen, patient=patient, lay=lay, times=times, curves=curves,
        motion=motion, studies=studies, frames_of_reference=frames_of_reference, rt=rt,
        liver_planning=liver_planning, spect_truth=spect_truth, plan_uids=plan_uids,
        series={"ct-perfusion": perf_series, "planning-ct": plan_series},
        n_perfusion_files=len(perf_paths), uniform_spacing=uniform_spacing, rtss_path=rtss_path,
    )
    (outdir / "truth.json").write_text(json.dumps(doc, indent=1))
    logger.info("phantom %s (%s, variants %s) written to %s in %.1f s", patient.id, size,
                sorted(chosen), outdir, time.perf_counter() - started)
    return outdir


def _sorted_uids(paths: list[Path]) -> list[str]:
    """SOPInstanceUIDs of a single-phase CT in slice order along the normal (rtstruct.sort_slices order)."""
    import pydicom

    rows = []
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        rows.append((float(np.asarray(ds.ImagePositionPatient, float) @ np.cross(iop[:3], iop[3:])),
                     ds.SOPInstanceUID))
    return [uid for _, uid in sorted(rows)]


def _gsa_expected(grid: Grid, pose: Rigid) -> tuple[np.ndarray, dict]:
    """Expected GSA counts: liver function map (tumours cold) + low background, blurred, scaled."""
    labels = tuple(L.GSA_BACKGROUND)
    occ, liver_function = render.occupancy(grid, pose, L.SPECT_SUPERSAMPLE, labels, A.gsa_function)
    activity = liver_function + sum(L.GSA_BACKGROUND[lab] * occ[lab] for lab in labels)
    blurred = render.blur(activity, grid, L.SPECT_FWHM_MM)
    scale = L.GSA_MAX_COUNTS / float(blurred.max())
    return blurred * scale, {"counts_per_unit_function": scale}


def _maa_expected(grid: Grid, pose: Rigid) -> tuple[np.ndarray, dict]:
    """Expected MAA counts: normal liver 1, tumours T/N, lungs set for the target lung shunt fraction."""
    tumour_labels = {A.tumour_label(n): t.name for n, t in enumerate(A.TUMOURS)}
    occ, _ = render.occupancy(grid, pose, L.SPECT_SUPERSAMPLE, (A.LIVER, A.LUNG, *tumour_labels))
    concentration = {A.LIVER: 1.0, **{lab: L.MAA_TN_RATIO[name] for lab, name in tumour_labels.items()}}
    liver_total = sum(c * float(occ[lab].sum()) for lab, c in concentration.items())
    lsf = L.MAA_LUNG_SHUNT_FRACTION
    concentration[A.LUNG] = lsf / (1.0 - lsf) * liver_total / float(occ[A.LUNG].sum())
    activity = sum(c * occ[lab] for lab, c in concentration.items())
    lung_total = concentration[A.LUNG] * float(occ[A.LUNG].sum())
    blurred = render.blur(activity, grid, L.SPECT_FWHM_MM)
    scale = L.MAA_NORMAL_LIVER_COUNTS
    return blurred * scale, {
        "lung_concentration_relative": concentration[A.LUNG],
        "lung_shunt_fraction_rendered": lung_total / (lung_total + liver_total),
        "counts_per_unit_concentration": scale,
    }


def _transform_doc(m: Rigid, rotation_deg, translation_mm, src: str, dst: str) -> dict:
    return {
        "matrix": np.round(m.matrix, 9).tolist(),
        "direction": f"maps {src} patient coordinates (mm, LPS) to {dst} patient coordinates: p_dst = M @ p_src",
        "rotation_deg_xyz": list(rotation_deg), "translation_mm": list(translation_mm),
        "rotation_convention": "R = Rz(gamma) @ Ry(beta) @ Rx(alpha) about the patient origin, then translation",
        "inverse_matrix": np.round(m.inverse().matrix, 9).tolist(),
    }


def _truth_document(*, seed, size, chosen, patient, lay, times, curves, motion, studies, frames_of_reference,
                    rt, liver_planning, spect_truth, plan_uids, series, n_perfusion_files,
                    uniform_spacing, rtss_path) -> dict:
    grid_pl = lay.grids["planning"]
    vox_ml = grid_pl.voxel_volume_ml
    baseline = {name: L.BASELINE_HU[label] for label, name in _ENHANCING.items()}
    pose = lay.poses
    tumours = []
    for n, t in enumerate(A.TUMOURS):
        centre = np.array(t.centre)
        tumours.append({
            "name": t.name, "kind": t.kind, "label": A.tumour_label(n), "radius_mm": t.radius_mm,
            "centre_mm": {visit: np.round(pose[visit].apply(centre), 3).tolist() for visit in pose},
            "maa_tn_ratio": L.MAA_TN_RATIO[t.name],
        })
    plan_to = {v: pose["planning"].inverse().then(pose[v]) for v in ("gsa", "maa")}
    params = {"gsa": L.PLANNING_TO_GSA, "maa": L.PLANNING_TO_MAA}
    return {
        "phantom_version": PHANTOM_VERSION, "seed": seed, "size": size, "variants": sorted(chosen),
        "patient_id": patient.id, "patient_name": str(patient.name),
        "coordinates": "DICOM patient coordinates (LPS, mm) of each visit; 'body' = perfusion frame",
        "studies": {v: {"study_instance_uid": s.uid, "frame_of_reference_uid": frames_of_reference[v],
                        "date": s.date} for v, s in studies.items()},
        "series": {name: s.uid for name, s in series.items()},
        "perfusion": {
            "n_files": n_perfusion_files, "n_time_points": len(times),
            "time_spacing_s": uniform_spacing if "nonuniform-time" not in chosen else None,
            "time_encoding": ("TemporalPositionIdentifier (1-based) x TemporalResolution (ms)"
                              if "temporal-position" in chosen else
                              "FrameContentSequence FrameAcquisitionDateTime" if "enhanced-ct" in chosen
                              else "AcquisitionTime/ContentTime"),
            "ct_noise_sd_hu": 0.0 if "noiseless" in chosen else L.CT_NOISE_HU,
            "motion_mm_per_frame": motion.tolist(),
            "motion_note": "patient displacement added to every point in perfusion patient coordinates; "
                           "masks are for displacement 0 (frame 0)",
            **truth.curve_tables(curves, times, L.KINETICS, baseline),
        },
        "max_slope_convention": (
            "C = HU - baseline; s_i = (C[i+1]-C[i])/(t[i+1]-t[i]); t_spl = time of the maximum spleen sample; "
            "arterial intervals t[i+1] <= t_spl, portal intervals t[i] >= t_spl; "
            "ALP = 6000*max arterial s_i / max(C_aorta); PVP = 6000*max portal s_i / max(C_portal); "
            "TLP = ALP+PVP; HPI = 100*ALP/TLP; no smoothing"),
        "tumours": tumours,
        "patient_shift_planning_mm": list(L.PLANNING_SHIFT_MM),
        "patient_shift_note": "planning patient coordinates = perfusion (body) coordinates + this shift",
        "transforms": {
            "planning_to_spect_gsa": _transform_doc(plan_to["gsa"], params["gsa"]["rotation_deg"],
                                                    params["gsa"]["translation_mm"], "planning CT",
                                                    "GSA SPECT/CT"),
            "planning_to_spect_maa": _transform_doc(plan_to["maa"], params["maa"]["rotation_deg"],
                                                    params["maa"]["translation_mm"], "planning CT",
                                                    "MAA SPECT/CT"),
            "body_to_visit": {v: np.round(p.matrix, 9).tolist() for v, p in pose.items()},
        },
        "grids": {k: g.describe() for k, g in lay.grids.items()},
        "gsa": {
            "fls_threshold_fraction_of_max": truth.FLS_THRESHOLD, "ptv_margin_mm": truth.PTV_MARGIN_MM,
            "liver_volume_ml": float(liver_planning.sum()) * vox_ml,
            "fls_volume_ml": float(rt["fls"].sum()) * vox_ml,
            "itv_volume_ml": float(rt["itv"].sum()) * vox_ml,
            "ptv_volume_ml": float(rt["ptv"].sum()) * vox_ml,
            "spect_fwhm_mm": L.SPECT_FWHM_MM,
            "low_function_region": {"centre_body_mm": list(A.GSA_LOW_FUNCTION.centre),
                                    "semi_axes_mm": list(A.GSA_LOW_FUNCTION.semi_axes),
                                    "relative_function": A.GSA_LOW_FUNCTION_FACTOR},
            "nm_sop_instance_uid": spect_truth["gsa"]["sop_instance_uid"],
            **spect_truth["gsa"]["info"],
        },
        "maa": {
            "tn_ratio": dict(L.MAA_TN_RATIO), "lung_shunt_fraction": L.MAA_LUNG_SHUNT_FRACTION,
            "nm_sop_instance_uid": spect_truth["maa"]["sop_instance_uid"],
            "frame_of_reference": "own MAA SPECT/CT (spect-maa + spect-maa-ct), not shared with GSA",
            **spect_truth["maa"]["info"],
        },
        "masks": {
            "perfusion": "truth/perfusion_masks.npz",
            "planning": "truth/planning_masks.npz",
            "index_order": "arrays are [slice k, row i, column j]; k ascends along row_dir x col_dir "
                           "(= rtstruct.sort_slices order); affine_kij_to_patient maps (k, i, j, 1) to mm",
            "planning_sop_instance_uids_in_k_order": plan_uids,
            "spect_expected": {"gsa": "truth/spect_gsa_expected.npz", "maa": "truth/spect_maa_expected.npz"},
        },
        "rtstruct": str(rtss_path.relative_to(rtss_path.parents[1])) if rtss_path else None,
    }
