"""Read and check the header of a received instance without decoding its pixel data.

The SCP calls :func:`read_header` on the freshly received bytes. It parses everything but bulk data (deferred),
checks the dataset against the C-STORE request, and returns an :class:`InstanceInfo` with what the index and the
completion logic need. Problems raise :class:`InvalidInstanceError` subclasses that the network edge maps to
PS3.4 statuses.

Receive policy (``[receive] strict``). What can be parsed is stored as received, so a PACS routing job never
stalls on one odd object; the tolerant default accepts, and marks *unusable as an analysis input* (see
:data:`UNUSABLE_REASONS`), image objects without pixel data, private or unknown SOP classes, pixel data in an
encoding the node cannot decode, and UIDs that are digits and dots but not conformant (a component with a leading
zero, more than 64 characters). ``strict = true`` refuses those as before. Truncated or undecodable data sets are
refused under both policies.

:func:`read_stored` is the node's reader of stored files: it takes the file meta by its group length, so group
0002 elements that a sender left inside the data set never override the transfer syntax the node recorded.
"""
from __future__ import annotations

import functools
import os
import re
import struct
import zlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
from pydicom._uid_dict import UID_dictionary
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.tag import Tag
from pydicom.uid import UID

from node import fastheader
from node.imaging.dicomtime import acquisition_seconds
from node.instancecontent import frame_geometry, referenced_series
from node.sopclasses import IMAGE_SOP_CLASSES, STORAGE_SOP_CLASSES
from node.store import MAX_UID_LENGTH

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_UID_SYNTAX = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # digits and dots: parseable, maybe not conformant
_MAX_INFLATED = 1 << 30  # a deflated data set that inflates beyond 1 GiB is refused (a deflate bomb)

#: Machine-readable reasons why an accepted instance cannot be an analysis input (InstanceInfo.unusable is
#: "" or "<reason>: <words>", several joined by "; ").
UNUSABLE_NO_PIXEL_DATA = "no-pixel-data"
UNUSABLE_UNKNOWN_SOP_CLASS = "unknown-sop-class"
UNUSABLE_PIXEL_CODEC = "pixel-codec-unavailable"
UNUSABLE_NONCONFORMANT_UID = "nonconformant-uid"
UNUSABLE_REASONS = (UNUSABLE_NO_PIXEL_DATA, UNUSABLE_UNKNOWN_SOP_CLASS, UNUSABLE_PIXEL_CODEC,
                    UNUSABLE_NONCONFORMANT_UID)
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
    #: "" when the instance may be an analysis input, else "<reason>: <words>" (reasons: UNUSABLE_REASONS)
    unusable: str = ""
    issuer_of_patient_id: str = ""  # (0010,0021): a patient is (PatientID, IssuerOfPatientID)
    protocol_name: str = ""
    referenced_series: tuple[str, ...] = ()  # RTSTRUCT only: the series its contours were drawn on
    #: multi-frame objects: each frame's position and time (node.instancecontent); () for single frames
    frame_positions: tuple[tuple[float, float, float], ...] = ()
    frame_times: tuple[float, ...] = ()

    def unusable_reasons(self) -> tuple[str, ...]:
        """The machine-readable reason codes (empty when usable)."""
        return tuple(part.split(":", 1)[0] for part in self.unusable.split("; ")) if self.unusable else ()


def is_valid_uid(uid: Any) -> bool:
    """A conformant UID (PS3.5 9.1): <= 64 characters, digits and dots, no leading zero in a component."""
    return isinstance(uid, str) and 0 < len(uid) <= 64 and bool(_UID_RE.match(uid))


def uid_problem(uid: str) -> str:
    """Why a parseable UID is not conformant ("" when it is)."""
    if len(uid) > 64:
        return f"{len(uid)} characters (at most 64 allowed)"
    if not _UID_RE.match(uid):
        return "a component with a leading zero"
    return ""


@functools.lru_cache(maxsize=64)
def pixel_decoder_available(transfer_syntax_uid: str) -> bool:
    """Can the node decode pixel data in this transfer syntax (installed pydicom plugins)?"""
    ts = UID(transfer_syntax_uid)
    if not ts.is_compressed:
        return True
    try:
        from pydicom.pixels import get_decoder

        return bool(get_decoder(ts).is_available)
    except (NotImplementedError, ValueError, ImportError):
        return False


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
                transfer_syntax_uid: str = "", *, strict: bool = False) -> InstanceInfo:
    """Parse a received Part 10 file's header, validate it against the request, return the index row.

    Single-frame images in explicit VR little endian take the fast scanner; everything else, and anything the
    scanner declines, is read by pydicom (bulk data deferred). `strict` selects the refusing receive policy.
    """
    if expected_sop_class in FAST_SOP_CLASSES and transfer_syntax_uid:
        syntax = UID(transfer_syntax_uid)
        if syntax.is_little_endian and not syntax.is_implicit_VR and not syntax.is_deflated:
            try:
                return _info(_scan_fast(path), expected_sop_class, expected_sop_instance, transfer_syntax_uid,
                             strict)
            except fastheader.Unsupported:
                pass
    try:
        ds, size = _load(path)
        _check_complete(ds, size)
    except InvalidInstanceError:
        raise
    except RecursionError as exc:
        raise UndecodableDatasetError("cannot decode dataset: sequences nested too deeply") from exc
    except MemoryError as exc:
        raise UndecodableDatasetError("cannot decode dataset: too large to parse") from exc
    except Exception as exc:  # whatever pydicom raises on a malformed stream: the data set is undecodable
        raise UndecodableDatasetError(f"cannot decode dataset: {type(exc).__name__}: {exc}"[:300]) from exc
    ts = transfer_syntax_uid or str(ds.file_meta.get("TransferSyntaxUID", ""))
    try:
        _check_pixel_size(ds, ts)
        return _info(ds, expected_sop_class, expected_sop_instance, ts, strict)
    except InvalidInstanceError:
        raise
    except RecursionError as exc:
        raise UndecodableDatasetError("cannot decode dataset: sequences nested too deeply") from exc
    except Exception as exc:  # a malformed value deep in the header: refuse it, never crash the association
        raise UndecodableDatasetError(f"cannot decode dataset: {type(exc).__name__}: {exc}"[:300]) from exc


def _meta_end(head: bytes) -> int | None:
    """Where the data set of a Part 10 file starts according to its (0002,0000) group length; None when the
    file does not start with a preamble, DICM and a group length."""
    if len(head) < 144 or head[128:132] != b"DICM" or head[132:138] != b"\x02\x00\x00\x00UL":
        return None
    return 144 + struct.unpack_from("<I", head, 140)[0]


def _inflate(data: bytes | memoryview) -> bytes:
    """A deflated data set (PS3.5 A.5: raw deflate), inflated; truncation and deflate bombs are refused."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = inflater.decompress(data, _MAX_INFLATED)
    if inflater.unconsumed_tail:
        raise UndecodableDatasetError(f"deflated data set inflates to more than {_MAX_INFLATED >> 20} MiB")
    if not inflater.eof:
        raise UndecodableDatasetError("dataset truncated: the deflated stream ends before its end marker")
    return out


def _load(path: Path, defer_size: int | None = _DEFER, stop_before_pixels: bool = False) -> tuple[Dataset, int]:
    """(data set, size its declared lengths are measured against).

    The usual file goes to pydicom.dcmread (values > `defer_size` left on disk; measured against the file size).
    A deflated data set is inflated first and measured against the inflated size; a data set that carries group
    0002 elements is read after the file meta the node wrote (by its group length), those elements dropped.
    """
    with open(path, "rb") as f:
        head = f.read(_PREFIX)
        size = os.fstat(f.fileno()).st_size
        end = _meta_end(head)
        if end is None or end + 2 > len(head):
            return pydicom.dcmread(path, defer_size=defer_size, stop_before_pixels=stop_before_pixels), size
        meta = FileMetaDataset(read_dataset(BytesIO(head[132:end]), is_implicit_VR=False, is_little_endian=True))
        ts = UID(str(meta.get("TransferSyntaxUID", "")))
        group2_inside = head[end:end + 2] == b"\x02\x00" if ts.is_little_endian else head[end:end + 2] == b"\x00\x02"
        if not ts.is_deflated and not group2_inside:
            return pydicom.dcmread(path, defer_size=defer_size, stop_before_pixels=stop_before_pixels), size
        f.seek(end)
        body = f.read()
    if ts.is_deflated:
        body = _inflate(body)
    stop = (lambda tag, vr, length: tag in _PIXEL_TAGS) if stop_before_pixels else None
    ds = read_dataset(BytesIO(body), ts.is_implicit_VR, ts.is_little_endian, stop_when=stop)
    for tag in [t for t in ds.keys() if t.group == 0x0002]:
        del ds[tag]
    stored = FileDataset(str(path), ds, preamble=head[:128], file_meta=meta,
                         is_implicit_VR=ts.is_implicit_VR, is_little_endian=ts.is_little_endian)
    return stored, len(body)


def read_stored(path: str | Path, stop_before_pixels: bool = False) -> Dataset:
    """Read a stored instance the way the node wrote it (see the module docstring); use this, not
    pydicom.dcmread, for received files."""
    return _load(Path(path), defer_size=None, stop_before_pixels=stop_before_pixels)[0]


def _info(ds: Any, expected_sop_class: str | None, expected_sop_instance: str | None,
          transfer_syntax_uid: str, strict: bool = False) -> InstanceInfo:
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
    unusable: list[str] = []
    for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
        v = _str(ds, kw)
        if not v:
            raise DatasetMismatchError(f"required attribute {kw} missing or empty")
        if is_valid_uid(v):
            continue
        if strict or len(v) > MAX_UID_LENGTH or not _UID_SYNTAX.match(v):
            raise DatasetMismatchError(f"{kw} {v[:80]!r} is not a valid UID")
        unusable.append(f"{UNUSABLE_NONCONFORMANT_UID}: {kw} has {uid_problem(v)}")
    has_pixels = any(t in ds for t in _PIXEL_TAGS)
    if sop_class in IMAGE_SOP_CLASSES and not has_pixels:
        if strict:
            raise DatasetMismatchError(f"image SOP class {IMAGE_SOP_CLASSES[sop_class]} without pixel data")
        unusable.append(f"{UNUSABLE_NO_PIXEL_DATA}: {IMAGE_SOP_CLASSES[sop_class]} without pixel data")
    if sop_class not in UID_dictionary and sop_class not in STORAGE_SOP_CLASSES:
        unusable.append(f"{UNUSABLE_UNKNOWN_SOP_CLASS}: private or unknown SOP class {sop_class}")
    if has_pixels and transfer_syntax_uid and not pixel_decoder_available(transfer_syntax_uid):
        unusable.append(f"{UNUSABLE_PIXEL_CODEC}: no decoder for {_ts_name(transfer_syntax_uid)} pixel data")
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
    frames = frame_geometry(ds, ipp, iop, nframes) if nframes > 1 else None
    if frames is not None and iop is None:
        iop = frames.orientation  # Enhanced objects keep it in the functional groups
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
        unusable="; ".join(unusable),
        issuer_of_patient_id=_str(ds, "IssuerOfPatientID"),
        protocol_name=_str(ds, "ProtocolName"),
        referenced_series=referenced_series(ds) if _str(ds, "Modality") == "RTSTRUCT" else (),
        frame_positions=frames.positions if frames is not None else (),
        frame_times=frames.times if frames is not None else (),
    )


def _ts_name(uid: str) -> str:
    from node.sopclasses import TOLERANT_EXTRA_TRANSFER_SYNTAXES

    name = UID(uid).name
    return TOLERANT_EXTRA_TRANSFER_SYNTAXES.get(uid, name if name and name != uid else uid)
