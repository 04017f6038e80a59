"""Small, valid DICOM objects made in the tests (CT slices, perfusion series, NM multi-frame, RTSTRUCT)."""
from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DSeq
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid

CT = "1.2.840.10008.5.1.4.1.1.2"
NM = "1.2.840.10008.5.1.4.1.1.20"
RTSS = "1.2.840.10008.5.1.4.1.1.481.3"


def _base(sop_class: str, modality: str, patient_id: str, study_uid: str, series_uid: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.PatientName = f"Test^{patient_id}"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = "20261121"
    ds.StudyTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.Manufacturer = "tests"
    return ds


def ct_slice(patient_id: str, study_uid: str, series_uid: str, z: float, *, rows: int = 64, cols: int = 64,
             for_uid: str | None = None, acq_seconds: float | None = None, instance: int = 1,
             description: str = "CT", seed: int = 0) -> Dataset:
    ds = _base(CT, "CT", patient_id, study_uid, series_uid)
    ds.SeriesDescription = description
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.InstanceNumber = instance
    ds.FrameOfReferenceUID = for_uid or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = [-100.0, -100.0, float(z)]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [3.0, 3.0]
    ds.SliceThickness = 5.0
    ds.KVP = "120"
    ds.PatientPosition = "HFS"
    if acq_seconds is not None:
        h, rem = divmod(acq_seconds, 3600)
        m, s = divmod(rem, 60)
        ds.AcquisitionTime = f"{int(h):02d}{int(m):02d}{s:09.6f}"
        ds.AcquisitionDate = "20261121"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    rng = np.random.default_rng(seed + instance)
    ds.PixelData = (rng.integers(900, 1200, (rows, cols), dtype=np.uint16)).tobytes()
    return ds


def ct_series(patient_id: str, n_slices: int = 4, *, study_uid: str | None = None, time_points: int = 1,
              rows: int = 64, cols: int = 64, for_uid: str | None = None, description: str = "CT") -> list[Dataset]:
    """A CT series; with time_points > 1, each slice position repeats once per time point (perfusion)."""
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    for_uid = for_uid or generate_uid()
    out = []
    for t in range(time_points):
        for k in range(n_slices):
            out.append(ct_slice(patient_id, study_uid, series_uid, z=5.0 * k, rows=rows, cols=cols, for_uid=for_uid,
                                acq_seconds=36000 + 3.0 * t, instance=t * n_slices + k + 1,
                                description=description, seed=t))
    return out


def nm_multiframe(patient_id: str, *, study_uid: str | None = None, for_uid: str | None = None, frames: int = 8,
                  size: int = 32, tracer_text: str = "Tc-99m GSA", tracer_code: str = "446534003") -> Dataset:
    ds = _base(NM, "NM", patient_id, study_uid or generate_uid(), generate_uid())
    ds.SeriesDescription = "SPECT " + tracer_text
    ds.ImageType = ["ORIGINAL", "PRIMARY", "RECON TOMO", "EMISSION"]
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = for_uid or generate_uid()
    ds.PositionReferenceIndicator = ""
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = pydicom.tag.Tag(0x0054, 0x0080)
    ds.SliceVector = list(range(1, frames + 1))
    ds.NumberOfSlices = frames
    ds.PixelSpacing = [4.4, 4.4]
    ds.SpacingBetweenSlices = 4.4
    ds.SliceThickness = 4.4
    det = Dataset()
    det.ImagePositionPatient = [-70.0, -70.0, 0.0]
    det.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.DetectorInformationSequence = DSeq([det])
    rp = Dataset()
    rp.Radiopharmaceutical = tracer_text
    code = Dataset()
    code.CodeValue = tracer_code
    code.CodingSchemeDesignator = "SCT"
    code.CodeMeaning = tracer_text
    rp.RadiopharmaceuticalCodeSequence = DSeq([code])
    ds.RadiopharmaceuticalInformationSequence = DSeq([rp])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.PixelRepresentation = 0
    rng = np.random.default_rng(1)
    ds.PixelData = rng.integers(0, 1000, (frames, size, size), dtype=np.uint16).tobytes()
    return ds


def rtstruct(patient_id: str, ct: Sequence[Dataset], names: Sequence[str] = ("Liver",)) -> Dataset:
    """A minimal structure set naming ROIs on `ct` (contours are not needed by the receiving side)."""
    ref = ct[0]
    ds = _base(RTSS, "RTSTRUCT", patient_id, ref.StudyInstanceUID, generate_uid())
    ds.StructureSetLabel = "TEST"
    ds.StructureSetDate = "20261121"
    ds.StructureSetTime = "120000"
    fr = Dataset()
    fr.FrameOfReferenceUID = ref.FrameOfReferenceUID
    ds.ReferencedFrameOfReferenceSequence = DSeq([fr])
    rois = []
    for i, n in enumerate(names, 1):
        r = Dataset()
        r.ROINumber = i
        r.ReferencedFrameOfReferenceUID = ref.FrameOfReferenceUID
        r.ROIName = n
        r.ROIGenerationAlgorithm = "MANUAL"
        rois.append(r)
    ds.StructureSetROISequence = DSeq(rois)
    return ds


def write(datasets: Sequence[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in datasets:
        p = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def jpeg2000(ds: Dataset) -> Dataset:
    """A losslessly JPEG 2000-compressed copy (pylibjpeg-openjpeg encoder)."""
    c = pydicom.dcmread(_roundtrip(ds))
    c.compress(JPEG2000Lossless)
    return c


def jpeg_lossless_file(src: Path, dst: Path) -> Path:
    """JPEG Lossless SV1 (1.2.840.10008.1.2.4.70) via dcmtk's dcmcjpeg."""
    subprocess.run(["dcmcjpeg", "+e1", str(src), str(dst)], check=True, capture_output=True)
    return dst


def _roundtrip(ds: Dataset):
    import io

    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    buf.seek(0)
    return buf


def dataset_bytes(path: Path) -> bytes:
    """The dataset part of a Part 10 file (after the file meta group), for byte-identity checks."""
    raw = path.read_bytes()
    assert raw[128:132] == b"DICM"
    # (0002,0000) UL group length: explicit VR LE, value at offset 140
    group_len = int.from_bytes(raw[140:144], "little")
    return raw[144 + group_len:]
