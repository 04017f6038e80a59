"""RT Dose (PS3.3 A.18) encoding and decoding, and a beamless RT Plan for the dose to reference.

Writing (:func:`build_rt_dose`): a multi-frame dose grid in Gy (Dose Units GY, Dose Type PHYSICAL) with
Grid Frame Offset Vector in the relative form (first offset 0, frames ascending along row x column; PS3.3
C.8.8.3.2 option a, which allows any grid orientation), unsigned pixels times Dose Grid Scaling, in the frame
of reference (and study) of the CT it was computed with. 16-bit pixels while the quantisation step
(max / 65535) stays <= MAX_STEP_16BIT_GY, 32-bit otherwise (dicom3tools' dciodvfy of 2022 cannot parse 32-bit
RT Dose pixels: the 16-bit path is the one it validates). The Dose Summation Type PLAN needs an RT Plan to
reference (PS3.3 makes Referenced RT Plan Sequence Type 1C for it): a Y-90 radioembolization has no DICOM plan,
so :func:`build_rt_plan` writes a beamless one (RT General Plan + RT Prescription: activity, sphere type,
method), which also carries the reference to the structure set. The RT DVH module (optional) carries the
node's DVHs for the structure set's ROIs. Every object says DERIVED and not for primary diagnosis
(node/derived.py wording) and names its method.

Reading (:func:`read_rt_dose`): any grid the standard allows: oblique orientations, frames ascending or
descending along the normal, relative or absolute (option b) Grid Frame Offset Vector, non-uniform offsets
(resampled along the normal to the smallest gap), a single frame, 16 or 32 bits; :func:`dose_on_grid` then
interpolates it (trilinearly) at the voxel centres of a CT or any other grid of the same frame of reference.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import SimpleITK as sitk
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, RTDoseStorage, RTPlanStorage, generate_uid

from node.derived import NOT_FOR_DIAGNOSIS, copy_patient_study, equipment_kwargs
from node.dose.dvh import Dvh, sample_dose
from node.dose.errors import DoseInputError

logger = logging.getLogger(__name__)

__all__ = ["RT_DOSE_SERIES_NUMBER", "RT_PLAN_SERIES_NUMBER", "MAX_STEP_16BIT_GY", "RtDose", "build_rt_dose",
           "build_rt_plan", "read_rt_dose", "dose_on_grid"]

RT_DOSE_SERIES_NUMBER = 902
RT_PLAN_SERIES_NUMBER = 903
#: Largest dose quantisation step (Gy) accepted for 16-bit pixels; above it 32-bit pixels are written.
MAX_STEP_16BIT_GY = 0.01
#: Summation types that need a Referenced RT Plan Sequence (PS3.3 C.8.8.3, Type 1C).
_PLAN_SUMMATIONS = {"PLAN", "MULTI_PLAN", "FRACTION", "BEAM", "BRACHY", "FRACTION_SESSION", "BEAM_SESSION",
                    "BRACHY_SESSION", "CONTROL_POINT"}
_ORTHO_TOLERANCE = 1e-3
#: RT DVH bins: the finest of these widths (Gy) giving at most _DVH_MAX_BINS bins (DVH Data, a DS, must stay
#: below 64 kB in explicit VR).
_DVH_BIN_WIDTHS_GY = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)
_DVH_MAX_BINS = 2000


def _ds(value: float) -> str:
    """A DS of at most 16 characters."""
    for digits in range(12, 3, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot encode {value} as DS")


def _now() -> tuple[str, str]:
    now = datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    return meta


def _common(reference: Dataset, sop_class: str, modality: str, series_description: str, series_number: int,
            instance_number: int) -> Dataset:
    """Patient, study (the reference's), RT series, frame of reference, equipment and SOP common attributes."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    date, time = _now()
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    copy_patient_study(reference, ds)
    if "BodyPartExamined" in ds:  # belongs to image series; the RT Series module has no such attribute
        del ds.BodyPartExamined
    ds.Modality = modality
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"{series_description}, {NOT_FOR_DIAGNOSIS}"[:64]
    ds.OperatorsName = ""
    ds.SeriesDate, ds.SeriesTime = date, time
    frame = str(reference.get("FrameOfReferenceUID", "") or "")
    if not frame:
        raise ValueError("the reference image has no FrameOfReferenceUID: the dose could not be placed on it")
    ds.FrameOfReferenceUID = frame
    ds.PositionReferenceIndicator = ""
    equipment = equipment_kwargs()
    ds.Manufacturer = equipment["manufacturer"]
    ds.ManufacturerModelName = equipment["manufacturer_model_name"]
    ds.SoftwareVersions = equipment["software_versions"]
    ds.DeviceSerialNumber = equipment["device_serial_number"]
    ds.InstanceNumber = instance_number
    return ds


def _ref(ds: Dataset) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return item


def _structure_set_frame(rtss: Dataset) -> str:
    for item in rtss.get("ReferencedFrameOfReferenceSequence", []):
        return str(item.get("FrameOfReferenceUID", ""))
    return ""


def build_rt_plan(reference: Dataset, *, label: str, name: str, description: str, prescription: str,
                  structure_set: Dataset | None = None, series_description: str = "Y-90 radioembolization plan",
                  instance_number: int = 1) -> Dataset:
    """A beamless RT Plan documenting a radioembolization (what an RT Dose with summation PLAN references).

    RT General Plan (geometry PATIENT with the structure set, else TREATMENT_DEVICE) and RT Prescription with
    `prescription` (activity, sphere type, method); Approval status UNAPPROVED: it is a calculation, not an
    approved plan.
    """
    if not label.strip() or len(label) > 16:
        raise ValueError(f"RT plan label {label!r} must be 1-16 characters (SH)")
    ds = _common(reference, RTPlanStorage, "RTPLAN", series_description, RT_PLAN_SERIES_NUMBER, instance_number)
    ds.RTPlanLabel = label
    ds.RTPlanName = name[:64]
    ds.RTPlanDescription = f"{description} {NOT_FOR_DIAGNOSIS}."
    ds.RTPlanDate, ds.RTPlanTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    if structure_set is not None:
        if _structure_set_frame(structure_set) != ds.FrameOfReferenceUID:
            raise ValueError("the structure set is in another frame of reference than the plan's reference image")
        ds.RTPlanGeometry = "PATIENT"
        ds.ReferencedStructureSetSequence = DicomSequence([_ref(structure_set)])
    else:
        ds.RTPlanGeometry = "TREATMENT_DEVICE"
    ds.PrescriptionDescription = prescription[:1024]
    ds.ApprovalStatus = "UNAPPROVED"
    ds.file_meta = _file_meta(ds)
    return ds


def _geometry(dose: sitk.Image) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[float, float, float]]:
    """(array (frames ascending along row x col), first-frame origin, row dir, col dir, spacing x, y, z)."""
    direction = np.asarray(dose.GetDirection(), dtype=float).reshape(3, 3)
    row, col, axis = direction[:, 0], direction[:, 1], direction[:, 2]
    if abs(row @ col) > _ORTHO_TOLERANCE or abs(abs(axis @ np.cross(row, col)) - 1.0) > _ORTHO_TOLERANCE:
        raise ValueError("the dose grid's axes are not orthonormal: not representable as an RT Dose")
    array = sitk.GetArrayFromImage(dose).astype(np.float64)
    origin = np.asarray(dose.GetOrigin(), dtype=float)
    sx, sy, sz = (float(v) for v in dose.GetSpacing())
    if axis @ np.cross(row, col) < 0:  # frames run against row x col: store them the other way round
        origin = origin + (array.shape[0] - 1) * sz * axis
        array = array[::-1]
    return np.ascontiguousarray(array), origin, row, col, (sx, sy, sz)


def _rt_dvh(ds: Dataset, structure_set: Dataset, dvhs: Mapping[str, Dvh],
            composite: Mapping[str, tuple[str, Sequence[str]]]) -> None:
    numbers = {str(item.ROIName): int(item.ROINumber) for item in structure_set.get("StructureSetROISequence", [])}
    ds.ReferencedStructureSetSequence = DicomSequence([_ref(structure_set)])
    items = []
    for key, dvh in dvhs.items():
        included, excluded = composite.get(key, (key, ()))
        for roi in (included, *excluded):
            if roi not in numbers:
                raise ValueError(f"DVH {key!r} names no ROI {roi!r} of the structure set (ROIs: {sorted(numbers)})")
        if dvh.empty:
            continue
        width = next((w for w in _DVH_BIN_WIDTHS_GY if dvh.max_gy() / w < _DVH_MAX_BINS), _DVH_BIN_WIDTHS_GY[-1])
        doses, volume_pct = dvh.curve(width)
        volumes = volume_pct / 100.0 * dvh.total  # mL = cm3 receiving >= each bin's lower edge
        item = Dataset()
        contributions = []
        for roi, how in ((included, "INCLUDED"), *((r, "EXCLUDED") for r in excluded)):
            roi_ref = Dataset()
            roi_ref.ReferencedROINumber = numbers[roi]
            roi_ref.DVHROIContributionType = how
            contributions.append(roi_ref)
        item.DVHReferencedROISequence = DicomSequence(contributions)
        item.DVHType = "CUMULATIVE"
        item.DoseUnits = "GY"
        item.DoseType = "PHYSICAL"
        item.DVHDoseScaling = "1"
        item.DVHVolumeUnits = "CM3"
        item.DVHNumberOfBins = len(doses)
        data = np.empty(2 * len(doses))
        data[0::2] = width
        data[1::2] = volumes
        item.DVHData = [f"{float(v):.7g}" for v in data]
        item.DVHMinimumDose = _ds(dvh.min_gy())
        item.DVHMaximumDose = _ds(dvh.max_gy())
        item.DVHMeanDose = _ds(dvh.mean_gy())
        items.append(item)
    ds.DVHSequence = DicomSequence(items)


def build_rt_dose(dose: sitk.Image, reference: Dataset, *, series_description: str, comment: str, method: str,
                  rt_plan: Dataset | None = None, summation_type: str = "PLAN",
                  structure_set: Dataset | None = None, dvhs: Mapping[str, Dvh] | None = None,
                  dvh_composite: Mapping[str, tuple[str, Sequence[str]]] | None = None,
                  source_images: Sequence[Dataset] = (), dose_type: str = "PHYSICAL",
                  heterogeneity_correction: str | None = "IMAGE", instance_number: int = 1) -> Dataset:
    """An RT Dose of `dose` (Gy; any orthonormal grid) in the frame of reference and study of `reference`.

    `comment` goes to Dose Comment (<= 64 characters), `method` (the full description of the calculation) to Image
    Comments. `rt_plan` is required for the plan-based summation types (PLAN, BEAM, ...). `dvhs` (ROI name -> DVH)
    with `structure_set` add the RT DVH module; `dvh_composite` maps a DVH that is not one ROI to (included ROI,
    excluded ROIs), e.g. the non-tumoural liver = liver minus the tumours. `source_images` (the emission image,
    the CT) are listed in Source Image Sequence. Raises ValueError for inconsistent arguments.
    """
    summation_type = summation_type.upper()
    if summation_type in _PLAN_SUMMATIONS and rt_plan is None:
        raise ValueError(f"Dose Summation Type {summation_type} requires the RT Plan the dose belongs to")
    if summation_type == "RECORD":
        raise ValueError("Dose Summation Type RECORD (treatment records) is not supported")
    if len(comment) > 64:
        raise ValueError("the dose comment must be at most 64 characters (LO)")
    array, origin, row, col, (sx, sy, sz) = _geometry(dose)
    if not np.isfinite(array).all():
        raise ValueError("the dose grid holds NaN or infinite values")
    ds = _common(reference, RTDoseStorage, "RTDOSE", series_description, RT_DOSE_SERIES_NUMBER, instance_number)
    ds.ContentDate, ds.ContentTime = ds.InstanceCreationDate, ds.InstanceCreationTime
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = method[:1024]
    ds.ImageComments = f"{method} {NOT_FOR_DIAGNOSIS}."[:10240]
    if source_images:
        ds.SourceImageSequence = DicomSequence([_ref(s) for s in source_images])
    # Image Plane
    ds.ImagePositionPatient = [_ds(float(v)) for v in origin]
    ds.ImageOrientationPatient = [_ds(float(v)) for v in (*row, *col)]
    ds.PixelSpacing = [_ds(sy), _ds(sx)]  # between rows, between columns
    ds.SliceThickness = _ds(sz)
    # Image Pixel + Multi-frame
    negative = float(-array[array < 0].sum())
    if negative > 0:
        logger.warning("RT Dose: negative doses set to 0 (unsigned pixels)")
        array = np.clip(array, 0.0, None)
    top = float(array.max())
    bits = 16 if top / 65535.0 <= MAX_STEP_16BIT_GY else 32
    scale_text = _ds(top / (2 ** bits - 1)) if top > 0 else "1"
    scale = float(scale_text)
    pixels = np.clip(np.rint(array / scale), 0, 2 ** bits - 1).astype(np.uint16 if bits == 16 else np.uint32)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = int(array.shape[1]), int(array.shape[2])
    ds.BitsAllocated = ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.NumberOfFrames = int(array.shape[0])
    ds.FrameIncrementPointer = Tag("GridFrameOffsetVector")
    # RT Dose
    ds.DoseUnits = "GY"
    ds.DoseType = dose_type
    ds.DoseSummationType = summation_type
    ds.DoseComment = comment
    ds.GridFrameOffsetVector = [_ds(k * sz) for k in range(array.shape[0])]
    ds.DoseGridScaling = scale_text
    if heterogeneity_correction:
        ds.TissueHeterogeneityCorrection = heterogeneity_correction
    if rt_plan is not None:
        if str(rt_plan.get("FrameOfReferenceUID", ds.FrameOfReferenceUID)) != ds.FrameOfReferenceUID:
            raise ValueError("the RT Plan is in another frame of reference than the dose")
        ds.ReferencedRTPlanSequence = DicomSequence([_ref(rt_plan)])
    if structure_set is not None:
        if _structure_set_frame(structure_set) != ds.FrameOfReferenceUID:
            raise ValueError("the structure set is in another frame of reference than the dose")
        if dvhs:
            _rt_dvh(ds, structure_set, dvhs, dvh_composite or {})
    ds.PixelData = pixels.tobytes()
    ds.file_meta = _file_meta(ds)
    return ds


# ---------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class RtDose:
    """A decoded RT Dose: the dose (Gy) as an image in its frame of reference, and what it says about itself."""

    image: sitk.Image  # float64 Gy; frames ascending along row x column
    frame_of_reference_uid: str
    patient_id: str
    sop_instance_uid: str
    dose_type: str
    summation_type: str
    referenced_plan_uids: tuple[str, ...]
    referenced_structure_set_uids: tuple[str, ...]
    comment: str
    notes: tuple[str, ...] = field(default_factory=tuple)


def _unit(values: Sequence[float], what: str) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    n = float(np.linalg.norm(v))
    if n < 1e-6:
        raise DoseInputError(f"RT Dose: {what} is a zero vector")
    return v / n


def _frame_positions(ds: Dataset, ipp: np.ndarray, normal: np.ndarray, n_frames: int,
                     notes: list[str]) -> np.ndarray:
    """Position of each frame along `normal`, relative to the Image Position (Patient)."""
    if n_frames == 1 and "GridFrameOffsetVector" not in ds:
        return np.zeros(1)
    if "GridFrameOffsetVector" not in ds:
        raise DoseInputError("RT Dose: a multi-frame dose without Grid Frame Offset Vector: frame positions unknown")
    raw = ds.GridFrameOffsetVector
    offsets = np.asarray([float(v) for v in (raw if isinstance(raw, (list, tuple, MultiValue)) else [raw])],
                         dtype=float)
    if offsets.size != n_frames:
        raise DoseInputError(f"RT Dose: Grid Frame Offset Vector has {offsets.size} values for {n_frames} frames")
    if abs(offsets[0]) < 1e-6:
        return offsets  # option a: relative to the first frame, along row x column
    # option b (absolute): patient z, only defined for transverse grids; also accepted: the projection on the normal
    if abs(abs(normal[2]) - 1.0) < _ORTHO_TOLERANCE and abs(offsets[0] - ipp[2]) < 1e-3:
        notes.append("Grid Frame Offset Vector in the absolute form (patient z, PS3.3 option b)")
        return (offsets - ipp[2]) * float(np.sign(normal[2]))
    if abs(offsets[0] - float(ipp @ normal)) < 1e-3:
        notes.append("Grid Frame Offset Vector holds absolute positions along the normal (non-standard)")
        return offsets - float(ipp @ normal)
    raise DoseInputError(f"RT Dose: Grid Frame Offset Vector starts at {offsets[0]:g} mm, neither 0 (relative) nor "
                         "the position of the first frame (absolute): frame positions are ambiguous")


def read_rt_dose(ds: Dataset) -> RtDose:
    """Decode an RT Dose data set into an image (Gy). Raises :class:`DoseInputError` with the reason."""
    if str(ds.get("SOPClassUID", "")) != RTDoseStorage or ds.get("Modality") != "RTDOSE":
        raise DoseInputError("not an RT Dose object (SOP class / Modality)")
    if "PixelData" not in ds:
        raise DoseInputError("the RT Dose holds no dose grid (no pixel data: DVH or point doses only)")
    notes: list[str] = []
    units = str(ds.get("DoseUnits", "")).upper()
    if units == "RELATIVE":
        raise DoseInputError("the RT Dose is in relative units: absolute doses in Gy are needed")
    dose_type = str(ds.get("DoseType", "")).upper()
    if dose_type == "ERROR":
        raise DoseInputError("the RT Dose is an error (uncertainty) map, not a dose")
    if dose_type == "EFFECTIVE":
        notes.append("Dose Type EFFECTIVE (biologically weighted): used as given")
    try:
        iop = [float(v) for v in ds.ImageOrientationPatient]
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)
        spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
        scaling = float(ds.DoseGridScaling)
    except (AttributeError, TypeError, ValueError, IndexError) as exc:
        raise DoseInputError(f"RT Dose: missing or invalid geometry or Dose Grid Scaling ({exc})") from None
    row, col = _unit(iop[:3], "the row direction"), _unit(iop[3:], "the column direction")
    if abs(row @ col) > _ORTHO_TOLERANCE:
        raise DoseInputError("RT Dose: row and column directions are not orthogonal")
    normal = np.cross(row, col)
    try:
        pixels = pixel_array(ds)
    except Exception as exc:  # pydicom raises several types for undecodable pixel data
        raise DoseInputError(f"RT Dose: cannot decode the pixel data ({exc})") from None
    n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    pixels = pixels.reshape(n_frames, int(ds.Rows), int(ds.Columns)).astype(np.float64) * scaling
    if units == "CGY":
        notes.append("Dose Units CGY (not a standard value) converted to Gy")
        pixels /= 100.0
    elif units != "GY":
        raise DoseInputError(f"RT Dose: Dose Units {units or 'missing'}, expected GY")
    positions = _frame_positions(ds, ipp, normal, n_frames, notes)
    order = np.argsort(positions, kind="stable")
    if n_frames > 1 and not ((order == np.arange(n_frames)).all() or (order == np.arange(n_frames)[::-1]).all()):
        raise DoseInputError("RT Dose: Grid Frame Offset Vector is not monotonic")
    positions, pixels = positions[order], pixels[order]
    if n_frames > 1:
        gaps = np.diff(positions)
        if gaps.min() <= 1e-6:
            raise DoseInputError("RT Dose: two frames share one position")
        dz = float(positions[-1] - positions[0]) / (n_frames - 1)
        if np.abs(positions - (positions[0] + dz * np.arange(n_frames))).max() > max(1e-3, 0.01 * gaps.min()):
            step = float(gaps.min())
            n = int(math.ceil((positions[-1] - positions[0]) / step - 1e-6)) + 1
            target = np.linspace(positions[0], positions[-1], n)
            lower = np.clip(np.searchsorted(positions, target, side="right") - 1, 0, n_frames - 2)
            w = ((target - positions[lower]) / (positions[lower + 1] - positions[lower]))[:, None, None]
            pixels = (1 - w) * pixels[lower] + w * pixels[lower + 1]
            notes.append(f"non-uniform frame spacing ({gaps.min():.3g}-{gaps.max():.3g} mm) resampled linearly to "
                         f"{target[1] - target[0]:.3g} mm")
            positions, dz = target, float(target[1] - target[0])
    else:
        dz = float(ds.get("SliceThickness", 0) or 0) or 1.0
        notes.append(f"single dose plane, taken as {dz:g} mm thick")
    image = sitk.GetImageFromArray(np.ascontiguousarray(pixels))
    image.SetSpacing((spacing[1], spacing[0], dz))
    image.SetOrigin(tuple(float(v) for v in ipp + positions[0] * normal))
    image.SetDirection(tuple(float(v) for v in np.column_stack([row, col, normal]).ravel()))
    summation = str(ds.get("DoseSummationType", "")).upper()
    if summation not in ("PLAN", "MULTI_PLAN"):
        notes.append(f"Dose Summation Type {summation or 'missing'}: not the dose of a whole plan")
    plans = tuple(str(i.get("ReferencedSOPInstanceUID", "")) for i in ds.get("ReferencedRTPlanSequence", []))
    structures = tuple(str(i.get("ReferencedSOPInstanceUID", ""))
                       for i in ds.get("ReferencedStructureSetSequence", []))
    return RtDose(image=image, frame_of_reference_uid=str(ds.get("FrameOfReferenceUID", "")),
                  patient_id=str(ds.get("PatientID", "")), sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                  dose_type=dose_type, summation_type=summation, referenced_plan_uids=plans,
                  referenced_structure_set_uids=structures, comment=str(ds.get("DoseComment", "")),
                  notes=tuple(notes))


def dose_on_grid(rt_dose: RtDose, grid: sitk.Image, frame_of_reference_uid: str | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """The dose (Gy) interpolated trilinearly at the voxel centres of `grid` ((z, y, x) array) and a mask of the
    voxels inside the dose grid (0 Gy elsewhere). With `frame_of_reference_uid`, refuses a dose of another frame."""
    if frame_of_reference_uid is not None and rt_dose.frame_of_reference_uid != frame_of_reference_uid:
        raise DoseInputError("the RT Dose is in another frame of reference than the CT: it cannot be placed on it "
                             "without a registration")
    return sample_dose(rt_dose.image, grid)
