"""Read and check the header of a received instance without decoding its pixel data.

The SCP calls :func:`read_header` on the freshly received bytes. It parses everything but bulk data (deferred),
checks the dataset against the C-STORE request, and returns an :class:`InstanceInfo` with what the index and the
completion logic need. Problems raise :class:`InvalidInstanceError` subclasses that the network edge maps to
PS3.4 statuses.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag
from pydicom.uid import UID

from node import fastheader
from node.imaging.dicomtime import acquisition_seconds
from node.sopclasses import IMAGE_SOP_CLASSES

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_PIXEL_TAGS = (Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009))
_DEFER = 4096  # bytes: larger values stay on disk, unread


class InvalidInstanceError(ValueError):
    """A received dataset that cannot be accepted."""


class UndecodableDatasetError(InvalidInstanceError):
    """Truncated or not parseable as DICOM (PS3.4: 0xC000 cannot understand)."""


class DatasetMismatchError(InvalidInstanceError):
    """Parsed, but does not match the request / SOP class (PS3.4: 0xA900)."""


@dataclass(frozen=True)
class InstanceInfo:
    """What the node remembers about one received instance (one row of the index)."""

    sop_class_uid: str
    sop_instance_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    patient_name: str
    modality: str
    study_date: str
    study_description: str
    series_description: str
    series_number: int | None
    frame_of_reference_uid: str
    image_position: tuple[float, float, float] | None
    image_orientation: tuple[float, ...] | None
    acquisition_time: float | None  # seconds (date-aware where a date is known)
    temporal_position: int | None
    number_of_frames: int
    position_repeats: int  # multi-frame: how often the most repeated frame position occurs (time series)
    image_type: str
    radiopharmaceutical: str
    radiopharmaceutical_code: str
    roi_names: tuple[str, ...]  # RTSTRUCT only
    referenced_frame_of_reference: str  # RTSTRUCT only
    transfer_syntax_uid: str
    radionuclide_code: str = ""  # NM/PT: RadionuclideCodeSequence code value (e.g. SNOMED 14691008 Yttrium-90)
    dose_summation_type: str = ""  # RTDOSE only: PLAN, BEAM, FRACTION, ...
    referenced_sop_uids: tuple[str, ...] = ()  # RTDOSE: its RT Plan(s) and structure set(s); RTPLAN: structure sets


def is_valid_uid(uid: Any) -> bool:
    return isinstance(uid, str) and 0 < len(uid) <= 64 and bool(_UID_RE.match(uid))


def _str(ds: Dataset, kw: str) -> str:
    v = ds.get(kw, "")
    return "" if v is None else str(v).strip()


def _floats(v: Any, n: int) -> tuple[float, ...] | None:
    try:
        vals = tuple(float(x) for x in v)
    except (TypeError, ValueError):
        return None
    return vals if len(vals) == n else None


def _geometry(ds: Dataset) -> tuple[tuple[float, float, float] | None, tuple[float, ...] | None]:
    ipp = _floats(ds.get("ImagePositionPatient"), 3)
    iop = _floats(ds.get("ImageOrientationPatient"), 6)
    if ipp is None and "DetectorInformationSequence" in ds:  # NM: geometry lives in the detector item
        try:
            item = ds.DetectorInformationSequence[0]
            ipp = _floats(item.get("ImagePositionPatient"), 3)
            iop = _floats(item.get("ImageOrientationPatient"), 6)
        except (IndexError, AttributeError):
            pass
    if ipp is None and "PerFrameFunctionalGroupsSequence" in ds:  # Enhanced CT: first frame
        try:
            ipp = _floats(ds.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient, 3)
        except (IndexError, AttributeError):
            pass
    return ipp, iop  # type: ignore[return-value]


def _radiopharmaceutical(ds: Dataset) -> tuple[str, str]:
    try:
        item = ds.RadiopharmaceuticalInformationSequence[0]
    except (AttributeError, IndexError, TypeError):
        return "", ""
    text = _str(item, "Radiopharmaceutical")
    code = ""
    try:
        code = _str(item.RadiopharmaceuticalCodeSequence[0], "CodeValue")
    except (AttributeError, IndexError, TypeError):
        pass
    return text, code


def _radionuclide(ds: Dataset) -> str:
    try:
        return _str(ds.RadiopharmaceuticalInformationSequence[0].RadionuclideCodeSequence[0], "CodeValue")
    except (AttributeError, IndexError, TypeError):
        return ""


def _rt_references(ds: Dataset) -> tuple[str, ...]:
    """SOP Instance UIDs an RT Dose or RT Plan references: the plan(s) a dose belongs to, the structure set(s)."""
    out: list[str] = []
    for keyword in ("ReferencedRTPlanSequence", "ReferencedStructureSetSequence"):
        try:
            items = ds.get(keyword) or []
            out += [_str(item, "ReferencedSOPInstanceUID") for item in items]
        except (AttributeError, TypeError):
            continue
    return tuple(u for u in dict.fromkeys(out) if u)


def _rtstruct(ds: Dataset) -> tuple[tuple[str, ...], str]:
    names: tuple[str, ...] = ()
    try:
        names = tuple(_str(r, "ROIName") for r in ds.StructureSetROISequence)
    except (AttributeError, TypeError):
        pass
    ref_for = ""
    try:
        ref_for = _str(ds.ReferencedFrameOfReferenceSequence[0], "FrameOfReferenceUID")
    except (AttributeError, IndexError, TypeError):
        pass
    return names, ref_for


def _frame_position_repeats(ds: Dataset) -> int:
    """Enhanced multi-frame: the largest number of frames sharing one plane position (time points)."""
    try:
        frames = ds.PerFrameFunctionalGroupsSequence
    except AttributeError:
        return 1
    counts: dict[tuple[float, ...], int] = {}
    for item in frames:
        try:
            pos = _floats(item.PlanePositionSequence[0].ImagePositionPatient, 3)
        except (AttributeError, IndexError):
            return 1
        if pos is not None:
            key = tuple(round(v, 2) for v in pos)
            counts[key] = counts.get(key, 0) + 1
    return max(counts.values(), default=1)


def _check_complete(ds: Dataset, size: int) -> None:
    """Detect truncation: pydicom reads a short last value without complaint, so compare declared lengths."""
    tags = [t for t in _PIXEL_TAGS if t in ds]
    last = next(reversed(ds.keys()), None)  # type: ignore[call-overload]  # dict key views are reversible
    if last is not None and last not in tags:
        tags.append(last)
    for tag in tags:
        raw = ds.get_item(tag, keep_deferred=True)
        if not isinstance(raw, RawDataElement) or raw.length == 0xFFFFFFFF:
            continue
        got = (size - raw.value_tell) if raw.value is None else len(raw.value)
        if got < raw.length:
            raise UndecodableDatasetError(
                f"dataset truncated: element {Tag(tag)} declares {raw.length} bytes, only {max(got, 0)} received")


def _check_pixel_size(ds: Dataset, transfer_syntax_uid: str) -> None:
    """Native (uncompressed) pixel data must hold every pixel the header announces."""
    if transfer_syntax_uid and UID(transfer_syntax_uid).is_compressed:
        return
    lengths = {}
    for tag in _PIXEL_TAGS:
        if tag in ds:
            raw = ds.get_item(tag, keep_deferred=True)
            lengths[int(tag)] = raw.length if isinstance(raw, RawDataElement) else len(ds[tag].value or b"")
    try:
        fastheader.check_pixel_lengths(ds.get, lengths)
    except fastheader.PixelsTruncated as exc:
        raise UndecodableDatasetError(str(exc)) from exc


#: single-frame image classes the fast scanner serves (the bulk of traffic): CT, PET, MR, Secondary Capture
FAST_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.4",
                    "1.2.840.10008.5.1.4.1.1.7"}


_PREFIX = 64 * 1024  # enough for the header of a classic image; pixel data is checked by size, not read


def _scan_fast(path: Path) -> Any:
    """fastheader.scan over the file's first bytes (all of it if the header is longer)."""

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        prefix = f.read(_PREFIX)
        try:
            try:
                return fastheader.scan(prefix, size)
            except fastheader.NeedMore:
                return fastheader.scan(prefix + f.read())
        except fastheader.Truncated as exc:
            raise UndecodableDatasetError(str(exc)) from exc


def read_header(path: Path, expected_sop_class: str | None = None, expected_sop_instance: str | None = None,
                transfer_syntax_uid: str = "") -> InstanceInfo:
    """Parse a received Part 10 file's header, validate it against the request, return the index row.

    Single-frame images in explicit VR little endian take the fast scanner; everything else, and anything the
    scanner declines, is read by pydicom (bulk data deferred).
    """
    if expected_sop_class in FAST_SOP_CLASSES and transfer_syntax_uid:
        ts_uid = UID(transfer_syntax_uid)
        if ts_uid.is_little_endian and not ts_uid.is_implicit_VR and not ts_uid.is_deflated:
            try:
                return _info(_scan_fast(path), expected_sop_class, expected_sop_instance, transfer_syntax_uid)
            except fastheader.Unsupported:
                pass
    size = os.path.getsize(path)
    try:
        ds = pydicom.dcmread(path, defer_size=_DEFER, force=False)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError,
            NotImplementedError, OverflowError, IndexError) as exc:
        raise UndecodableDatasetError(f"cannot decode dataset: {type(exc).__name__}: {exc}") from exc
    _check_complete(ds, size)
    ts = str(transfer_syntax_uid or ds.file_meta.get("TransferSyntaxUID", ""))
    try:
        _check_pixel_size(ds, ts)
    except UndecodableDatasetError:
        raise
    except Exception as exc:
        raise UndecodableDatasetError(f"cannot decode pixel description: {exc}") from exc
    try:
        return _info(ds, expected_sop_class, expected_sop_instance, ts)
    except InvalidInstanceError:
        raise
    except Exception as exc:  # a malformed value deep in the header: refuse it, never crash the association
        raise UndecodableDatasetError(f"cannot decode dataset: {type(exc).__name__}: {exc}") from exc


def _info(ds: Dataset, expected_sop_class: str | None, expected_sop_instance: str | None,
          transfer_syntax_uid: str) -> InstanceInfo:
    sop_class = _str(ds, "SOPClassUID")
    sop_inst = _str(ds, "SOPInstanceUID")
    if not sop_class:
        raise DatasetMismatchError("SOPClassUID (0008,0016) missing from the dataset")
    if expected_sop_class and sop_class != expected_sop_class:
        raise DatasetMismatchError(
            f"dataset SOPClassUID {sop_class} does not match the request's Affected SOP Class {expected_sop_class}")
    if expected_sop_instance and sop_inst != expected_sop_instance:
        raise DatasetMismatchError(
            f"dataset SOPInstanceUID {sop_inst!r} does not match the request's {expected_sop_instance!r}")
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        v = _str(ds, kw)
        if not v:
            raise DatasetMismatchError(f"required attribute {kw} missing or empty")
        if not is_valid_uid(v):
            raise DatasetMismatchError(f"{kw} {v!r} is not a valid UID")
    if sop_class in IMAGE_SOP_CLASSES and not any(t in ds for t in _PIXEL_TAGS):
        raise DatasetMismatchError(f"image SOP class {IMAGE_SOP_CLASSES[sop_class]} without pixel data")
    ipp, iop = _geometry(ds)
    rp_text, rp_code = _radiopharmaceutical(ds)
    modality = _str(ds, "Modality")
    roi_names, ref_for = _rtstruct(ds) if modality == "RTSTRUCT" else ((), "")
    try:
        series_number = int(ds.get("SeriesNumber")) if ds.get("SeriesNumber") not in (None, "") else None
    except (TypeError, ValueError):
        series_number = None
    try:
        nframes = int(ds.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        nframes = 1
    try:
        tpi = ds.get("TemporalPositionIdentifier")
        temporal = int(tpi) if tpi not in (None, "") else None
    except (TypeError, ValueError):
        temporal = None
    image_type = ds.get("ImageType", "")
    return InstanceInfo(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_inst,
        study_uid=_str(ds, "StudyInstanceUID"),
        series_uid=_str(ds, "SeriesInstanceUID"),
        patient_id=_str(ds, "PatientID"),
        patient_name=_str(ds, "PatientName"),
        modality=_str(ds, "Modality"),
        study_date=_str(ds, "StudyDate"),
        study_description=_str(ds, "StudyDescription"),
        series_description=_str(ds, "SeriesDescription"),
        series_number=series_number,
        frame_of_reference_uid=_str(ds, "FrameOfReferenceUID"),
        image_position=ipp,
        image_orientation=iop,
        acquisition_time=acquisition_seconds(ds),
        temporal_position=temporal,
        number_of_frames=nframes,
        position_repeats=_frame_position_repeats(ds) if nframes > 1 else 1,
        image_type="\\".join(image_type) if not isinstance(image_type, str) else image_type,
        radiopharmaceutical=rp_text,
        radiopharmaceutical_code=rp_code,
        roi_names=roi_names,
        referenced_frame_of_reference=ref_for,
        transfer_syntax_uid=transfer_syntax_uid,
        radionuclide_code=_radionuclide(ds) if modality in ("NM", "PT") else "",
        dose_summation_type=_str(ds, "DoseSummationType").upper() if modality == "RTDOSE" else "",
        referenced_sop_uids=_rt_references(ds) if modality in ("RTDOSE", "RTPLAN") else (),
    )
