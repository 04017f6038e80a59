"""Real corpus files (../shared/realworld-dicom) re-labelled into the patients of a test: only identity and link
attributes change (PatientID, IssuerOfPatientID, PatientName, Study/Series/SOP Instance UIDs, FrameOfReferenceUID,
the series an RTSTRUCT references, radiopharmaceutical, times); sent with dcmtk storescu; status read with
`liver-node status --json`."""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ImplicitVRLittleEndian

from testpeers.storescu import send

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "realworld-dicom"  # ../shared from the repository
ROOT = Path(__file__).resolve().parents[1]

_DELETE = object()


def corpus(*parts: str) -> list[Path]:
    """Corpus files: one file or every file of a folder (sorted)."""
    p = CORPUS.joinpath(*parts)
    return sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]


def read(path: Path) -> Dataset:
    ds = pydicom.dcmread(path, force=True)
    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    if "TransferSyntaxUID" not in meta:  # a raw implicit VR data set as published (no Part 10 header)
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta = meta
    return ds


def relabel(ds: Dataset, **attrs: Any) -> Dataset:
    """Set (or, with value None, remove) identity/link attributes of a data set read by read()."""
    for kw, value in attrs.items():
        if value is None:
            if kw in ds:
                delattr(ds, kw)
        else:
            setattr(ds, kw, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def point_contour_at(rt: Dataset, series: Dataset) -> Dataset:
    """Make a real RTSTRUCT reference another series (frame of reference, study, series: the link attributes)."""
    for ref_for in rt.ReferencedFrameOfReferenceSequence:
        ref_for.FrameOfReferenceUID = series.FrameOfReferenceUID
        for study in ref_for.get("RTReferencedStudySequence") or []:
            study.ReferencedSOPInstanceUID = series.StudyInstanceUID
            for s in study.get("RTReferencedSeriesSequence") or []:
                s.SeriesInstanceUID = series.SeriesInstanceUID
    for roi in rt.StructureSetROISequence:
        roi.ReferencedFrameOfReferenceUID = series.FrameOfReferenceUID
    return rt


def write(datasets: Iterable[Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for ds in datasets:
        p = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def storescu(port: int, files: Sequence[Path], calling: str = "MODALITY", expect_success: bool = True
             ) -> dict[Path, str]:
    """dcmtk storescu (testpeers.storescu): each file's store response; asserts all succeeded unless told not to."""
    responses, log = send(port, files, calling=calling)
    if expect_success:
        bad = {p.name: v for p, v in responses.items() if v != "Success"}
        assert not bad, f"{bad}\n{log[-3000:]}"
    return responses


def status_json(cfg: Path) -> dict[str, Any]:
    """`liver-node status --config CFG --json`, parsed."""
    r = subprocess.run([sys.executable, "-m", "node", "status", "--config", str(cfg), "--json"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return dict(json.loads(r.stdout))


def cli(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args, "--config", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def case_of(status: dict[str, Any], case_id: str) -> dict[str, Any] | None:
    return next((c for c in status["cases"] if c["case_id"] == case_id), None)


def series_by_uid(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["series_uid"]: s for s in case["series"]}
