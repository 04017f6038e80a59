"""The receive-path tuning (node.netfast, the SCP's spool pool): same bytes on the wire as pynetdicom and no
files left behind. (Its speed is measured by bench/ingest.py; its behaviour on real associations by every
network test, which run with it installed.)"""
from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_until
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from node import netfast
from node.outbox import OutboxItem
from node.scp import SpoolFile, _SpoolPool


def _pynetdicom_encoding(sop_class: str, sop_inst: str, msg_id: int, status: int) -> bytes:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = msg_id
    primitive.AffectedSOPClassUID = sop_class
    primitive.AffectedSOPInstanceUID = sop_inst
    primitive.Status = status
    msg = C_STORE_RSP()
    msg.primitive_to_message(primitive)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, True
    write_dataset(fp, msg.command_set)
    return fp.getvalue()


def test_store_response_is_byte_identical_to_pynetdicoms() -> None:
    for sop_class, sop_inst, msg_id, status in [
        ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4.5", 1, 0x0000),          # odd-length UID: padded with NUL
        ("1.2.840.10008.5.1.4.1.1.20", "1.2.826.0.1.3680043.8.498.123456", 65535, 0xB000),
        ("1.2.840.10008.5.1.4.1.1.481.3", "2.25.1234567890123456789", 7, 0x0000),
    ]:
        ours = netfast.encode_store_response(sop_class, sop_inst, msg_id, status)
        assert ours == _pynetdicom_encoding(sop_class, sop_inst, msg_id, status)


def test_only_plain_store_responses_take_the_fast_path() -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = 3
    rsp.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    rsp.AffectedSOPInstanceUID = "1.2.3"
    rsp.Status = 0
    assert netfast._is_plain_store_response(rsp)
    rsp.ErrorComment = "cannot store"
    assert not netfast._is_plain_store_response(rsp)
    req = C_STORE()
    req.MessageID = 3
    req.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    req.AffectedSOPInstanceUID = "1.2.3"
    assert not netfast._is_plain_store_response(req)


def test_spool_pool_serves_its_folder_discards_others_and_drains(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    pool = _SpoolPool()
    old = SpoolFile.directory
    try:
        SpoolFile.directory = a
        fd, name = pool.take(a)  # first call: made on the spot, and the filler starts
        assert Path(name).parent == a
        assert wait_until(lambda: len(pool) == _SpoolPool.SIZE)
        assert len(list(a.glob("*.part"))) == 1 + _SpoolPool.SIZE  # made ahead
        SpoolFile.directory = b  # another node took over the process: files made for `a` are not used
        fd2, name2 = pool.take(b)
        assert Path(name2).parent == b
        assert [p.name for p in a.glob("*.part")] == [Path(name).name]  # discarded at once
        assert wait_until(lambda: len(pool) == _SpoolPool.SIZE)
        assert len(list(b.glob("*.part"))) == 1 + _SpoolPool.SIZE
        pool.drain()
        assert len(pool) == 0
        assert [p.name for p in b.glob("*.part")] == [Path(name2).name]
    finally:
        SpoolFile.directory = old
        os.close(fd)
        os.close(fd2)


# ---------------------------------------------------------------------- the fence (issue 12 point 3)
def test_outbox_scu_runs_stock_pynetdicom_while_the_acceptor_runs_the_fast_path(node_factory, tmp_path: Path) -> None:
    """The node sends to itself: its DicomDestination (the outbox's SCU) on one side, its SCP on the other."""
    import time as time_module

    import factories as F
    import pynetdicom.association
    import pynetdicom.dul
    from pynetdicom import evt
    from pynetdicom.association import Association
    from pynetdicom.dimse import DIMSEServiceProvider
    from pynetdicom.dul import DULServiceProvider
    from pynetdicom.transport import AssociationSocket

    from node.config import DestinationConfig
    from node.destinations import DicomDestination
    node = node_factory(workflows={})
    assert node.scp.fast_path
    acceptors: list = []
    node.scp.server.bind(evt.EVT_ACCEPTED, lambda event: acceptors.append(event.assoc))
    dest = DicomDestination(DestinationConfig(name="self", outputs=("report",), ae_title="LIVERNODE",
                                              host="127.0.0.1", port=node.address[1]), node.config)
    (ds,) = F.ct_series("P-FENCE", 1)
    (path,) = F.write([ds], tmp_path / "out")
    assoc = dest._associate(dest._contexts_for([_item(path, ds)]))
    try:
        assert assoc.is_established
        # the SCU: pynetdicom's own classes, unpatched
        assert type(assoc) is Association and type(assoc.dul) is DULServiceProvider
        assert type(assoc.dimse) is DIMSEServiceProvider and type(assoc.dul.socket) is AssociationSocket
        assert AssociationSocket.recv.__module__ == "pynetdicom.transport"
        assert DULServiceProvider.run_reactor.__module__ == "pynetdicom.dul"
        assert DIMSEServiceProvider.get_msg.__module__ == "pynetdicom.dimse"
        assert pynetdicom.association.time is time_module and pynetdicom.dul.time is time_module
        assert assoc.send_c_store(path).Status == 0
    finally:
        assoc.release()
    # the acceptor: the node's subclasses
    assert acceptors and isinstance(acceptors[0], netfast._FastAssociation)
    assert type(acceptors[0].dul) is netfast._FastDUL and type(acceptors[0].dimse) is netfast._FastDIMSE


def _item(path: Path, ds) -> OutboxItem:
    return OutboxItem(id=1, destination="self", case_id="P-FENCE", kind="report",
                      sop_instance_uid=str(ds.SOPInstanceUID), sop_class_uid=str(ds.SOPClassUID),
                      transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
                      study_instance_uid=str(ds.StudyInstanceUID), patient_id="P-FENCE", path=path, attempts=0)


@pytest.mark.fast_path_only
def test_unknown_pynetdicom_version_falls_back_to_stock_with_a_log_line(node_factory, monkeypatch, caplog,
                                                                         tmp_path: Path) -> None:
    import factories as F
    from pynetdicom import AE

    monkeypatch.setattr(netfast, "SUPPORTED_PYNETDICOM", ("2.9.9",))
    with caplog.at_level(logging.WARNING, logger="node.netfast"):
        node = node_factory(workflows={})
    assert not node.scp.fast_path
    assert "is not a version the receive fast path was written for (2.9.9): receiving with stock pynetdicom" \
        in caplog.text
    (ds,) = F.ct_series("P-STOCK", 1)
    (path,) = F.write([ds], tmp_path / "src")
    ae = AE(ae_title="SCU")
    ae.add_requested_context(F.CT)
    assoc = ae.associate("127.0.0.1", node.address[1], ae_title="LIVERNODE")
    assert assoc.send_c_store(path).Status == 0
    assoc.release()
    node.receiver.flush()
    assert F.dataset_bytes(Path(node.index.has_instance(ds.SOPInstanceUID))) == F.dataset_bytes(path)


def test_importing_the_node_changes_nothing_in_pynetdicom() -> None:
    """Installing is the service's job at start; importing any module must leave pynetdicom as shipped."""
    code = """
import logging, tempfile, threading, time
import pynetdicom, pynetdicom.association, pynetdicom.dul, pynetdicom.dimse_messages
from pynetdicom import _config
hook, validator = threading.excepthook, _config.VALIDATORS["UI"]
import node.service, node.scp, node.netfast, node.destinations, node.sender, node.cli, node.receive
assert not _config.STORE_SEND_CHUNKED_DATASET and not _config.STORE_RECV_CHUNKED_DATASET
assert _config.LOG_HANDLER_LEVEL == "standard" and _config.VALIDATORS["UI"] is validator
assert pynetdicom.association.time is time and pynetdicom.dul.time is time
assert pynetdicom.dimse_messages.NamedTemporaryFile is tempfile.NamedTemporaryFile
assert pynetdicom.transport.AssociationSocket.recv.__module__ == "pynetdicom.transport"
assert threading.excepthook is hook
assert not logging.getLogger("pynetdicom").filters
print("unchanged")
"""
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "unchanged" in r.stdout, r.stderr[-2000:]


@pytest.mark.slow
@pytest.mark.fast_path_only
def test_stock_pynetdicom_passes_the_receive_tests() -> None:
    """The fallback (an unknown pynetdicom version: stock pynetdicom behind the edge server) passes the receive
    edge's tests: every node in that run believes pynetdicom's version is unknown (tests/conftest.py). Tests that
    check the fast path itself are marked fast_path_only and not repeated there."""
    root = Path(__file__).resolve().parents[1]
    files = ["tests/test_scp_store.py", "tests/test_bad_input.py", "tests/test_hostile.py",
             "tests/test_receive_corpus.py", "tests/test_crash.py", "tests/test_tls.py"]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not fast_path_only",
                        *files], cwd=root, capture_output=True, text=True, timeout=1500,
                       env={**os.environ, "LIVER_NODE_TEST_STOCK_PYNETDICOM": "1"})
    tail = r.stdout[-3000:]
    print(tail.splitlines()[-1] if tail else r.stderr[-2000:])
    assert r.returncode == 0, tail
    assert " passed" in tail and "failed" not in tail and "error" not in tail.lower().split("warnings")[0]
