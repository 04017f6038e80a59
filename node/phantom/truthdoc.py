"""The truth.json document (see README.md for every key)."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from node.phantom import anatomy as A
from node.phantom import layout as L
from node.phantom import truth
from node.phantom.curves import CurveSet
from node.phantom.geometry import Rigid

#: version 3: the max-slope truth is the textbook definition again (no temporal smoothing of the tissue curve)
PHANTOM_VERSION = 3
MAX_SLOPE_CONVENTION = (
    "textbook (Miles, Blomley): C = HU - baseline; s_i = (C[i+1]-C[i])/(t[i+1]-t[i]) between consecutive samples, "
    "no smoothing; t_spl = time of the maximum spleen sample; arterial intervals t[i+1] <= t_spl, portal intervals "
    "t[i] >= t_spl; ALP = 6000*max arterial s_i / max(C_aorta); PVP = 6000*max portal s_i / max(C_portal); "
    "TLP = ALP+PVP; HPI = 100*ALP/TLP")


def label_name(label: int) -> str:
    if label in A.LABEL_NAMES:
        return A.LABEL_NAMES[label]
    return A.TUMOURS[label - A.TUMOUR_LABEL0].name


def transform_entry(m: Rigid, params: Mapping, src: str, dst: str) -> dict:
    return {
        "matrix": np.round(m.matrix, 9).tolist(),
        "direction": f"maps {src} patient coordinates (mm, LPS) to {dst} patient coordinates: p_dst = M @ p_src",
        "rotation_deg_xyz": list(params["rotation_deg"]), "translation_mm": list(params["translation_mm"]),
        "rotation_convention": "R = Rz(gamma) @ Ry(beta) @ Rx(alpha) about the patient origin, then translation",
        "inverse_matrix": np.round(m.inverse().matrix, 9).tolist(),
    }


def tumour_entries(poses: Mapping[str, Rigid]) -> list[dict]:
    out = []
    for n, t in enumerate(A.TUMOURS):
        centre = np.array(t.centre)
        out.append({
            "name": t.name, "kind": t.kind, "label": A.tumour_label(n), "radius_mm": t.radius_mm,
            "centre_mm": {visit: np.round(pose.apply(centre), 3).tolist() for visit, pose in poses.items()},
            "maa_tn_ratio": L.MAA_TN_RATIO[t.name],
        })
    return out


def perfusion_entry(chosen: frozenset[str], times: np.ndarray, curves: CurveSet, motion: np.ndarray,
                    n_files: int, baseline_hu: dict[str, float], noise_sd_hu: float) -> dict:
    if "temporal-position" in chosen:
        encoding = "TemporalPositionIdentifier (1-based) x TemporalResolution (ms)"
    elif "enhanced-ct" in chosen:
        encoding = "FrameContentSequence FrameAcquisitionDateTime"
    else:
        encoding = "AcquisitionTime/ContentTime"
    return {
        "n_files": n_files, "n_time_points": len(times),
        "time_spacing_s": None if "nonuniform-time" in chosen else float(times[1] - times[0]),
        "time_encoding": encoding,
        "ct_noise_sd_hu": noise_sd_hu,
        "motion_mm_per_frame": motion.tolist(),
        "motion_note": "patient displacement added to every point in perfusion patient coordinates; "
                       "masks are for displacement 0 (frame 0); smooth breathing drift, mostly along z",
        **truth.curve_tables(curves, times, L.KINETICS, baseline_hu),
    }


def rt_entry(rt: Mapping[str, np.ndarray], liver: np.ndarray, voxel_ml: float, spect_info: dict) -> dict:
    return {
        "fls_threshold_fraction_of_max": truth.FLS_THRESHOLD, "ptv_margin_mm": truth.PTV_MARGIN_MM,
        "liver_volume_ml": float(liver.sum()) * voxel_ml,
        "fls_volume_ml": float(rt["fls"].sum()) * voxel_ml,
        "itv_volume_ml": float(rt["itv"].sum()) * voxel_ml,
        "ptv_volume_ml": float(rt["ptv"].sum()) * voxel_ml,
        "spect_fwhm_mm": L.SPECT_FWHM_MM,
        "low_function_region": {"centre_body_mm": list(A.GSA_LOW_FUNCTION.centre),
                                "semi_axes_mm": list(A.GSA_LOW_FUNCTION.semi_axes),
                                "relative_function": A.GSA_LOW_FUNCTION_FACTOR},
        **spect_info,
    }


def masks_entry(plan_uids: list[str]) -> dict:
    return {
        "perfusion": "truth/perfusion_masks.npz",
        "planning": "truth/planning_masks.npz",
        "index_order": "arrays are [slice k, row i, column j]; k ascends along row_dir x col_dir "
                       "(= rtstruct.sort_slices order); affine_kij_to_patient maps (k, i, j, 1) to mm",
        "planning_sop_instance_uids_in_k_order": plan_uids,
        "spect_expected": {"gsa": "truth/spect_gsa_expected.npz", "maa": "truth/spect_maa_expected.npz"},
    }


def transforms_entry(poses: Mapping[str, Rigid]) -> dict:
    plan_inv = poses["planning"].inverse()
    return {
        "planning_to_spect_gsa": transform_entry(plan_inv.then(poses["gsa"]), L.PLANNING_TO_GSA,
                                                 "planning CT", "GSA SPECT/CT"),
        "planning_to_spect_maa": transform_entry(plan_inv.then(poses["maa"]), L.PLANNING_TO_MAA,
                                                 "planning CT", "MAA SPECT/CT"),
        "body_to_visit": {v: np.round(p.matrix, 9).tolist() for v, p in poses.items()},
    }


def labels_entry() -> dict:
    return {str(label): {"name": label_name(label), "baseline_hu": hu} for label, hu in L.BASELINE_HU.items()}
