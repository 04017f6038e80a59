"""The index of an older data folder is migrated in place through every step: nothing received is lost, paths
become relative to the data folder, series are judged by content, dose series get their roles, and the node serves
it again.

tests/data/datadir-v1 was made by the code of main before the workflow interface (commit a604092) with
tests/data/make_datadir_v1.py: a perfusion CT and a GSA SPECT + SPECT/CT of one patient, received over DICOM
and analysed (the tiny perfusion series fails its analysis: a failed case is part of a real data folder). A schema-2
folder is that one after the 1 -> 2 step alone (what a node of schema 2 made of it). A schema-3 folder holding dose
series is made here: received by this version, then its index set back to what schema 3 kept of them.
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DSeq
from pydicom.uid import UID, generate_uid

from node.classify import explain_roles, plan_case
from node.dose.rtdose import build_rt_dose, build_rt_plan
from node.header import UNUSABLE_UNKNOWN_SOP_CLASS, read_header
from node.index import INDEX_SCHEMA_VERSION, Index, IndexSchemaError, index_path
from node.service import Node

import factories as F
from conftest import make_config

V1 = Path(__file__).resolve().parents[1] / "data" / "datadir-v1"


@pytest.fixture
def v1_dir(tmp_path: Path) -> Path:
    data = tmp_path / "var"
    shutil.copytree(V1, data)
    return data


def _schema(data: Path) -> str | None:
    db = sqlite3.connect(index_path(data))
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "index_meta" not in tables:
            return None
        return db.execute("SELECT value FROM index_meta WHERE key='schema_version'").fetchone()[0]
    finally:
        db.close()


def _series_columns(data: Path) -> set[str]:
    db = sqlite3.connect(index_path(data))
    try:
        return {r[1] for r in db.execute("PRAGMA table_info(series)")}
    finally:
        db.close()


def _assert_migrated_v1_content(data: Path, counts: dict[str, int]) -> None:
    """What the v1 folder holds, read through an index migrated to the current schema."""
    index = Index(index_path(data))
    try:
        assert _schema(data) == str(INDEX_SCHEMA_VERSION) == "4"
        assert {"radionuclide_code", "dose_summation_type", "referenced_sop_uids", "case_id"} <= _series_columns(data)
        assert index.counts()["instances"] == counts["instances"] == 9
        (case,) = index.cases()
        assert case.case_id == "P-V1" and case.state == "failed" and "perfusion" in case.reason
        series = index.series_of_case("P-V1")
        assert len(series) == counts["series"] == 3
        roles = plan_case(series, ("Liver",)).roles
        # schema 3 judges series by content: the tiny 3-time-point "perfusion" and the 2-slice "SPECT/CT" of this
        # folder are neither; the SPECT's slice positions were read from its stored header during the migration
        assert sorted(roles.values()) == ["other", "other", "spect-gsa"]
        nm = next(s for s in series if s.modality == "NM")
        assert nm.content.positions == 8 and nm.content.spacing_mm == pytest.approx(4.4)
        # schema 4: the GSA SPECT's header was read again; it names no radionuclide, and is no RT object
        assert (nm.radionuclide_code, nm.dose_summation_type, nm.referenced_sop_uids) == ("", "", ())
        assert nm.radiopharmaceutical_code == "446534003"
        assert index.case_inputs("P-V1") == {s.series_uid for s in series}  # analysed: every series counts
        for s in series:  # every instance is found again, in this (moved) data folder
            paths = index.instance_paths(s.series_uid)
            assert len(paths) == s.n_instances and all(p.is_file() for p in paths)
            assert all(str(p).startswith(str(data)) for p in paths)
            assert {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in paths} == \
                {s.series_uid}
        stored = [r[0] for r in index._db.execute("SELECT path FROM instances")]
        assert all(not Path(p).is_absolute() and p.startswith("instances/") for p in stored)
    finally:
        index.close()
    Index(index_path(data)).close()  # opening again changes nothing
    assert _schema(data) == str(INDEX_SCHEMA_VERSION)


def _counts(data: Path) -> dict[str, int]:
    db = sqlite3.connect(index_path(data))
    try:
        return {t: db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("instances", "series", "studies",
                                                                                  "cases")}
    finally:
        db.close()


def test_a_v1_data_folder_is_migrated_and_keeps_everything(v1_dir: Path) -> None:
    assert _schema(v1_dir) is None  # as made by 0.1
    _assert_migrated_v1_content(v1_dir, _counts(v1_dir))


def test_a_v2_data_folder_is_migrated_through_3_and_4(v1_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    counts = _counts(v1_dir)
    with monkeypatch.context() as m:  # a node of schema 2 opens the 0.1 folder: the 1 -> 2 step only
        m.setattr("node.index.INDEX_SCHEMA_VERSION", 2)
        Index(index_path(v1_dir)).close()
    assert _schema(v1_dir) == "2"
    assert "case_id" not in _series_columns(v1_dir) and "radionuclide_code" not in _series_columns(v1_dir)
    _assert_migrated_v1_content(v1_dir, counts)


# ------------------------------------------------------------------ a schema-3 folder with dose series
PET_CLASS, RT_DOSE_CLASS, RT_PLAN_CLASS = ("1.2.840.10008.5.1.4.1.1.128", "1.2.840.10008.5.1.4.1.1.481.2",
                                           "1.2.840.10008.5.1.4.1.1.481.5")


def _code(value: str, meaning: str) -> DSeq:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, "SCT", meaning
    return DSeq([item])


def _y90_pet(patient_id: str, study_uid: str, for_uid: str, n: int = 12) -> list[Dataset]:
    """A post-therapy Y-90 PET series (BQML) over z 0..55 mm, in the frame of reference of its CT."""
    series_uid = generate_uid()
    out = []
    for k in range(n):
        ds = F.ct_slice(patient_id, study_uid, series_uid, z=5.0 * k, rows=16, cols=16, for_uid=for_uid,
                        instance=k + 1, description="Y90 PET")
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(PET_CLASS)
        ds.Modality = "PT"
        ds.Units, ds.DecayCorrection, ds.CorrectedImage = "BQML", "START", ["ATTN", "DECY"]
        for keyword in ("RescaleIntercept", "KVP"):
            delattr(ds, keyword)
        rp = Dataset()
        rp.Radiopharmaceutical = "Yttrium-90 microspheres"
        rp.RadionuclideCodeSequence = _code("14691008", "^90^Yttrium")
        rp.RadiopharmaceuticalCodeSequence = _code("764678003", "Yttrium^90^ microspheres")
        ds.RadiopharmaceuticalInformationSequence = DSeq([rp])
        out.append(ds)
    return out


def _plan_dose(planning: list[Dataset]) -> tuple[Dataset, Dataset]:
    """An RT Plan and its PLAN dose on the planning CT (the encoders the node's own dose uses)."""
    plan = build_rt_plan(planning[0], label="LIVER SBRT", name="Liver", description="test plan",
                         prescription="test")
    grid = sitk.GetImageFromArray(np.full((10, 8, 8), 2.0, np.float32))
    grid.SetSpacing((6.0, 6.0, 6.0))
    grid.SetOrigin((-90.0, -90.0, 20.0))
    dose = build_rt_dose(grid, planning[0], series_description="TPS dose", comment="test", method="test",
                         rt_plan=plan)
    return plan, dose


def _store(index: Index, data: Path, datasets: list[Dataset]) -> None:
    for ds in datasets:
        folder = data / "instances" / str(ds.StudyInstanceUID) / str(ds.SeriesInstanceUID)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        index.add_instance(read_header(path), path, path.stat().st_size, "TEST", 1.0)


def _roles(data: Path, case_id: str) -> dict[str, tuple[str, str]]:
    index = Index(index_path(data))
    try:
        return explain_roles(index.series_of_case(case_id), ("Liver",))
    finally:
        index.close()


def test_a_v3_data_folder_gets_the_dose_roles_from_the_stored_headers(tmp_path: Path) -> None:
    """Schema 3 kept no radionuclide, summation type or RT references, knew neither RT Dose nor RT Plan (stored as
    unknown SOP classes, unusable) nor an RT Dose's planes: the 3 -> 4 step reads them from the stored files."""
    data = tmp_path / "var"
    data.mkdir()
    pid = "P-V3"
    planning = F.ct_series(pid, 24, description="planning CT")  # 24 slices over 115 mm
    pet_study, pet_for = generate_uid(), generate_uid()
    pet_ct = [F.ct_slice(pid, pet_study, generate_uid(), z=5.0 * k, for_uid=pet_for, instance=k + 1,
                         description="PET/CT CT") for k in range(12)]
    for ds in pet_ct[1:]:
        ds.SeriesInstanceUID = pet_ct[0].SeriesInstanceUID
    pet = _y90_pet(pid, pet_study, pet_for)
    plan, dose = _plan_dose(planning)
    index = Index(index_path(data))
    try:
        _store(index, data, planning + pet_ct + pet + [plan, dose])
    finally:
        index.close()
    before = _roles(data, pid)
    assert {before[str(ds.SeriesInstanceUID)][0] for ds in (planning[0], pet_ct[0], pet[0], plan, dose)} == {
        "planning-ct", "spect-ct", "y90-post", "rt-plan", "plan-dose"}
    assert "10 slices" in before[str(dose.SeriesInstanceUID)][1]  # the grid's planes

    # what an index of schema 3 held of the same files
    db = sqlite3.connect(index_path(data))
    for column in ("radionuclide_code", "dose_summation_type", "referenced_sop_uids"):
        db.execute(f"ALTER TABLE series DROP COLUMN {column}")
    for uid, sop_class in ((plan.SOPInstanceUID, RT_PLAN_CLASS), (dose.SOPInstanceUID, RT_DOSE_CLASS)):
        db.execute("UPDATE instances SET frames='', unusable=? WHERE sop_instance_uid=?",
                   (f"{UNUSABLE_UNKNOWN_SOP_CLASS}: private or unknown SOP class {sop_class}", str(uid)))
    db.execute("UPDATE index_meta SET value='3' WHERE key='schema_version'")
    db.commit()
    db.close()

    after = _roles(data, pid)  # opening it migrates 3 -> 4
    assert _schema(data) == "4"
    assert after == before  # every role and reason as if received by this version
    index = Index(index_path(data))
    try:
        rows = {s.series_uid: s for s in index.series_of_case(pid)}
    finally:
        index.close()
    assert rows[str(pet[0].SeriesInstanceUID)].radionuclide_code == "14691008"
    d = rows[str(dose.SeriesInstanceUID)]
    assert d.dose_summation_type == "PLAN" and d.referenced_sop_uids == (str(plan.SOPInstanceUID),)
    assert d.content.unusable_instances == 0 and d.content.positions == 10
    assert rows[str(plan.SeriesInstanceUID)].content.unusable_instances == 0


def test_the_node_serves_a_migrated_folder_without_reindexing(v1_dir: Path) -> None:
    node = Node(make_config(v1_dir))
    node.start()
    try:
        assert node.receiver.reconcile() == 0  # every file on disk is known: nothing re-indexed, nothing lost
        assert node.index.get_case("P-V1") is not None
    finally:
        node.stop()


def test_an_index_from_a_newer_version_is_refused(v1_dir: Path) -> None:
    Index(index_path(v1_dir)).close()
    db = sqlite3.connect(index_path(v1_dir))
    db.execute("UPDATE index_meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(IndexSchemaError, match="schema 99"):
        Index(index_path(v1_dir))
