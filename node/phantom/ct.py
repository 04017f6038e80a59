"""CT Image Storage writer: one file per slice (and per time point for a perfusion series).

Pixel data: unsigned 12-bit stored values, HU = stored - 1024 (RescaleIntercept -1024, slope 1).
"""
from __future__ import annotations

import copy
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom import Dataset
from pydicom.uid import CTImageStorage, JPEG2000Lossless

from node.phantom import dicomio
from node.phantom.dicomio import Patient, Series
from node.phantom.geometry import Grid

RESCALE_INTERCEPT = -1024.0
STORED_MAX = 4095


@dataclass(frozen=True)
class CtOptions:
    """How a CT series is encoded."""

    patient_position: str = "HFS"           # HFS or FFS
    contrast: bool = False                  # adds the Contrast/Bolus module
    times_s: Sequence[float] | None = None  # one per time point; None for a single-phase series
    time_in_temporal_position: bool = False  # time only via TemporalPositionIdentifier
    temporal_spacing_s: float | None = None
    compression: str | None = None          # None, "jpeg2000" (here) or "jpeg-lossless" (native here, dcmcjpeg later)
    instance_numbers: np.ndarray | None = None  # per (time, slice) instance; default time-major order


def hu_to_stored(hu: np.ndarray) -> np.ndarray:
    """Round HU to the stored unsigned 12-bit representation."""
    return np.clip(np.rint(hu - RESCALE_INTERCEPT), 0, STORED_MAX).astype(np.uint16)


def _series_dataset(patient: Patient, series: Series, grid: Grid, opts: CtOptions) -> Dataset:
    ds = dicomio.base_dataset(patient, series, CTImageStorage)
    ds.PatientPosition = opts.patient_position
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImageOrientationPatient = [f"{v:.6g}" for v in (*grid.row_dir, *grid.col_dir)]
    ds.PixelSpacing = [f"{grid.spacing[1]:.6g}", f"{grid.spacing[2]:.6g}"]
    ds.SliceThickness = f"{grid.spacing[0]:.6g}"
    ds.SpacingBetweenSlices = f"{grid.spacing[0]:.6g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = grid.shape[1], grid.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept = f"{RESCALE_INTERCEPT:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter, ds.WindowWidth = "40", "400"
    ds.KVP = "100" if opts.times_s is not None else "120"
    ds.DataCollectionDiameter = "500"
    ds.ReconstructionDiameter = f"{grid.spacing[2] * grid.shape[2]:.6g}"
    ds.GantryDetectorTilt = "0"
    ds.TableHeight = "150"
    ds.RotationDirection = "CW"
    ds.ConvolutionKernel = "STANDARD"
    ds.XRayTubeCurrent = 100
    ds.ExposureTime = 500
    ds.BurnedInAnnotation = "NO"
    ds.ImageComments = "Synthetic digital phantom (liver-node): not a patient"
    if opts.contrast:
        ds.ContrastBolusAgent = "Iopamidol 370 mgI/mL"
        ds.ContrastBolusRoute = "IV"
        ds.ContrastBolusVolume = "40"
        ds.ContrastFlowRate = "5"
        ds.ContrastFlowDuration = "8"
        ds.ContrastBolusIngredient = "IODINE"
        ds.ContrastBolusIngredientConcentration = "370"
        # Injection started 5 s before the first frame.
        ds.ContrastBolusStartTime = dicomio.dicom_time(dicomio.at_offset(series.start, -5.0))
    if opts.times_s is not None and opts.time_in_temporal_position:
        ds.NumberOfTemporalPositions = len(opts.times_s)
        if opts.temporal_spacing_s is not None:
            # Temporal Resolution (0020,0110): time delta between temporal positions, here in ms; the
            # spacing is also stated in plain words for readers that ignore this MR attribute.
            ds.TemporalResolution = f"{opts.temporal_spacing_s * 1000.0:g}"
            ds.ImageComments += f"; temporal positions {opts.temporal_spacing_s:g} s apart"
    return ds


def write_ct_series(outdir: Path, patient: Patient, series: Series, grid: Grid,
                    volumes: Iterable[np.ndarray], opts: CtOptions) -> list[Path]:
    """Write one CT series. `volumes` yields one HU volume (grid.shape) per time point.

    Files are named CT<InstanceNumber>.dcm. Returns the written paths.
    """
    outdir.mkdir(parents=True, exist_ok=True)
    template = _series_dataset(patient, series, grid, opts)
    # JPEG 2000 is encoded here; JPEG Lossless is applied to the written files afterwards (compress.py).
    encoder = dicomio.SeriesEncoder(template) if opts.compression != "jpeg2000" else None
    n_slices = grid.shape[0]
    paths = []
    for t_index, volume in enumerate(volumes):
        stored = hu_to_stored(volume)
        when = (dicomio.at_offset(series.start, opts.times_s[t_index]) if opts.times_s is not None
                else series.start)
        for k in range(n_slices):
            serial = t_index * n_slices + k
            number = int(opts.instance_numbers[serial]) if opts.instance_numbers is not None else serial + 1
            inst = _instance(grid, k, t_index, number, when, opts)
            pixels = np.ascontiguousarray(stored[k])
            path = outdir / f"CT{number:05d}.dcm"
            if encoder is not None:
                inst.add_new(0x7FE00010, "OW", pixels.tobytes())
                path.write_bytes(encoder.encode(inst))
            else:
                full = copy.deepcopy(template)   # compress() may touch shared elements
                full.update(inst)
                full.PixelData = pixels.tobytes()
                full.compress(JPEG2000Lossless, pixels, encoding_plugin="pylibjpeg")
                dicomio.write(full, path, JPEG2000Lossless)
            paths.append(path)
    return paths


def _instance(grid: Grid, k: int, t_index: int, number: int, when: datetime, opts: CtOptions) -> Dataset:
    """The attributes that differ between instances of one series."""
    ds = Dataset()
    ds.SOPInstanceUID = dicomio.new_uid()
    ds.InstanceNumber = number
    ds.AcquisitionNumber = t_index + 1
    ipp = grid.slice_origin(k)
    ds.ImagePositionPatient = [f"{v:.2f}" for v in ipp]
    ds.SliceLocation = f"{ipp[2]:.2f}"
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.AcquisitionDate = when.strftime("%Y%m%d")
    if opts.times_s is not None and opts.time_in_temporal_position:
        ds.TemporalPositionIdentifier = t_index + 1
    else:
        ds.AcquisitionTime = dicomio.dicom_time(when)
        ds.ContentTime = dicomio.dicom_time(when)
    return ds
