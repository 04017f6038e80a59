"""Shared labelling of every object the node derives: equipment identity, DERIVED flags, copied patient data."""
from __future__ import annotations

from typing import TypedDict

from pydicom import Dataset

from node import __version__

MANUFACTURER = "liver-node"
MANUFACTURER_MODEL_NAME = "liver-node"
SOFTWARE_VERSIONS = __version__
INSTITUTION_DEPARTMENT = ""
#: Appended to every derived series description / content label: these objects support planning only.
NOT_FOR_DIAGNOSIS = "DERIVED, not for primary diagnosis"

# Patient and General Study attributes (mostly Type 2) copied from the source so that dciodvfy and TPS
# importers (Eclipse rejects missing Type 2) accept the output and the PACS files it under the right study.
_PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex", "PatientAge",
    "PatientWeight", "PatientSize", "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName",
    "StudyID", "AccessionNumber", "StudyDescription", "BodyPartExamined",
)
_TYPE2_DEFAULTS = {
    "PatientName": "", "PatientBirthDate": "", "PatientSex": "", "StudyDate": "", "StudyTime": "",
    "ReferringPhysicianName": "", "StudyID": "", "AccessionNumber": "",
}


def copy_patient_study(source: Dataset, target: Dataset, body_part: str = "ABDOMEN") -> None:
    """Copy patient/study identification from `source` into `target`, filling empty Type 2 values.

    BodyPartExamined is always set (dciodvfy wants it on derived images without Laterality).
    """
    for kw in _PATIENT_STUDY_KEYWORDS:
        if kw in source and source.get(kw) is not None:
            setattr(target, kw, source.get(kw))
    for kw, default in _TYPE2_DEFAULTS.items():
        if kw not in target:
            setattr(target, kw, default)
    if not target.get("BodyPartExamined"):
        target.BodyPartExamined = body_part


class Equipment(TypedDict):
    """The equipment keywords of highdicom's constructors (typed, so they can be splatted into them)."""

    manufacturer: str
    manufacturer_model_name: str
    software_versions: str
    device_serial_number: str


def equipment_kwargs() -> Equipment:
    """Keyword arguments for highdicom constructors naming this software as the device."""
    return {
        "manufacturer": MANUFACTURER,
        "manufacturer_model_name": MANUFACTURER_MODEL_NAME,
        "software_versions": SOFTWARE_VERSIONS,
        "device_serial_number": "0",
    }
