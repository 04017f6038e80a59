"""The case summary as an Encapsulated PDF (PS3.3 A.45.1), for PACS and viewers that show PDF documents.

The PDF holds the same pages as the summary's Secondary Captures, drawn as vectors (text stays text: it can be
searched, copied and printed sharp). Its header copies patient and study from the report's reference dataset,
like every output; the document burns in the patient's identity (BurnedInAnnotation YES).
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import pydicom
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from node.derived import NOT_FOR_DIAGNOSIS, copy_patient_study, equipment_kwargs

__all__ = ["ENCAPSULATED_PDF_STORAGE", "encapsulated_pdf"]

ENCAPSULATED_PDF_STORAGE = "1.2.840.10008.5.1.4.1.1.104.1"


def encapsulated_pdf(pdf: bytes, ref: Dataset, sources: Sequence[Dataset], *, title: str, series_uid: str,
                     series_number: int, instance_number: int = 1) -> Dataset:
    """An Encapsulated PDF Storage dataset of `pdf` in the study of `ref`, naming `sources` as its sources."""
    if not pdf.startswith(b"%PDF"):
        raise ValueError("not a PDF document")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ENCAPSULATED_PDF_STORAGE
    ds.SOPInstanceUID = generate_uid()
    now = _dt.datetime.now()
    ds.InstanceCreationDate, ds.InstanceCreationTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    copy_patient_study(ref, ds)
    if "BodyPartExamined" in ds:
        del ds.BodyPartExamined  # not part of the Encapsulated PDF IOD
    # Encapsulated Document Series, General Equipment, SC Equipment
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"{title} - {NOT_FOR_DIAGNOSIS}"[:64]
    equipment = equipment_kwargs()
    ds.Manufacturer = equipment["manufacturer"]
    ds.ManufacturerModelName = equipment["manufacturer_model_name"]
    ds.SoftwareVersions = equipment["software_versions"]
    ds.DeviceSerialNumber = equipment["device_serial_number"]
    ds.ConversionType = "WSD"  # rendered by software
    # Encapsulated Document
    ds.InstanceNumber = instance_number
    ds.ContentDate, ds.ContentTime = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    ds.AcquisitionDateTime = ""
    ds.BurnedInAnnotation = "YES"  # the pages' headers show the patient's name, ID and birth date
    ds.DocumentTitle = f"{title} ({NOT_FOR_DIAGNOSIS})"
    ds.ConceptNameCodeSequence = DicomSequence([])
    ds.VerificationFlag = "UNVERIFIED"
    items = []
    for src in sources:
        item = Dataset()
        item.ReferencedSOPClassUID = src.SOPClassUID
        item.ReferencedSOPInstanceUID = src.SOPInstanceUID
        items.append(item)
    if items:
        ds.SourceInstanceSequence = DicomSequence(items)
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = pdf + (b"\0" if len(pdf) % 2 else b"")  # OB: even length
    ds.EncapsulatedDocumentLength = len(pdf)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = pydicom.uid.PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    return ds
