"""The planning RT Structure Set: ROI "Liver" (whole liver) drawn on the planning CT with `rtstruct`."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
from pydicom.filewriter import dcmwrite

import rtstruct
from node import __version__


def write_liver_rtstruct(path: Path, planning_ct_paths: list[Path], liver: np.ndarray) -> Path:
    """Write an RTSTRUCT with ROI 'Liver' for `liver` ([k, row, col] in rtstruct.sort_slices order)."""
    cts = [pydicom.dcmread(p, stop_before_pixels=True) for p in planning_ct_paths]
    roi = rtstruct.RoiMask("Liver", liver, interpreted_type="ORGAN", color=(160, 82, 45),
                           description="whole liver (phantom truth)")
    ds = rtstruct.write_rtstruct(cts, [roi], structure_set_label="PHANTOM", series_description="Planning structures",
                                 series_number=2, manufacturer="liver-node", software_versions=__version__,
                                 operators_name="Phantom^Planner", approval_status="APPROVED")
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path
