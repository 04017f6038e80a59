"""NM Image Storage writer for one reconstructed SPECT volume (RECON TOMO multi-frame).

Geometry (PS3.3 C.8.4.15 / dicom-notes 'NM SPECT geometry'): frame f (0-based) lies at
DetectorInformationSequence[0].ImagePositionPatient + f * SpacingBetweenSlices * (row x col); with a negative
SpacingBetweenSlices the frames are stored in the opposite order so that the physical volume is unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import NuclearMedicineImageStorage

from node.phantom import dicomio
from node.phantom.dicomio import Patient, Series, code_item
from node.phantom.geometry import Grid

TC99M_HALF_LIFE_S = 21624.12
TC99M_WINDOW_KEV = (126.45, 154.55)   # 140.5 keV +- 10 %


@dataclass(frozen=True)
class Tracer:
    """Radiopharmaceutical description written into RadiopharmaceuticalInformationSequence."""

    text: str                 # Radiopharmaceutical (0018,0031), e.g. "Tc-99m GSA"
    code: tuple[str, str]     # SNOMED CT (value, meaning)
    dose_mbq: float


GSA = Tracer("Tc-99m GSA", ("446534003", "Technetium^99m Galactosyl Human Serum Albumin Diethylenetriamine"),
             185.0)
MAA = Tracer("Tc-99m MAA", ("85693008", "Technetium Tc^99m^ aggregated albumin"), 150.0)


def _radiopharmaceutical(tracer: Tracer, injected: datetime) -> Dataset:
    item = Dataset()
    item.RadionuclideCodeSequence = Sequence([code_item("72454006", "SCT", "^99m^Technetium")])
    item.Radiopharmaceutical = tracer.text
    item.RadiopharmaceuticalCodeSequence = Sequence([code_item(tracer.code[0], "SCT", tracer.code[1])])
    item.RadiopharmaceuticalRoute = "Intravenous"
    item.AdministrationRouteCodeSequence = Sequence([code_item("47625008", "SCT", "Intravenous route")])
    item.RadiopharmaceuticalStartTime = dicomio.dicom_time(injected)
    item.RadiopharmaceuticalStartDateTime = dicomio.dicom_datetime(injected)
    item.RadionuclideTotalDose = f"{tracer.dose_mbq:g}"
    item.RadionuclideHalfLife = f"{TC99M_HALF_LIFE_S:g}"
    return item


def nm_dataset(patient: Patient, series: Series, grid: Grid, counts: np.ndarray, tracer: Tracer,
               negative_spacing: bool = False) -> Dataset:
    """Build the NM object for `counts` (grid.shape, slices ascending along row x col)."""
    if counts.shape != grid.shape:
        raise ValueError(f"counts shape {counts.shape} does not match grid {grid.shape}")
    n_frames = grid.shape[0]
    ds = dicomio.base_dataset(patient, series, NuclearMedicineImageStorage)
    ds.SOPInstanceUID = dicomio.new_uid()
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    acquired = dicomio.at_offset(series.start, 0.0)
    ds.AcquisitionDate = ds.ContentDate = acquired.strftime("%Y%m%d")
    ds.AcquisitionTime = ds.ContentTime = dicomio.dicom_time(acquired)
    ds.PatientOrientationCodeSequence = Sequence([code_item("102538003", "SCT", "recumbent")])
    ds.PatientOrientationCodeSequence[0].PatientOrientationModifierCodeSequence = Sequence(
        [code_item("40199007", "SCT", "supine")])
    ds.PatientGantryRelationshipCodeSequence = Sequence([code_item("102540008", "SCT", "headfirst")])

    # Image pixel / multi-frame
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.NumberOfFrames = n_frames
    ds.FrameIncrementPointer = Tag("SliceVector")
    ds.SliceVector = list(range(1, n_frames + 1))
    ds.NumberOfSlices = n_frames
    ds.PixelSpacing = [f"{grid.spacing[1]:.6g}", f"{grid.spacing[2]:.6g}"]
    ds.SliceThickness = f"{grid.spacing[0]:.6g}"
    sbs = -grid.spacing[0] if negative_spacing else grid.spacing[0]
    ds.SpacingBetweenSlices = f"{sbs:.6g}"
    first = grid.slice_origin(n_frames - 1) if negative_spacing else grid.slice_origin(0)
    frames = counts[::-1] if negative_spacing else counts

    # NM detector / tomo acquisition / isotope
    ds.NumberOfDetectors = 1
    det = Dataset()
    det.CollimatorGridName = "LEHR"
    det.CollimatorType = "PARA"
    det.FieldOfViewShape = "RECTANGLE"
    det.FieldOfViewDimensions = [533, 387]
    det.ImagePositionPatient = [f"{v:.2f}" for v in first]
    det.ImageOrientationPatient = [f"{v:.6g}" for v in (*grid.row_dir, *grid.col_dir)]
    ds.DetectorInformationSequence = Sequence([det])
    ds.NumberOfRotations = 1
    rot = Dataset()
    rot.StartAngle = "0"
    rot.AngularStep = "6"
    rot.RotationDirection = "CW"
    rot.ScanArc = "360"
    rot.ActualFrameDuration = 20000
    rot.NumberOfFramesInRotation = 60
    rot.TableTraverse = "0"
    rot.TableHeight = "150"
    ds.RotationInformationSequence = Sequence([rot])
    ds.TypeOfDetectorMotion = "STEP AND SHOOT"
    ds.NumberOfEnergyWindows = 1
    window = Dataset()
    rng = Dataset()
    rng.EnergyWindowLowerLimit = f"{TC99M_WINDOW_KEV[0]:g}"
    rng.EnergyWindowUpperLimit = f"{TC99M_WINDOW_KEV[1]:g}"
    window.EnergyWindowRangeSequence = Sequence([rng])
    window.EnergyWindowName = "Tc99m 140keV"
    ds.EnergyWindowInformationSequence = Sequence([window])
    injected = dicomio.at_offset(series.start, -20 * 60.0)
    ds.RadiopharmaceuticalInformationSequence = Sequence([_radiopharmaceutical(tracer, injected)])
    ds.CorrectedImage = ["UNIF", "COR", "ATTN", "SCAT", "DECY"]
    ds.ReconstructionDiameter = f"{grid.spacing[2] * grid.shape[2]:.6g}"
    ds.ConvolutionKernel = "OSEM4i8s G10mm"
    ds.ImageComments = "Synthetic digital phantom (liver-node): not a patient"
    ds.BurnedInAnnotation = "NO"
    ds.AcquisitionContextSequence = Sequence([])
    ds.CountsAccumulated = int(counts.sum())
    ds.PixelData = np.ascontiguousarray(frames.astype(np.uint16)).tobytes()
    return ds


def write_nm(path: Path, ds: Dataset) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dicomio.write(ds, path)
    return path
