"""DICOM building blocks shared by the CT and NM writers: identities, common modules, file writing."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_data_element, write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

from node import __version__

MANUFACTURER = "liver-node"
MODEL_NAME = "digital liver phantom"


@dataclass(frozen=True)
class Patient:
    id: str
    name: str
    birth_date: str = "19580314"
    sex: str = "M"
    weight_kg: str = "68"
    size_m: str = "1.70"


@dataclass(frozen=True)
class Study:
    uid: str
    date: str
    time: str
    description: str
    study_id: str
    accession: str

    def start(self) -> datetime:
        return datetime.strptime(self.date + self.time, "%Y%m%d%H%M%S")


@dataclass(frozen=True)
class Series:
    study: Study
    uid: str
    number: int
    description: str
    modality: str
    frame_of_reference_uid: str
    start: datetime          # SeriesDate/SeriesTime and the reference for acquisition times


def new_uid() -> str:
    return generate_uid()


def dicom_time(t: datetime) -> str:
    """TM with microseconds (HHMMSS.ffffff)."""
    return t.strftime("%H%M%S.%f")


def dicom_datetime(t: datetime) -> str:
    return t.strftime("%Y%m%d%H%M%S.%f")


def at_offset(start: datetime, seconds: float) -> datetime:
    return start + timedelta(seconds=seconds)


def base_dataset(patient: Patient, series: Series, sop_class_uid: str) -> Dataset:
    """Patient, General Study, Patient Study, General Series, Frame of Reference, General Equipment and
    SOP Common attributes shared by every instance of `series` (SOPInstanceUID is set per instance)."""
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.InstanceCreationDate = series.study.date
    ds.InstanceCreationTime = series.study.time
    ds.PatientName = patient.name
    ds.PatientID = patient.id
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.PatientWeight = patient.weight_kg
    ds.PatientSize = patient.size_m
    ds.StudyInstanceUID = series.study.uid
    ds.StudyDate = series.study.date
    ds.StudyTime = series.study.time
    ds.StudyDescription = series.study.description
    ds.StudyID = series.study.study_id
    ds.AccessionNumber = series.study.accession
    ds.ReferringPhysicianName = "Referrer^Phantom"
    ds.Modality = series.modality
    ds.SeriesInstanceUID = series.uid
    ds.SeriesNumber = series.number
    ds.SeriesDescription = series.description
    ds.SeriesDate = series.start.strftime("%Y%m%d")
    ds.SeriesTime = dicom_time(series.start)
    ds.BodyPartExamined = "ABDOMEN"
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = series.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = __version__
    ds.InstitutionName = "Phantom Hospital"
    return ds


def write(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> None:
    """Write `ds` as a DICOM Part 10 file (file meta built here)."""
    ds.file_meta = _file_meta(ds, transfer_syntax)
    dcmwrite(path, ds, enforce_file_format=True)


def _file_meta(ds: Dataset, transfer_syntax: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = transfer_syntax
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "LIVERNODE_PHAN"
    return meta


def _encode_elements(ds: Dataset) -> dict[int, bytes]:
    """Explicit VR little endian bytes of each top-level element of `ds`, keyed by tag."""
    out = {}
    for elem in ds:
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        write_data_element(fp, elem)
        out[int(elem.tag)] = fp.getvalue()
    return out


class SeriesEncoder:
    """Fast Part 10 encoding of many instances that share most attributes (a CT series).

    The shared `template` is encoded once; each instance encodes only its own elements and the file meta,
    and the elements are merged in tag order. Native (uncompressed) explicit VR little endian only.
    """

    def __init__(self, template: Dataset) -> None:
        self._fixed = _encode_elements(template)
        self._sop_class = template.SOPClassUID

    def encode(self, instance: Dataset) -> bytes:
        parts = dict(self._fixed)
        parts.update(_encode_elements(instance))
        fp = DicomBytesIO()
        fp.is_little_endian, fp.is_implicit_VR = True, False
        head = Dataset()
        head.SOPClassUID, head.SOPInstanceUID = self._sop_class, instance.SOPInstanceUID
        write_file_meta_info(fp, _file_meta(head, ExplicitVRLittleEndian), enforce_standard=True)
        return b"\0" * 128 + b"DICM" + fp.getvalue() + b"".join(parts[t] for t in sorted(parts))


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
