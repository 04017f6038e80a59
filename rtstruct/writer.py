"""Binary masks on a CT grid -> DICOM RT Structure Set with voxel-edge contours (TPS-import conventions).

What TPS importers need and how it is met (see README.md): contours trace voxel edges so that rasterising them
at voxel centres with XOR gives the masks back exactly; holes and islands are separate contours; each contour
lies on its slice plane and references that CT slice; long contours are cut into pieces under the ContourData
size limit; coordinates are rounded to 0.01 mm so every DS value is short; all Type 2 attributes are present.
"""
from __future__ import annotations

import copy
import datetime as _dt
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from rtstruct.geometry import CtGeometry
from rtstruct.trace import trace_slice

logger = logging.getLogger(__name__)

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
#: ReferencedSOPClassUID of the study item in RTReferencedStudySequence. No non-retired SOP class names a study;
#: PS3.3 10.6.1 permits the retired Detached Study Management class (...3.1.2.3.1), which some importers and
#: checkers flag. Study Component Management is the value most RTSTRUCT writers use (e.g. TCIA's Posda tools);
#: dciodvfy reports nothing for it.
STUDY_REFERENCE_SOP_CLASS = "1.2.840.10008.3.1.2.3.2"
#: ContourData is DS with a 16-bit length in explicit VR (<= 65534 bytes); a point is 3 values of <= 16
#: characters plus separators (51 bytes), so 1,280 points always fit.
MAX_CONTOUR_POINTS = 1280
#: Coordinates are rounded to 0.01 mm: far below a voxel, and keeps DS values short (Eclipse rejects > 16 chars).
COORDINATE_DECIMALS = 2
ROI_GENERATION_DESCRIPTION = "voxel-edge contours traced from a binary mask"

_PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDsSequence", "PatientBirthDate",
    "PatientSex", "PatientAge", "PatientWeight", "PatientSize", "PatientIdentityRemoved",
    "DeidentificationMethod", "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "StudyID", "AccessionNumber", "StudyDescription",
)
#: Type 2 attributes of the RT Structure Set IOD's modules: present even when empty (Eclipse insists).
_TYPE2_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
_CS_RE = re.compile(r"^[A-Z0-9_ ]{0,16}$")
_APPROVAL_STATUSES = ("APPROVED", "UNAPPROVED", "REJECTED")


@dataclass(frozen=True)
class RoiMask:
    """One structure to write: a boolean mask of shape (slices, Rows, Columns) in :func:`sort_slices` order.

    `interpreted_type` is the RTROIInterpretedType (ORGAN, PTV, CTV, GTV, AVOIDANCE, EXTERNAL ...),
    `color` the ROIDisplayColor (RGB 0-255), `description` the ROIDescription.
    """

    name: str
    mask: np.ndarray
    interpreted_type: str = "ORGAN"
    color: tuple[int, int, int] = (255, 0, 0)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError("ROI name must be a non-empty string")
        if len(self.name) > 64 or "\\" in self.name:
            raise ValueError(f"ROI name {self.name!r} must be at most 64 characters without backslash (LO)")
        if not _CS_RE.match(self.interpreted_type):
            raise ValueError(f"interpreted_type {self.interpreted_type!r} is not a DICOM code string (CS)")
        if len(self.color) != 3 or any(not 0 <= int(v) <= 255 for v in self.color):
            raise ValueError(f"color {self.color!r} must be three integers 0-255")


def _check_text(value: str, what: str, max_len: int) -> None:
    if len(value) > max_len or "\\" in value:
        raise ValueError(f"{what} {value!r} must be at most {max_len} characters without backslash")


def _check_masks(rois: Sequence[RoiMask], shape: tuple[int, int, int]) -> list[np.ndarray]:
    """Validate names and masks against the CT shape; return the masks as bool arrays."""
    if not rois:
        raise ValueError("no ROIs given")
    names = [roi.name for roi in rois]
    if len(set(names)) != len(names):
        raise ValueError(f"ROI names must be unique, got {names}")
    masks = []
    for roi in rois:
        mask = np.asarray(roi.mask)
        if mask.shape != shape:
            raise ValueError(f"mask of ROI {roi.name!r} has shape {mask.shape}; the CT needs {shape} "
                             "(slices in sort_slices order, Rows, Columns)")
        if mask.dtype != bool and not (mask.dtype.kind in "iu" and np.isin(mask, (0, 1)).all()):
            raise ValueError(f"mask of ROI {roi.name!r} must be boolean (or integer 0/1), got {mask.dtype}")
        masks.append(mask.astype(bool, copy=False))
    return masks


def _image_ref(ds: Dataset) -> Dataset:
    ref = Dataset()
    ref.ReferencedSOPClassUID = ds.SOPClassUID
    ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    return ref


def _contour_text(geom: CtGeometry, k: int, corners: np.ndarray) -> np.ndarray:
    """(n, 3) DS strings of a loop's corners on slice k, without consecutive duplicates.

    A patient axis along which the slice plane is constant (z for axial slices) takes the slice's own
    ImagePositionPatient text, so the contour lies exactly on the plane the CT states; the other axes are
    rounded to COORDINATE_DECIMALS.
    """
    points = np.round(geom.to_patient(k, corners), COORDINATE_DECIMALS) + 0.0  # + 0.0 turns -0.0 into 0.0
    text = np.char.mod(f"%.{COORDINATE_DECIMALS}f", points).astype("<U16")  # room for any DS value
    in_plane_constant = (geom.row_dir == 0) & (geom.col_dir == 0)
    ipp = geom.slices[k].ImagePositionPatient
    for axis in np.flatnonzero(in_plane_constant):
        text[:, axis] = str(ipp[axis])
    keep = np.any(text != np.roll(text, 1, axis=0), axis=1)  # rounding can only merge points below 0.01 mm
    return text[keep]


def _contours(geom: CtGeometry, mask: np.ndarray) -> list[Dataset]:
    """ContourSequence items of one mask: one CLOSED_PLANAR contour per voxel-edge loop piece."""
    items: list[Dataset] = []
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        for corners in trace_slice(mask[k], MAX_CONTOUR_POINTS):
            text = _contour_text(geom, int(k), corners)
            if len(text) < 3:
                logger.warning("dropped a degenerate contour on slice %d (pixel spacing below 0.01 mm?)", k)
                continue
            item = Dataset()
            item.ContourImageSequence = DicomSequence([_image_ref(geom.slices[k])])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(text)
            item.ContourNumber = len(items) + 1
            item.ContourData = text.ravel().tolist()
            items.append(item)
    return items


def _referenced_frame_of_reference(geom: CtGeometry) -> Dataset:
    """The one frame-of-reference item, listing every CT slice under its study and series."""
    first = geom.slices[0]
    series: dict[str, list[Dataset]] = {}
    for ds in geom.slices:
        series.setdefault(ds.SeriesInstanceUID, []).append(ds)
    series_items = []
    for uid, members in series.items():
        item = Dataset()
        item.SeriesInstanceUID = uid
        item.ContourImageSequence = DicomSequence([_image_ref(ds) for ds in members])
        series_items.append(item)
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_REFERENCE_SOP_CLASS
    study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study.RTReferencedSeriesSequence = DicomSequence(series_items)
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([study])
    return frame


def write_rtstruct(
    ct_datasets: Sequence[Dataset],
    rois: Sequence[RoiMask],
    *,
    structure_set_label: str = "LIVERNODE",
    series_description: str = "",
    series_number: int = 900,
    instance_number: int = 1,
    manufacturer: str = "rtstruct",
    software_versions: str = "",
    operators_name: str = "",
    approval_status: str = "UNAPPROVED",
) -> Dataset:
    """Build an RT Structure Set for the masks on this CT; returns a dataset with file_meta, ready to write.

    Masks are indexed [k, row, col] with k in :func:`sort_slices` order. Raises ValueError for bad masks or
    labels and RTStructError for an inconsistent CT series.
    """
    geom = CtGeometry.from_slices(ct_datasets)
    masks = _check_masks(rois, geom.shape)
    if not structure_set_label.strip():
        raise ValueError("structure_set_label must not be empty")
    _check_text(structure_set_label, "structure_set_label", 16)
    _check_text(series_description, "series_description", 64)
    _check_text(manufacturer, "manufacturer", 64)
    _check_text(software_versions, "software_versions", 64)
    _check_text(operators_name, "operators_name", 64)
    if approval_status not in _APPROVAL_STATUSES:
        raise ValueError(f"approval_status must be one of {_APPROVAL_STATUSES}")
    first = geom.slices[0]
    now = _dt.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")

    ds = Dataset()
    if "SpecificCharacterSet" in first:
        ds.SpecificCharacterSet = first.SpecificCharacterSet
    elif not all(s.isascii() for s in [r.name for r in rois] + [r.description for r in rois]
                 + [structure_set_label, series_description, operators_name]):
        ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = generate_uid()
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient, General Study: copied so the PACS/TPS files the structure set with its CT.
    for kw in _PATIENT_STUDY_KEYWORDS:
        if kw in first:
            ds[kw] = copy.deepcopy(first[kw])
    for kw in _TYPE2_KEYWORDS:
        if kw not in ds:
            setattr(ds, kw, "")
    # Frame of Reference: dciodvfy's RT Structure Set IOD includes this module (Type 1 UID, Type 2 indicator).
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    # RT Series, General Equipment.
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDate, ds.SeriesTime = date, time
    if series_description:
        ds.SeriesDescription = series_description
    ds.OperatorsName = operators_name
    ds.Manufacturer = manufacturer
    if software_versions:
        ds.SoftwareVersions = software_versions
    # Structure Set.
    ds.StructureSetLabel = structure_set_label
    ds.StructureSetDescription = (f"{len(rois)} ROI(s), {ROI_GENERATION_DESCRIPTION} on CT series "
                                  f"{first.SeriesInstanceUID} ({geom.shape[0]} slices)")
    ds.InstanceNumber = instance_number
    ds.StructureSetDate, ds.StructureSetTime = date, time
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([_referenced_frame_of_reference(geom)])
    ss_rois, roi_contours, observations = [], [], []
    for number, (roi, mask) in enumerate(zip(rois, masks, strict=True), start=1):
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        item.ROIName = roi.name
        if roi.description:
            item.ROIDescription = roi.description
        item.ROIGenerationAlgorithm = "AUTOMATIC"
        item.ROIGenerationDescription = ROI_GENERATION_DESCRIPTION
        ss_rois.append(item)

        item = Dataset()
        item.ROIDisplayColor = [int(v) for v in roi.color]
        contours = _contours(geom, mask)
        if contours:
            item.ContourSequence = DicomSequence(contours)
        else:
            logger.warning("ROI %r is empty: written without contours", roi.name)
        item.ReferencedROINumber = number
        roi_contours.append(item)

        item = Dataset()
        item.ObservationNumber = number
        item.ReferencedROINumber = number
        item.RTROIInterpretedType = roi.interpreted_type
        item.ROIInterpreter = operators_name
        observations.append(item)
    ds.StructureSetROISequence = DicomSequence(ss_rois)
    ds.ROIContourSequence = DicomSequence(roi_contours)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    # Approval: review attributes are required once the set is approved or rejected.
    ds.ApprovalStatus = approval_status
    if approval_status != "UNAPPROVED":
        ds.ReviewDate, ds.ReviewTime, ds.ReviewerName = date, time, operators_name

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds
