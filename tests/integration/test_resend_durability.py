"""A re-sent instance replacing a stored one survives a crash at every step (node.resend): nothing is lost, the
index never points at a missing file, and start-up finishes what was begun without a second superseded copy."""
# mypy: disable-error-code="union-attr, arg-type"
from __future__ import annotations

import time
from pathlib import Path

import pydicom

from node.header import read_header
from node.index import Arrival, Index, index_path
from node.receive import Receiver
from node.resend import resent_path
from node.store import InstanceStore

import factories as F


def _open(data: Path) -> tuple[InstanceStore, Index, Receiver]:
    store = InstanceStore(data)
    index = Index(index_path(data))
    return store, index, Receiver(store, index, None, stable_seconds=1.0)


def _spool(store: InstanceStore, ds: pydicom.Dataset) -> Path:
    p = store.tmp / f"spool-{time.time_ns()}.dcm"
    ds.save_as(p, enforce_file_format=True)
    return p


def _accept(r: Receiver, ds: pydicom.Dataset) -> Path:
    path, _new, _info = r.accept(_spool(r.store, ds), ds.SOPClassUID, ds.SOPInstanceUID, "MODALITY",
                          str(ds.file_meta.TransferSyntaxUID))
    return path


def _consistent(data: Path, index: Index) -> tuple[int, int]:
    """Every indexed file exists, every file under instances/ is indexed. Returns (instances, superseded files)."""
    indexed = index.all_paths()
    assert all(Path(p).is_file() for p in indexed), "the index points at a missing file"
    on_disk = {str(p) for p in (data / "instances").rglob("*.dcm")}
    assert on_disk == indexed, on_disk ^ indexed
    return len(indexed), len(list((data / "superseded").rglob("*.dcm")))


def _first_and_corrected(tmp_path: Path) -> tuple[Path, pydicom.Dataset, pydicom.Dataset, bytes]:
    data = tmp_path / "var"
    (ds,) = F.ct_series("P-OLD", 1)
    store, index, r = _open(data)
    r.start()
    stored = _accept(r, ds)
    r.flush()
    r.stop()
    index.close()
    corrected = pydicom.dcmread(stored)
    corrected.PatientID = "P-NEW"
    return data, ds, corrected, stored.read_bytes()


def test_crash_before_the_re_sent_copy_is_indexed(tmp_path: Path) -> None:
    data, ds, corrected, old_bytes = _first_and_corrected(tmp_path)
    store, index, r = _open(data)
    _accept(r, corrected)  # stored durably beside the first copy, then the process dies before indexing
    index.close()
    store, index, r = _open(data)
    r.reconcile()
    assert _consistent(data, index) == (1, 1)
    assert pydicom.dcmread(index.has_instance(ds.SOPInstanceUID)).PatientID == "P-NEW"
    assert next((data / "superseded").rglob("*.dcm")).read_bytes() == old_bytes
    assert [c.case_id for c in index.cases()] == ["P-NEW"]  # P-OLD emptied before any analysis: removed
    index.close()


def test_crash_after_setting_the_old_copy_aside_before_the_index_moved(tmp_path: Path) -> None:
    data, ds, corrected, old_bytes = _first_and_corrected(tmp_path)
    store, index, r = _open(data)
    old = Path(index.has_instance(ds.SOPInstanceUID))
    new = resent_path(old)
    corrected.save_as(new, enforce_file_format=True)
    r.resender._set_aside(old, ds.StudyInstanceUID, ds.SeriesInstanceUID)  # step 1 done; then the crash
    index.close()
    store, index, r = _open(data)
    assert Path(index.has_instance(ds.SOPInstanceUID)) == old and old.is_file()
    r.reconcile()  # the copy is unindexed: handled as a re-send again, the earlier link reused
    assert _consistent(data, index) == (1, 1)
    assert Path(index.has_instance(ds.SOPInstanceUID)) == new and not old.exists()
    index.close()


def test_crash_after_the_index_moved_before_the_old_copy_was_removed(tmp_path: Path) -> None:
    data, ds, corrected, old_bytes = _first_and_corrected(tmp_path)
    store, index, r = _open(data)
    old = Path(index.has_instance(ds.SOPInstanceUID))
    new = resent_path(old)
    corrected.save_as(new, enforce_file_format=True)
    kept = r.resender._set_aside(old, ds.StudyInstanceUID, ds.SeriesInstanceUID)
    index.replace_instance(Arrival(read_header(new), new, new.stat().st_size, "MODALITY", time.time()), kept,
                           "PatientID", 1.0)  # steps 1-2 done; the old file is still there when the process dies
    index.close()
    store, index, r = _open(data)
    assert Path(index.has_instance(ds.SOPInstanceUID)) == new and old.is_file()
    r.reconcile()  # the recorded old path is removed, nothing is re-indexed
    assert _consistent(data, index) == (1, 1)
    assert kept.read_bytes() == old_bytes and not old.exists()
    assert [(s.action, s.old_case, s.new_case) for s in index.superseded()] == [("replaced", "P-OLD", "P-NEW")]
    index.close()


def test_a_third_copy_at_the_freed_name_is_never_taken_for_a_leftover(tmp_path: Path) -> None:
    data, ds, corrected, old_bytes = _first_and_corrected(tmp_path)
    store, index, r = _open(data)
    r.start()
    first_name = Path(index.has_instance(ds.SOPInstanceUID))
    _accept(r, corrected)  # replaces: the first name is free again, recorded as a replaced path
    r.flush()
    r.stop()
    assert not first_name.exists() and Path(index.has_instance(ds.SOPInstanceUID)) != first_name
    third = pydicom.dcmread(index.has_instance(ds.SOPInstanceUID))
    third.PatientName = "Third^Copy"
    r = Receiver(store, index, None, stable_seconds=1.0)
    assert _accept(r, third) == first_name  # stored under the freed name; the process dies before indexing
    index.close()
    store, index, r = _open(data)
    r.reconcile()  # not a leftover of the replacement (another file): handled as a re-send, nothing lost
    assert _consistent(data, index) == (1, 2)
    assert pydicom.dcmread(index.has_instance(ds.SOPInstanceUID)).PatientName == "Third^Copy"
    index.close()
