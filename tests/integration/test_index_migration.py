"""The index of a data folder made by liver-node 0.1 (before the index had a schema version) is migrated in
place: nothing received is lost, paths become relative to the data folder, and the node serves it again.

tests/data/datadir-v1 was made by the code of main before the workflow interface (commit a604092) with
tests/data/make_datadir_v1.py: a perfusion CT and a GSA SPECT + SPECT/CT of one patient, received over DICOM
and analysed (the tiny perfusion series fails its analysis: a failed case is part of a real data folder).
"""
from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pydicom
import pytest

from node.classify import plan_case
from node.index import INDEX_SCHEMA_VERSION, Index, IndexSchemaError, index_path
from node.service import Node

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


def test_a_v1_data_folder_is_migrated_and_keeps_everything(v1_dir: Path) -> None:
    assert _schema(v1_dir) is None  # as made by 0.1
    before = sqlite3.connect(index_path(v1_dir))
    counts = {t: before.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
              for t in ("instances", "series", "studies", "cases")}
    before.close()
    index = Index(index_path(v1_dir))
    try:
        assert _schema(v1_dir) == str(INDEX_SCHEMA_VERSION)
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
        assert index.case_inputs("P-V1") == {s.series_uid for s in series}  # analysed: every series counts
        for s in series:  # every instance is found again, in this (moved) data folder
            paths = index.instance_paths(s.series_uid)
            assert len(paths) == s.n_instances and all(p.is_file() for p in paths)
            assert all(str(p).startswith(str(v1_dir)) for p in paths)
            assert {str(pydicom.dcmread(p, stop_before_pixels=True).SeriesInstanceUID) for p in paths} == \
                {s.series_uid}
        stored = [r[0] for r in index._db.execute("SELECT path FROM instances")]
        assert all(not Path(p).is_absolute() and p.startswith("instances/") for p in stored)
    finally:
        index.close()
    Index(index_path(v1_dir)).close()  # opening again changes nothing
    assert _schema(v1_dir) == str(INDEX_SCHEMA_VERSION)


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
