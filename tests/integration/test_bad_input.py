"""Bad input gets the right status or an abort and a log line; the node keeps serving and keeps what it has."""
from __future__ import annotations

import logging
import os
import socket
import struct
import subprocess
import time
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

import factories as F
from conftest import leftover_partials, make_config

pytestmark = pytest.mark.network


@pytest.fixture
def served(node_factory, tmp_path: Path):
    """A node holding one good instance; yields (node, good path, good bytes)."""
    node = node_factory(workflows={})
    (good,) = F.ct_series("P-GOOD", 1)
    assert _store(node.address[1], good) == 0
    node.receiver.flush()
    path = Path(node.index.has_instance(good.SOPInstanceUID))
    before = path.read_bytes()
    yield node, path, before
    # after every bad input: echo still works, the good instance is untouched
    assert _echo(node.address[1])
    node.receiver.flush()
    assert path.read_bytes() == before
    assert node.index.has_instance(good.SOPInstanceUID)


def _assoc(port: int, *contexts: str):
    ae = AE(ae_title="BADSCU")
    for c in contexts or (F.CT,):
        ae.add_requested_context(c)
    assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE")
    assert assoc.is_established
    return assoc


def _store(port: int, what, context: str = F.CT) -> int:
    assoc = _assoc(port, context)
    try:
        return int(assoc.send_c_store(what).Status)
    finally:
        assoc.release()


def _store_raw(port: int, sop_class: str, sop_instance: str, dataset: bytes) -> int:
    """C-STORE with `dataset` sent byte for byte (pynetdicom would re-encode a Dataset or a file)."""
    assoc = _assoc(port, sop_class)
    try:
        req = C_STORE()
        req.MessageID = 1
        req.AffectedSOPClassUID = sop_class
        req.AffectedSOPInstanceUID = sop_instance
        req.Priority = 2
        req.DataSet = BytesIO(dataset)
        assoc._reactor_checkpoint.clear()  # pause the reactor as send_c_store does, or it eats the response
        while not assoc._is_paused:
            time.sleep(0.0001)
        assoc.dimse.send_msg(req, assoc.accepted_contexts[0].context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
        assoc._reactor_checkpoint.set()
        return int(rsp.Status)
    finally:
        assoc.release()


def _dataset_part(ds) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    raw = buf.getvalue()
    return raw[144 + int.from_bytes(raw[140:144], "little"):]


def _echo(port: int) -> bool:
    ae = AE(ae_title="ECHO")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE")
    ok = assoc.is_established and assoc.send_c_echo().Status == 0
    if assoc.is_established:
        assoc.release()
    return ok


def test_image_without_pixel_data_is_refused_when_strict(node_factory, tmp_path: Path, caplog) -> None:
    node = node_factory(make_config(tmp_path / "strict", receive={"strict": True}), workflows={})
    (ds,) = F.ct_series("P-BAD", 1)
    del ds.PixelData
    with caplog.at_level(logging.ERROR, logger="node.scp"):
        assert _store(node.address[1], ds) == 0xA900
    assert "without pixel data" in caplog.text
    assert not node.index.has_instance(ds.SOPInstanceUID)


@pytest.mark.parametrize("cut", [3000, 8000, 20])
def test_truncated_dataset_is_refused(served, cut: int, caplog) -> None:
    node, *_ = served
    (ds,) = F.ct_series("P-BAD", 1)
    raw = _dataset_part(ds)
    with caplog.at_level(logging.ERROR, logger="node.scp"):
        status = _store_raw(node.address[1], F.CT, ds.SOPInstanceUID, raw[: len(raw) - cut])
    assert status == 0xC000
    assert "truncated" in caplog.text or "cannot decode" in caplog.text
    assert not node.index.has_instance(ds.SOPInstanceUID)
    assert not leftover_partials(node.store.tmp)  # no partial file left behind


def test_pixel_data_shorter_than_announced_is_refused(served) -> None:
    node, *_ = served
    (ds,) = F.ct_series("P-BAD", 1)
    ds.PixelData = ds.PixelData[:1000]  # a consistent encoding, but far fewer pixels than Rows x Columns
    assert _store(node.address[1], ds) == 0xC000


@pytest.mark.parametrize("garbage", [b"\xff" * 64, bytes(range(256)) * 4])
def test_garbage_dataset_is_refused(served, garbage: bytes) -> None:
    node, *_ = served
    (ds,) = F.ct_series("P-BAD", 1)
    status = _store_raw(node.address[1], F.CT, ds.SOPInstanceUID, garbage + _dataset_part(ds)[64:])
    assert status in (0xC000, 0xA900)
    assert not node.index.has_instance(ds.SOPInstanceUID)


def test_sop_class_mismatch_is_refused(served, caplog) -> None:
    node, *_ = served
    nm = F.nm_multiframe("P-BAD")
    with caplog.at_level(logging.ERROR, logger="node.scp"):  # the request says CT, the dataset is an NM image
        assert _store_raw(node.address[1], F.CT, nm.SOPInstanceUID, _dataset_part(nm)) == 0xA900
    assert "does not match" in caplog.text
    assert not node.index.has_instance(nm.SOPInstanceUID)


def test_sop_instance_mismatch_is_refused(served) -> None:
    node, *_ = served
    (ds,) = F.ct_series("P-BAD", 1)
    assert _store_raw(node.address[1], F.CT, generate_uid(), _dataset_part(ds)) == 0xA900


@pytest.mark.parametrize("keyword, value", [
    ("SeriesInstanceUID", "../../../../etc"),
    ("StudyInstanceUID", "1.2.abc"),
    ("StudyInstanceUID", ""),
])
def test_invalid_uids_are_refused(served, keyword: str, value: str) -> None:
    node, *_ = served
    (ds,) = F.ct_series("P-BAD", 1)
    setattr(ds, keyword, value)
    assert _store(node.address[1], ds) == 0xA900
    assert not node.index.has_instance(ds.SOPInstanceUID)
    assert not (node.config.node.data_dir.parent / "etc").exists()


@pytest.mark.parametrize("payload", [
    os.urandom(4096),
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    struct.pack(">BBL", 0x01, 0, 0xFFFFFF00) + b"\x00" * 64,  # A-ASSOCIATE-RQ claiming a 4 GB body
    struct.pack(">BBL", 0x01, 0, 68) + b"\x00" * 68,  # A-ASSOCIATE-RQ with a garbage body
])
def test_junk_on_the_port(served, payload: bytes) -> None:
    node, *_ = served
    with socket.create_connection(("127.0.0.1", node.address[1]), timeout=10) as s:
        s.sendall(payload)
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the node may have aborted and closed already
            pass
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except OSError:
            pass
    assert _echo(node.address[1])


def test_abort_mid_transfer_keeps_serving(served, tmp_path: Path) -> None:
    node, *_ = served
    big = F.ct_series("P-ABORT", 1, rows=512, cols=512)
    (f,) = F.write(big, tmp_path)
    raw = f.read_bytes()
    # Start a real association with pynetdicom, then vanish: socket closed halfway through a P-DATA.
    assoc = _assoc(node.address[1])
    sock = assoc.dul.socket.socket
    cx = assoc.accepted_contexts[0].context_id
    body = raw[200:200 + 100_000]
    pdv = struct.pack(">LB", len(body) + 2, cx) + b"\x00" + body
    sock.sendall(struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv[:50_000])
    sock.close()
    time.sleep(0.5)
    assert _echo(node.address[1])
    assert not node.index.has_instance(pydicom.dcmread(f).SOPInstanceUID)


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs as the node's data volume (tests run as root, like CI)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_answers_out_of_resources_and_keeps_serving(small_disk: Path, node_factory, caplog) -> None:
    # the watermark off: this is the disk really filling up (tests/test_safe_operation.py checks the watermark)
    node = node_factory(make_config(small_disk / "var", node={"min_free_disk_mb": 0}), workflows={})
    port = node.address[1]
    series = F.ct_series("P-FULL", 12, rows=512, cols=512)  # 12 x 0.5 MB > 4 MiB
    statuses = []
    with caplog.at_level(logging.ERROR, logger="node.scp"):
        assoc = _assoc(port)
        for ds in series:
            statuses.append(int(assoc.send_c_store(ds).Status))
        assoc.release()
    assert statuses[0] == 0 and 0xA700 in statuses
    assert set(statuses) <= {0, 0xA700}
    assert "out of resources" in caplog.text
    assert _echo(port)
    node.receiver.flush()
    # everything answered success is on disk, intact, and indexed
    for ds, st in zip(series, statuses, strict=False):
        stored = node.index.has_instance(ds.SOPInstanceUID)
        assert bool(stored) == (st == 0)
        if stored:
            assert pydicom.dcmread(stored).SOPInstanceUID == ds.SOPInstanceUID
    assert not leftover_partials(node.store.tmp)


def _deflated_dataset(ds) -> bytes:
    """The data set of `ds` in Deflated Explicit VR Little Endian (PS3.5 A.5: raw deflate)."""
    import zlib

    explicit = _dataset_part(ds)
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(explicit) + packer.flush()


@pytest.mark.parametrize("cut", [0, 1, 500])
def test_deflated_data_set_is_checked_after_inflating(node_factory, cut: int, caplog) -> None:
    """Complete: stored (its declared lengths are measured in the inflated stream). Cut short: 0xC000."""
    node = node_factory(workflows={})
    (ds,) = F.ct_series("P-DEFLATE", 1)
    deflated = _deflated_dataset(ds)
    data = deflated[:len(deflated) - cut] if cut else deflated
    ae = AE(ae_title="BADSCU")
    ae.add_requested_context(F.CT, ["1.2.840.10008.1.2.1.99"])
    assoc = ae.associate("127.0.0.1", node.address[1], ae_title="LIVERNODE")
    try:
        req = C_STORE()
        req.MessageID, req.AffectedSOPClassUID, req.AffectedSOPInstanceUID, req.Priority = 1, F.CT, \
            ds.SOPInstanceUID, 2
        req.DataSet = BytesIO(data)
        assoc._reactor_checkpoint.clear()
        while not assoc._is_paused:
            time.sleep(0.0001)
        context_id = assoc.accepted_contexts[0].context_id
        assert context_id is not None
        with caplog.at_level(logging.ERROR, logger="node.scp"):
            assoc.dimse.send_msg(req, context_id)
            _, rsp = assoc.dimse.get_msg(block=True)
        assoc._reactor_checkpoint.set()
    finally:
        assoc.release()
    node.receiver.flush()
    assert rsp is not None
    if not cut:
        assert rsp.Status == 0
        stored = Path(node.index.has_instance(ds.SOPInstanceUID)).read_bytes()
        assert stored.endswith(deflated)  # stored as received: still deflated
    else:
        assert rsp.Status == 0xC000 and "truncated" in str(rsp.ErrorComment)
        assert "deflated stream ends before its end marker" in caplog.text
        assert not node.index.has_instance(ds.SOPInstanceUID)


def test_no_spool_file_possible_answers_out_of_resources_not_an_abort(node_factory) -> None:
    """tmp/ gone (or the disk full before a spool file could even be made): 0xA700 with the reason, and the
    association stays usable."""
    import shutil

    from node.scp import SpoolFile

    node = node_factory(workflows={})
    (ds, ds2) = F.ct_series("P-NOSPOOL", 2)
    assoc = _assoc(node.address[1])
    try:
        SpoolFile.pool.drain()
        shutil.rmtree(node.store.tmp)
        rsp = assoc.send_c_store(ds)
        assert rsp.Status == 0xA700 and "cannot store" in str(rsp.ErrorComment)
        node.store.tmp.mkdir()
        assert assoc.send_c_store(ds2).Status == 0
    finally:
        assoc.release()
