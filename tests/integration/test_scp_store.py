"""Storage SCP on loopback with real peers: pynetdicom SCU and dcmtk storescu/echoscu."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLosslessSV1,
    RLELossless,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

import factories as F
from conftest import make_config

pytestmark = pytest.mark.network
ENV = {**os.environ, "TCP_NODELAY": "1"}


def _scu(port: int, contexts: list[tuple[str, list[str] | None]], ae_title: str = "TESTSCU",
         called: str = "LIVERNODE"):
    ae = AE(ae_title=ae_title)
    for uid, ts in contexts:
        if ts:
            ae.add_requested_context(uid, ts)
        else:
            ae.add_requested_context(uid)
    return ae.associate("127.0.0.1", port, ae_title=called)


def _stored(node, sop_uid: str) -> Path:
    node.receiver.flush()
    p = node.index.has_instance(sop_uid)
    assert p, f"{sop_uid} not indexed"
    return Path(p)


def test_pynetdicom_stores_ct_nm_rtstruct_byte_identical(node_factory, tmp_path: Path) -> None:
    node = node_factory(workflows={})
    port = node.address[1]
    ct = F.ct_series("P-STORE", 3)
    nm = F.nm_multiframe("P-STORE", frames=6)
    rs = F.rtstruct("P-STORE", ct)
    files = F.write(ct + [nm, rs], tmp_path / "src")
    assoc = _scu(port, [(F.CT, None), (F.NM, None), (F.RTSS, None)])
    assert assoc.is_established
    for f in files:
        status = assoc.send_c_store(f)  # sent from file: the encoded dataset goes out unchanged
        assert status.Status == 0x0000
    assoc.release()
    node.receiver.flush()
    for f, ds in zip(files, ct + [nm, rs], strict=False):
        stored = _stored(node, ds.SOPInstanceUID)
        assert F.dataset_bytes(stored) == F.dataset_bytes(f)
        assert stored.is_relative_to(node.config.node.data_dir / "instances")
    series = {s.modality: s for s in node.index.series_of_case("P-STORE")}
    assert series["CT"].n_instances == 3 and series["NM"].n_instances == 1
    assert series["NM"].radiopharmaceutical == "Tc-99m GSA" and series["NM"].radiopharmaceutical_code == "446534003"
    assert series["RTSTRUCT"].roi_names == ("Liver",)
    assert series["RTSTRUCT"].referenced_frame_of_reference == ct[0].FrameOfReferenceUID
    assert series["CT"].frame_of_reference_uid == ct[0].FrameOfReferenceUID


def test_index_keeps_geometry_and_time(node_factory) -> None:
    node = node_factory(workflows={})
    ct = F.ct_series("P-IDX", 2, time_points=3)
    assoc = _scu(node.address[1], [(F.CT, None)])
    for ds in ct:
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    node.receiver.flush()
    (s,) = node.index.series_of_case("P-IDX")
    assert s.max_position_repeats == 3  # each slice position seen once per time point
    rows = node.index._db.execute("SELECT ipp_z, acquisition_time, image_orientation FROM instances "
                                  "ORDER BY acquisition_time, ipp_z").fetchall()
    assert [r[0] for r in rows] == [0.0, 5.0] * 3
    times = sorted({r[1] for r in rows})
    assert [round(t - times[0], 3) for t in times] == [0.0, 3.0, 6.0]
    assert rows[0][2] == "1\\0\\0\\0\\1\\0"


def test_dcmtk_storescu_and_echoscu_with_compressed_ct(node_factory, tmp_path: Path) -> None:
    node = node_factory(workflows={})
    port = node.address[1]
    plain = F.write(F.ct_series("P-DCMTK", 2), tmp_path / "plain")
    j2k_ds = F.jpeg2000(pydicom.dcmread(plain[0]))
    (j2k,) = F.write([j2k_ds], tmp_path / "j2k")
    jpll = F.jpeg_lossless_file(plain[1], tmp_path / "jpll.dcm")
    assert str(pydicom.dcmread(j2k).file_meta.TransferSyntaxUID) == JPEG2000Lossless
    assert str(pydicom.dcmread(jpll).file_meta.TransferSyntaxUID) == JPEGLosslessSV1

    r = subprocess.run(["echoscu", "-aet", "DCMTK", "-aec", "LIVERNODE", "127.0.0.1", str(port)], env=ENV,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    # -xv / -xs: storescu proposes JPEG 2000 / JPEG Lossless first; the node must take them as they are
    for f, option in ((j2k, "-xv"), (jpll, "-xs")):
        r = subprocess.run(["storescu", option, "-aet", "DCMTK", "-aec", "LIVERNODE", "127.0.0.1", str(port),
                            str(f)], env=ENV, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "Failed" not in r.stderr, r.stderr
    for src in (j2k, jpll):
        ds = pydicom.dcmread(src)
        stored = _stored(node, ds.SOPInstanceUID)
        assert F.dataset_bytes(stored) == F.dataset_bytes(src)  # stored as received, not transcoded
        assert pydicom.dcmread(stored).file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID
        assert (pydicom.dcmread(stored).pixel_array == pydicom.dcmread(plain[0 if src == j2k else 1])
                .pixel_array).all()


def test_required_sop_classes_and_transfer_syntaxes_are_accepted(node_factory) -> None:
    node = node_factory(workflows={})
    classes = {
        "CT": "1.2.840.10008.5.1.4.1.1.2", "Enhanced CT": "1.2.840.10008.5.1.4.1.1.2.1",
        "NM": "1.2.840.10008.5.1.4.1.1.20", "PET": "1.2.840.10008.5.1.4.1.1.128",
        "RT Structure Set": "1.2.840.10008.5.1.4.1.1.481.3", "Secondary Capture": "1.2.840.10008.5.1.4.1.1.7",
        "Parametric Map": "1.2.840.10008.5.1.4.1.1.30", "Segmentation": "1.2.840.10008.5.1.4.1.1.66.4",
    }
    syntaxes = [ExplicitVRLittleEndian, JPEGLosslessSV1, JPEG2000Lossless, RLELossless,
                DeflatedExplicitVRLittleEndian]
    # one context per (class, syntax) so each pair is negotiated on its own
    ae = AE(ae_title="NEGO")
    for uid in classes.values():
        for ts in syntaxes:
            ae.add_requested_context(uid, ts)
    assoc = ae.associate("127.0.0.1", node.address[1], ae_title="LIVERNODE")
    assert assoc.is_established
    accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
    assoc.release()
    missing = [(name, ts) for name, uid in classes.items() for ts in syntaxes if (uid, ts) not in accepted]
    assert not missing


def test_duplicate_sop_instance_replaces_and_keeps_the_old_copy(node_factory) -> None:
    node = node_factory(workflows={})
    (ds,) = F.ct_series("P-DUP", 1)
    assoc = _scu(node.address[1], [(F.CT, None)])
    assert assoc.send_c_store(ds).Status == 0
    first = _stored(node, ds.SOPInstanceUID)
    before = first.read_bytes()
    assert assoc.send_c_store(ds).Status == 0  # identical content: nothing changes
    node.receiver.flush()
    assert _stored(node, ds.SOPInstanceUID) == first and first.read_bytes() == before
    ds.PatientName = "Changed^Name"  # a resend with other content replaces it; the old copy is kept, not deleted
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    node.receiver.flush()
    data = node.config.node.data_dir
    assert node.index.counts()["instances"] == 1
    (current,) = list((data / "instances").rglob("*.dcm"))
    assert pydicom.dcmread(current).PatientName == "Changed^Name" and _stored(node, ds.SOPInstanceUID) == current
    (kept,) = list((data / "superseded").rglob("*.dcm"))
    assert kept.read_bytes() == before
    (row,) = node.index.superseded()
    assert row.action == "replaced" and "PatientName" in row.differences and row.kept_path == kept


def test_duplicate_keep_first_keeps_the_stored_copy_and_sets_the_new_one_aside(node_factory, tmp_path: Path) -> None:
    node = node_factory(make_config(tmp_path / "var", receive={"duplicates": "keep-first"}), workflows={})
    (ds,) = F.ct_series("P-DUP", 1)
    assoc = _scu(node.address[1], [(F.CT, None)])
    assert assoc.send_c_store(ds).Status == 0
    first = _stored(node, ds.SOPInstanceUID)
    before = first.read_bytes()
    ds.PatientName = "Changed^Name"
    assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    node.receiver.flush()
    data = node.config.node.data_dir
    assert first.read_bytes() == before and node.index.counts()["instances"] == 1
    assert list((data / "instances").rglob("*.dcm")) == [first]
    (kept,) = list((data / "superseded").rglob("*.dcm"))
    assert pydicom.dcmread(kept).PatientName == "Changed^Name"
    assert node.index.superseded()[0].action == "kept-first"


def test_calling_ae_allow_list_and_called_ae(node_factory, tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "var", security={"allowed_calling_aes": ["GOODSCU"]})
    node = node_factory(cfg, workflows={})
    port = node.address[1]
    bad = _scu(port, [(Verification, None)], ae_title="BADSCU")
    assert not bad.is_established and bad.is_rejected
    wrong_called = _scu(port, [(Verification, None)], ae_title="GOODSCU", called="NOTLIVER")
    assert not wrong_called.is_established and wrong_called.is_rejected
    r = subprocess.run(["echoscu", "-aet", "GOODSCU", "-aec", "WRONGAE", "127.0.0.1", str(port)], env=ENV,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "Rejected" in (r.stdout + r.stderr)
    good = _scu(port, [(Verification, None)], ae_title="GOODSCU")
    assert good.is_established and good.send_c_echo().Status == 0
    good.release()
