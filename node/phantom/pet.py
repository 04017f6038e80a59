"""PET Image Storage writer (one file per slice) for the post-radioembolization Y-90 PET.

Units BQML, DecayCorrection START (values are the activity concentration at the series start, the usual
clinical reconstruction), Y-90 isotope module with the administration date-time. Unsigned 16-bit pixels with a
per-slice RescaleSlope, as most scanners write them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import PositronEmissionTomographyImageStorage

from node.phantom import dicomio
from node.phantom.dicomio import Patient, Series, code_item
from node.phantom.geometry import Grid

Y90_HALF_LIFE_S = 64.1 * 3600.0
Y90_POSITRON_FRACTION = 3.186e-5


@dataclass(frozen=True)
class PetAcquisition:
    administered_at: datetime
    administered_bq: float
    frame_duration_ms: int
    fwhm_mm: float


def _isotope(acq: PetAcquisition) -> Dataset:
    item = Dataset()
    item.RadionuclideCodeSequence = Sequence([code_item("14691008", "SCT", "^90^Yttrium")])
    item.Radiopharmaceutical = "Y-90 resin microspheres"
    item.RadiopharmaceuticalCodeSequence = Sequence([code_item("764678003", "SCT", "Yttrium^90^ microspheres")])
    item.RadiopharmaceuticalRoute = "Intra-arterial (hepatic artery)"
    item.RadiopharmaceuticalStartTime = dicomio.dicom_time(acq.administered_at)
    item.RadiopharmaceuticalStartDateTime = dicomio.dicom_datetime(acq.administered_at)
    item.RadionuclideTotalDose = f"{acq.administered_bq:.6g}"
    item.RadionuclideHalfLife = f"{Y90_HALF_LIFE_S:g}"
    item.RadionuclidePositronFraction = f"{Y90_POSITRON_FRACTION:g}"
    return item


def write_pet_series(outdir: Path, patient: Patient, series: Series, grid: Grid, bq_per_ml: np.ndarray,
                     acq: PetAcquisition) -> list[Path]:
    """Write the PET volume (Bq/mL at the series start, grid.shape) as one PT file per slice."""
    if bq_per_ml.shape != grid.shape:
        raise ValueError(f"PET volume {bq_per_ml.shape} does not match its grid {grid.shape}")
    outdir.mkdir(parents=True, exist_ok=True)
    elapsed = (series.start - acq.administered_at).total_seconds()
    decay_in_frame = acq.frame_duration_ms / 1000.0 * np.log(2) / Y90_HALF_LIFE_S
    decay_factor = decay_in_frame / (1.0 - np.exp(-decay_in_frame))  # average decay over the frame
    paths = []
    for k in range(grid.shape[0]):
        ds = dicomio.base_dataset(patient, series, PositronEmissionTomographyImageStorage)
        ds.SOPInstanceUID = dicomio.new_uid()
        ds.InstanceNumber = k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.AcquisitionDate = ds.ContentDate = series.start.strftime("%Y%m%d")
        ds.AcquisitionTime = ds.ContentTime = dicomio.dicom_time(series.start)
        # PET Series
        ds.Units = "BQML"
        ds.CountsSource = "EMISSION"
        ds.SeriesType = ["STATIC", "IMAGE"]
        ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM", "RAN", "NORM"]
        ds.RandomsCorrectionMethod = "DLYD"
        ds.DecayCorrection = "START"
        ds.ReconstructionMethod = f"OSEM 3i21s, Gaussian {acq.fwhm_mm:g} mm"
        ds.NumberOfSlices = grid.shape[0]
        ds.AxialAcceptance = "38"
        ds.CollimatorType = "NONE"
        ds.RadiopharmaceuticalInformationSequence = Sequence([_isotope(acq)])
        ds.PatientOrientationCodeSequence = Sequence([code_item("102538003", "SCT", "recumbent")])
        ds.PatientOrientationCodeSequence[0].PatientOrientationModifierCodeSequence = Sequence(
            [code_item("40199007", "SCT", "supine")])
        ds.PatientGantryRelationshipCodeSequence = Sequence([code_item("102540008", "SCT", "headfirst")])
        # PET Image
        ds.FrameReferenceTime = "0"
        ds.ImageIndex = k + 1
        ds.ActualFrameDuration = acq.frame_duration_ms
        ds.DecayFactor = f"{decay_factor:.6g}"
        ds.DoseCalibrationFactor = "1"
        ds.ImageComments = (f"Synthetic digital phantom (liver-node): not a patient; "
                            f"{elapsed / 3600.0:.2f} h after the Y-90 administration")
        # Image Plane + Pixel
        ds.ImagePositionPatient = [f"{v:.2f}" for v in grid.slice_origin(k)]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in (*grid.row_dir, *grid.col_dir)]
        ds.PixelSpacing = [f"{grid.spacing[1]:.6g}", f"{grid.spacing[2]:.6g}"]
        ds.SliceThickness = f"{grid.spacing[0]:.6g}"
        ds.SliceLocation = f"{grid.slice_origin(k)[2]:.2f}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        plane = np.clip(bq_per_ml[k], 0.0, None)
        top = float(plane.max())
        slope = float(f"{top / 65535.0:.6g}") if top > 0 else 1.0
        ds.RescaleSlope = f"{slope:.6g}"
        ds.RescaleIntercept = "0"
        ds.BurnedInAnnotation = "NO"
        ds.PixelData = np.clip(np.rint(plane / slope), 0, 65535).astype(np.uint16).tobytes()
        path = outdir / f"PT{k + 1:05d}.dcm"
        dicomio.write(ds, path)
        paths.append(path)
    return paths
