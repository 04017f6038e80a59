"""Expected SPECT counts (noiseless, blurred) of the GSA and MAA tracers on a SPECT grid."""
from __future__ import annotations

import numpy as np

from node.phantom import anatomy as A
from node.phantom import layout as L
from node.phantom import render
from node.phantom.geometry import Grid, Rigid


def gsa_expected(grid: Grid, pose: Rigid) -> tuple[np.ndarray, dict]:
    """Expected GSA counts: liver function map (tumours cold) + low background, blurred, scaled so that the
    hottest voxel holds GSA_MAX_COUNTS."""
    labels = tuple(L.GSA_BACKGROUND)
    occ, liver_function = render.occupancy(grid, pose, L.SPECT_SUPERSAMPLE, labels, A.gsa_function)
    activity = liver_function + sum(L.GSA_BACKGROUND[lab] * occ[lab] for lab in labels)
    blurred = render.blur(activity, grid, L.SPECT_FWHM_MM)
    scale = L.GSA_MAX_COUNTS / float(blurred.max())
    return blurred * scale, {"counts_per_unit_function": scale}


def maa_expected(grid: Grid, pose: Rigid) -> tuple[np.ndarray, dict]:
    """Expected MAA counts: normal liver 1, tumours T/N, lungs at the concentration giving the target lung
    shunt fraction on the rendered activity (liver includes tumours)."""
    tumour_labels = {A.tumour_label(n): t.name for n, t in enumerate(A.TUMOURS)}
    occ, _ = render.occupancy(grid, pose, L.SPECT_SUPERSAMPLE, (A.LIVER, A.LUNG, *tumour_labels))
    concentration = {A.LIVER: 1.0, **{lab: L.MAA_TN_RATIO[name] for lab, name in tumour_labels.items()}}
    liver_total = sum(c * float(occ[lab].sum()) for lab, c in concentration.items())
    lsf = L.MAA_LUNG_SHUNT_FRACTION
    lung_volume = float(occ[A.LUNG].sum())
    concentration[A.LUNG] = lsf / (1.0 - lsf) * liver_total / lung_volume
    activity = sum(c * occ[lab] for lab, c in concentration.items())
    lung_total = concentration[A.LUNG] * lung_volume
    blurred = render.blur(activity, grid, L.SPECT_FWHM_MM)
    return blurred * L.MAA_NORMAL_LIVER_COUNTS, {
        "lung_concentration_relative": concentration[A.LUNG],
        "lung_shunt_fraction_rendered": lung_total / (lung_total + liver_total),
        "counts_per_unit_concentration": L.MAA_NORMAL_LIVER_COUNTS,
    }
