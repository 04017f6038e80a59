"""Everything fixed about the phantom patient: grids per size, poses of each scanner visit, kinetics, HU,
tracer uptake. Anatomy shapes live in :mod:`node.phantom.anatomy`.

Poses map body-frame points to each visit's patient coordinates (``p_series = R p_body + t``). The
planning CT sees the body shifted by PLANNING_SHIFT_MM; each SPECT/CT sees the planning-CT patient through
a known rigid transform (a few degrees, tens of mm), the quantity the node's CT-CT registration recovers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from node.phantom import anatomy as A
from node.phantom.curves import Kinetics
from node.phantom.geometry import Grid, Rigid
from node.phantom.variants import PhantomError

SIZES = ("small", "full")

PLANNING_SHIFT_MM = (5.0, -12.0, 30.0)
PLANNING_TO_GSA = {"rotation_deg": (2.0, -3.0, 4.0), "translation_mm": (22.0, -15.0, 35.0)}
PLANNING_TO_MAA = {"rotation_deg": (-2.0, 2.5, -3.0), "translation_mm": (-18.0, 24.0, -30.0)}

KINETICS = {
    "liver": Kinetics(12.0, 74.0, 0.30),
    "T1": Kinetics(70.0, 8.0, 0.35),   # hypervascular: high ALP, low PVP
    "T2": Kinetics(20.0, 30.0, 0.30),  # hypovascular: total perfusion well below the liver's
    "T3": Kinetics(30.0, 40.0, 0.30),  # mixed
}
BASELINE_HU = {A.AIR: -1000.0, A.FAT: -100.0, A.SOFT_TISSUE: 40.0, A.BONE: 700.0, A.LUNG: -850.0,
               A.SPLEEN: 50.0, A.LIVER: 55.0, A.PORTAL_VEIN: 40.0, A.AORTA: 40.0,
               A.tumour_label(0): 40.0, A.tumour_label(1): 35.0, A.tumour_label(2): 42.0,
               A.DISC: 80.0}
#: CT quantum noise: CT_NOISE_REF_HU (SD) in a voxel of CT_NOISE_REF_VOXEL_MM (the full phantom's perfusion
#: voxel, slice x row x column). At equal dose the noise SD scales as 1/sqrt(voxel volume).
CT_NOISE_REF_HU = 10.0
CT_NOISE_REF_VOXEL_MM = (2.5, 0.78125, 0.78125)


def ct_noise_sd_hu(spacing_mm: tuple[float, float, float]) -> float:
    """Noise SD (HU) of a CT voxel of `spacing_mm`: the reference noise scaled by sqrt(V_ref / V)."""
    ratio = float(np.prod(CT_NOISE_REF_VOXEL_MM)) / float(np.prod(spacing_mm))
    return round(CT_NOISE_REF_HU * float(np.sqrt(ratio)), 3)


MAA_TN_RATIO = {"T1": 8.0, "T2": 3.0, "T3": 5.0}
MAA_LUNG_SHUNT_FRACTION = 0.08
MAA_NORMAL_LIVER_COUNTS = 60.0      # expected counts per SPECT voxel in normal liver (before blur)
GSA_MAX_COUNTS = 400.0              # expected counts in the hottest SPECT voxel (after blur)
SPECT_FWHM_MM = 13.0
SPECT_SUPERSAMPLE = 2               # activity sampled on a 2x finer grid, then voxel-averaged
#: GSA uptake relative to fully functioning liver, outside the liver parenchyma.
GSA_BACKGROUND = {A.AORTA: 0.08, A.PORTAL_VEIN: 0.08, A.SPLEEN: 0.03, A.SOFT_TISSUE: 0.01, A.LUNG: 0.01,
                  A.BONE: 0.01, A.FAT: 0.01, A.DISC: 0.01}

STUDIES = {  # visit -> (StudyDate, StudyTime, StudyDescription, StudyID, AccessionNumber)
    "perfusion": ("20240102", "093000", "CT liver perfusion", "1", "PHA0001"),
    "maa": ("20240109", "100000", "Tc-99m MAA SPECT/CT liver", "2", "PHA0002"),
    "gsa": ("20240112", "110000", "Tc-99m GSA SPECT/CT liver", "3", "PHA0003"),
    "planning": ("20240116", "140000", "RT planning CT liver", "4", "PHA0004"),
}


@dataclass(frozen=True)
class Layout:
    """Grids (each in its own visit's patient coordinates) and poses for one phantom size.

    Grid keys: perfusion, planning, gsa-ct, gsa-nm, maa-ct, maa-nm.
    """

    grids: dict[str, Grid]
    poses: dict[str, Rigid]   # visit (perfusion, planning, gsa, maa) -> body-to-patient pose


def poses() -> dict[str, Rigid]:
    """Body-to-patient pose of every visit (perfusion frame = body frame)."""
    planning = Rigid.from_params(translation_mm=PLANNING_SHIFT_MM)
    return {
        "perfusion": Rigid.identity(),
        "planning": planning,
        "gsa": planning.then(Rigid.from_params(**PLANNING_TO_GSA)),
        "maa": planning.then(Rigid.from_params(**PLANNING_TO_MAA)),
    }


_SHAPES = {  # size -> grid key -> (shape (slices, rows, cols), spacing mm)
    "small": {"perfusion": ((16, 128, 128), (5.0, 3.2, 3.2)),
              "planning": ((48, 128, 128), (5.0, 3.2, 3.2)),
              "ct": ((64, 128, 128), (5.0, 3.2, 3.2)),
              "nm": ((72, 80, 80), (4.42, 4.42, 4.42))},
    "full": {"perfusion": ((40, 512, 512), (2.5, 0.78125, 0.78125)),
             "planning": ((120, 512, 512), (2.5, 0.9765625, 0.9765625)),
             "ct": ((128, 512, 512), (2.5, 0.9765625, 0.9765625)),
             "nm": ((128, 128, 128), (4.42, 4.42, 4.42))},
}
# Grid centres in the body frame (where the anatomy is), carried into each visit's frame and rounded
# there, as a scanner centres its field on the patient.
_CENTRES_BODY = {"perfusion": (0.0, 0.0, 0.0), "planning": (0.0, 0.0, 20.0), "spect": (0.0, 0.0, 75.0)}


def build_layout(size: str, feet_first: bool = False) -> Layout:
    """Grids for `size` ('small' or 'full'); feet-first CTs use the FFS orientation (row = -x)."""
    if size not in SIZES:
        raise PhantomError(f"unknown phantom size {size!r}; choose from {list(SIZES)}")
    p = poses()
    shapes = _SHAPES[size]
    ct_dirs = (np.array([-1.0 if feet_first else 1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))
    centre = {k: np.array(v) for k, v in _CENTRES_BODY.items()}
    grids = {
        "perfusion": Grid.centred(*shapes["perfusion"], p["perfusion"].apply(centre["perfusion"]), *ct_dirs),
        "planning": Grid.centred(*shapes["planning"], p["planning"].apply(centre["planning"]), *ct_dirs),
    }
    for visit in ("gsa", "maa"):
        spect_centre = p[visit].apply(centre["spect"])
        grids[f"{visit}-ct"] = Grid.centred(*shapes["ct"], spect_centre, *ct_dirs)
        grids[f"{visit}-nm"] = Grid.centred(*shapes["nm"], spect_centre)
    return Layout(grids, p)
