"""Phantom RT Structure Sets, drawn with `rtstruct`: ROI "Liver" on the planning CT, and the perfusion regions
(normal liver parenchyma and the tumours) on the first time point of the perfusion CT."""
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


#: perfusion_masks.npz key -> ROI name written on the perfusion CT (regional statistics, ROIs named like the truth)
PERFUSION_ROIS = {"liver_parenchyma": "Normal liver", "T1": "T1", "T2": "T2", "T3": "T3"}


def first_time_point(perfusion_paths: list[Path]) -> list[Path]:
    """The classic perfusion CT files of the first time point (earliest acquisition time or temporal position)."""
    def when(ds: pydicom.Dataset) -> float:
        if "AcquisitionTime" in ds:
            return float(str(ds.AcquisitionTime))
        return float(ds.TemporalPositionIdentifier)

    headers = [(p, pydicom.dcmread(p, stop_before_pixels=True)) for p in perfusion_paths]
    t0 = min(when(ds) for _, ds in headers)
    return [p for p, ds in headers if when(ds) == t0]


def write_perfusion_rtstruct(path: Path, perfusion_paths: list[Path], masks: dict[str, np.ndarray]) -> Path:
    """RTSTRUCT on the perfusion CT's first time point with the truth regions ([k, row, col], sort_slices order)."""
    cts = [pydicom.dcmread(p, stop_before_pixels=True) for p in first_time_point(perfusion_paths)]
    rois = [rtstruct.RoiMask(name, masks[key].astype(bool), interpreted_type="ORGAN" if key.startswith("liver")
                             else "GTV", color=(160, 82, 45) if key.startswith("liver") else (255, 60, 60),
                             description=f"{name} (phantom truth region)")
            for key, name in PERFUSION_ROIS.items()]
    ds = rtstruct.write_rtstruct(cts, rois, structure_set_label="PHANTOM PERF", series_description="Perfusion ROIs",
                                 series_number=3, manufacturer="liver-node", software_versions=__version__,
                                 operators_name="Phantom^Radiologist", approval_status="APPROVED")
    path.parent.mkdir(parents=True, exist_ok=True)
    dcmwrite(path, ds, enforce_file_format=True)
    return path
