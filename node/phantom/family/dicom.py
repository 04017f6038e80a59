"""A family case as DICOM: one classic CT perfusion series (every slice position once per frame) and an RT
Structure Set on its first frame with the truth regions ("Normal liver", "T1".., and, on request, the input
ROIs "Aorta", "Portal vein", "Spleen").

Noisy cases store whole HU (RescaleSlope 1, as scanners do); noiseless cases store 1/16 HU (RescaleSlope
0.0625) so that the curves' tenths of a HU survive.
"""
from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

import rtstruct
from node.phantom.family.case import CaseSpec
from node.phantom.family.render import curves, frames_hu, labels, masks, truth

FAMILY_VERSION = "1"
RESCALE_INTERCEPT = -1024.0
STUDY_DATE = "20240301"
#: truth region -> ROI name in the structure set
REGION_ROI = {"liver_parenchyma": "Normal liver"}
INPUT_ROI = {"aorta": "Aorta", "portal_vein": "Portal vein", "spleen": "Spleen"}


def _slope(spec: CaseSpec) -> float:
    return 1.0 if spec.noise_hu > 0 else 1.0 / 16.0


def _series_template(spec: CaseSpec) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = f"Family^Case{spec.seed}"
    ds.PatientID = f"FAMILY{spec.seed}"
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.StudyDate = STUDY_DATE
    ds.StudyTime = spec.start_time
    ds.StudyDescription = "CT liver perfusion (phantom family)"
    ds.StudyID = "1"
    ds.AccessionNumber = f"FAM{spec.seed:06d}"
    ds.ReferringPhysicianName = ""
    ds.Modality = "CT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 5
    ds.SeriesDescription = "Liver perfusion (phantom family)"
    ds.SeriesDate = STUDY_DATE
    ds.SeriesTime = spec.start_time
    ds.BodyPartExamined = "ABDOMEN"
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "liver-node phantom family"
    ds.ManufacturerModelName = "family"
    ds.SoftwareVersions = FAMILY_VERSION
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = [f"{spec.pixel_mm:.6g}", f"{spec.pixel_mm:.6g}"]
    ds.SliceThickness = f"{spec.slice_mm:.6g}"
    ds.SpacingBetweenSlices = f"{spec.slice_mm:.6g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = spec.rows
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleIntercept = f"{RESCALE_INTERCEPT:g}"
    ds.RescaleSlope = f"{_slope(spec):g}"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "60", "400"
    ds.KVP = "100"
    ds.ContrastBolusAgent = "Iodinated contrast"
    ds.ContrastBolusRoute = "IV"
    ds.BurnedInAnnotation = "NO"
    ds.NumberOfTemporalPositions = len(spec.times_s)
    ds.ImageComments = "Synthetic phantom family case: not a patient"
    return ds


def _stored(hu: np.ndarray, slope: float) -> np.ndarray:
    return np.clip(np.rint((hu - RESCALE_INTERCEPT) / slope), 0, 65535).astype(np.uint16)


def ct_datasets(spec: CaseSpec, label_volume: np.ndarray | None = None) -> list[Dataset]:
    """Every CT instance of the case (pixel data included), frame by frame, slices ascending."""
    lab = labels(spec) if label_volume is None else label_volume
    template = _series_template(spec)
    slope = _slope(spec)
    start = _dt.datetime.strptime(STUDY_DATE + spec.start_time, "%Y%m%d%H%M%S")
    x0 = -(spec.rows - 1) / 2.0 * spec.pixel_mm
    out = []
    for ti, frame in enumerate(frames_hu(spec, lab)):
        when = start + _dt.timedelta(seconds=spec.times_s[ti])
        stored = _stored(frame, slope)
        for k in range(spec.n_slices):
            ds = Dataset()
            ds.update(template)
            ds.SOPInstanceUID = generate_uid()
            ds.InstanceNumber = ti * spec.n_slices + k + 1
            ds.AcquisitionNumber = ti + 1
            ds.TemporalPositionIdentifier = ti + 1
            z = (k + 0.5) * spec.slice_mm
            ds.ImagePositionPatient = [f"{x0:.4f}", f"{x0:.4f}", f"{z:.4f}"]
            ds.SliceLocation = f"{z:.4f}"
            ds.AcquisitionDate = ds.ContentDate = when.strftime("%Y%m%d")
            ds.AcquisitionTime = ds.ContentTime = when.strftime("%H%M%S.%f")
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            meta = FileMetaDataset()
            meta.MediaStorageSOPClassUID = ds.SOPClassUID
            meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            meta.TransferSyntaxUID = ExplicitVRLittleEndian
            meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
            ds.file_meta = meta
            out.append(ds)
    return out


def structure_set(spec: CaseSpec, cts: Sequence[Dataset], label_volume: np.ndarray,
                  input_rois: bool = False) -> Dataset:
    """RTSTRUCT on the first frame: the truth regions (and the input ROIs, eroded in-plane, if asked)."""
    first = [ds for ds in cts if int(ds.AcquisitionNumber) == 1]
    m = masks(spec, label_volume)
    rois = [rtstruct.RoiMask(REGION_ROI["liver_parenchyma"], m["liver_parenchyma"], interpreted_type="ORGAN",
                             color=(160, 82, 45), description="normal liver parenchyma (phantom truth)")]
    rois += [rtstruct.RoiMask(les.name, m[les.name], interpreted_type="GTV", color=(255, 60, 60),
                              description=f"{les.kind} lesion, radius {les.radius_mm:.1f} mm (phantom truth)")
             for les in spec.lesions]
    if input_rois:
        plane = np.zeros((1, 3, 3), bool)
        plane[0, 1, :] = plane[0, :, 1] = True
        rois += [rtstruct.RoiMask(roi, ndimage.binary_erosion(m[name], plane), interpreted_type="ORGAN")
                 for name, roi in INPUT_ROI.items()]
    return rtstruct.write_rtstruct(first, rois, structure_set_label="FAMILY", series_description="Perfusion ROIs",
                                   series_number=6, manufacturer="liver-node phantom family",
                                   software_versions=FAMILY_VERSION, approval_status="APPROVED")


def build(spec: CaseSpec, input_rois: bool = False) -> tuple[list[Dataset], Dataset, dict[str, Any]]:
    """(CT datasets, structure set, truth) of a case, in memory."""
    lab = labels(spec)
    c = curves(spec)
    cts = ct_datasets(spec, lab)
    return cts, structure_set(spec, cts, lab, input_rois), truth(spec, lab, c)


def write(spec: CaseSpec, outdir: Path, input_rois: bool = False) -> Path:
    """Write the case: ct-perfusion/*.dcm, rtstruct.dcm, truth.json. Returns `outdir`."""
    cts, rtss, tr = build(spec, input_rois)
    (outdir / "ct-perfusion").mkdir(parents=True, exist_ok=True)
    for ds in cts:
        pydicom.dcmwrite(outdir / "ct-perfusion" / f"CT{int(ds.InstanceNumber):06d}.dcm", ds, enforce_file_format=True)
    pydicom.dcmwrite(outdir / "rtstruct.dcm", rtss, enforce_file_format=True)
    (outdir / "truth.json").write_text(json.dumps(tr, indent=1))
    return outdir
