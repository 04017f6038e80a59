"""The receive-path tuning (node.netfast, the SCP's spool pool): same bytes on the wire as pynetdicom and no
files left behind. (Its speed is measured by bench/ingest.py; its behaviour on real associations by every
network test, which run with it installed.)"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.dimse_messages import C_STORE_RSP
from pynetdicom.dimse_primitives import C_STORE

from node import netfast
from node.scp import SpoolFile, _SpoolPool

from conftest import wait_until


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
    rsp.ErrorComment = "cannot store"  # type: ignore[assignment]
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


def test_the_pinned_pynetdicom_is_the_one_the_fast_path_supports() -> None:
    """A fresh install must get the fast path: the stock fallback reads a PDU whatever length it announces."""
    import re
    import tomllib

    import pynetdicom

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())["project"]
    (requirement,) = [r for r in project["dependencies"] if r.startswith("pynetdicom")]
    pinned = re.fullmatch(r"pynetdicom==([0-9.]+)", requirement.replace(" ", ""))
    assert pinned is not None, f"{requirement!r} admits versions the fast path was not written for"
    assert pinned.group(1) in netfast.SUPPORTED_PYNETDICOM
    assert pynetdicom.__version__ in netfast.SUPPORTED_PYNETDICOM


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
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "unchanged" in r.stdout, r.stderr[-2000:]
