"""Hostile network input (issue 17): bounded memory, no lockout, no tracebacks, no leftover spool files.

The fuzzer (testpeers/pdufuzz.py) is the project's own, written from PS3.8; the node runs as its own process so its
memory and its log are what an operator would see. A real sender (dcmtk storescu) keeps storing meanwhile.
"""
from __future__ import annotations

import logging
import os
import socket
import sqlite3
import struct
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydicom
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from testpeers import pdufuzz as Z

import factories as F
from conftest import free_port, make_config, start_node_process, wait_until

pytestmark = pytest.mark.network
ENV = {**os.environ, "TCP_NODELAY": "1"}


def _storescu(port: int, *files: Path, aet: str = "LEGIT", timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["storescu", "-aet", aet, "-aec", "LIVERNODE", "127.0.0.1", str(port),
                           *map(str, files)], env=ENV, capture_output=True, text=True, timeout=timeout)


def _indexed(data_dir: Path, uids: list[str]) -> int:
    db = sqlite3.connect(data_dir / "index.sqlite3")
    try:
        return sum(db.execute("SELECT COUNT(*) FROM instances WHERE sop_instance_uid=?", (u,)).fetchone()[0]
                   for u in uids)
    finally:
        db.close()


def _spool_leftovers(tmp: Path) -> list[tuple[str, int]]:
    """Non-empty spool files; one removed while we list the directory is not a leftover."""
    found = []
    for p in tmp.iterdir():
        try:
            size = p.stat().st_size
        except FileNotFoundError:
            continue
        if size > 0:
            found.append((p.name, size))
    return found


@pytest.mark.slow
def test_fuzzer_leaves_the_node_serving_bounded_and_quiet(tmp_path: Path) -> None:
    """>= 300 hostile connections (oversized lengths up to 4 GiB included) while a real sender stores:
    the node stays up, peak RSS grows < 200 MB, no traceback, no spool file with data, nothing lost."""
    port = free_port()
    data = tmp_path / "var"
    cfg = tmp_path / "node.toml"
    cfg.write_text(f'[node]\nae_title = "LIVERNODE"\nhost = "127.0.0.1"\nport = {port}\ndata_dir = "{data}"\n'
                   'log_level = "INFO"\n[completion]\nstable_seconds = 3600\n')
    log = tmp_path / "node.log"
    proc = start_node_process(cfg, port, log)
    try:
        before = Z.memory_kib(proc.pid)
        rounds = [F.write(F.ct_series(f"P-LEGIT-{i}", 15, rows=128, cols=128), tmp_path / f"legit{i}")
                  for i in range(3)]
        legit: list[subprocess.CompletedProcess] = []

        def legitimate_sender() -> None:
            for files in rounds:
                legit.append(_storescu(port, *files))

        sender = threading.Thread(target=legitimate_sender)
        cases = Z.hostile_cases()
        assert len(cases) >= 300
        t0 = time.monotonic()
        sender.start()
        with ThreadPoolExecutor(6) as pool:  # 6 at once: the legitimate sender always finds one of the 10 slots
            list(pool.map(lambda case: case[1]("127.0.0.1", port), cases))
        sender.join(300)
        fuzz_seconds = time.monotonic() - t0
        assert proc.poll() is None, "the node died"
        after = Z.memory_kib(proc.pid)
        growth_mb = (after["VmHWM"] - before["VmRSS"]) / 1024
        print(f"\n{len(cases)} hostile connections in {fuzz_seconds:.1f} s; RSS {before['VmRSS'] / 1024:.0f} MB "
              f"before, peak {after['VmHWM'] / 1024:.0f} MB: peak growth {growth_mb:.1f} MB")
        assert growth_mb < 200

        # the real sender lost nothing while the fuzzer ran
        assert [r.returncode for r in legit] == [0, 0, 0], [r.stderr[-500:] for r in legit]
        uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for files in rounds for f in files]
        assert wait_until(lambda: _indexed(data, uids) == len(uids), timeout=30)

        # still serving: C-ECHO and a real C-STORE
        echo = subprocess.run(["echoscu", "-aec", "LIVERNODE", "127.0.0.1", str(port)], env=ENV,
                              capture_output=True, timeout=30)
        assert echo.returncode == 0
        (one,) = F.write(F.ct_series("P-AFTER", 1), tmp_path / "after")
        assert _storescu(port, one).returncode == 0

        # nothing half-received left behind (the spool pool keeps a few *empty* files ready)
        assert wait_until(lambda: not _spool_leftovers(data / "tmp"), timeout=15), _spool_leftovers(data / "tmp")
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text(errors="replace")
    tracebacks = text.count("Traceback")
    print(f"node log: {len(text.splitlines())} lines, {tracebacks} traceback lines")
    assert tracebacks == 0, text[text.find("Traceback") - 500:][:3000]


def _half_open(port: int, n: int, payload: bytes = b"\x01\x00\x00") -> list[socket.socket]:
    """n connections that send a few bytes of an A-ASSOCIATE-RQ header and then nothing."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(payload)
        socks.append(s)
    return socks


def test_half_open_connections_do_not_lock_out_a_sender(node_factory, tmp_path: Path, caplog) -> None:
    """Default settings: 50 connections from one client that send 3 bytes and stop; a second client stores
    within 5 s, from the same address (dcmtk storescu) and from another one (pynetdicom, 127.0.0.2)."""
    node = node_factory(workflows={})
    port = node.address[1]
    (ct,) = F.write(F.ct_series("P-LOCKOUT", 1), tmp_path / "a")
    (ct2,) = F.ct_series("P-LOCKOUT-2", 1)
    with caplog.at_level(logging.WARNING, logger="node.netfast"):
        socks = _half_open(port, 50)
        try:
            t0 = time.monotonic()
            r = _storescu(port, ct, timeout=30)
            same_address = time.monotonic() - t0
            assert r.returncode == 0, r.stderr[-800:]

            t0 = time.monotonic()
            ae = AE(ae_title="OTHERHOST")
            ae.add_requested_context(F.CT)
            assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE", bind_address=("127.0.0.2", 0))
            assert assoc.is_established
            assert assoc.send_c_store(ct2).Status == 0
            assoc.release()
            other_address = time.monotonic() - t0
        finally:
            for s in socks:
                s.close()
    print(f"\nwith 50 half-open connections: stored from the same address in {same_address:.2f} s, "
          f"from another address in {other_address:.2f} s")
    assert same_address < 5 and other_address < 5
    # the refusals say what they are: too many connections still negotiating from that address
    assert "still negotiating (receive.max_negotiating_per_address)" in caplog.text
    assert "unknown calling AE" not in caplog.text
    node.receiver.flush()
    assert node.index.has_instance(ct2.SOPInstanceUID)


def test_silent_connection_is_closed_after_the_negotiation_timeout(node_factory, tmp_path: Path, caplog) -> None:
    node = node_factory(make_config(tmp_path / "var", receive={"negotiation_timeout_seconds": 1.0}), workflows={})
    with caplog.at_level(logging.WARNING, logger="node.netfast"):
        with socket.create_connection(("127.0.0.1", node.address[1]), timeout=10) as s:
            s.sendall(b"\x01\x00\x00\x00\x01\x00\x00")  # 7 bytes: a PDU header and one byte of body
            t0 = time.monotonic()
            assert s.recv(100) == b""  # closed by the node
            waited = time.monotonic() - t0
    assert 0.9 < waited < 3.0
    assert "no association request within 1.0 s (receive.negotiation_timeout_seconds)" in caplog.text


def test_peer_silent_inside_a_pdu_is_closed_after_the_network_timeout(node_factory, tmp_path: Path) -> None:
    """A slow sender that stops in the middle of a P-DATA-TF PDU does not hold its association slot forever."""
    node = node_factory(make_config(tmp_path / "var", receive={"network_timeout_seconds": 1.0},
                                    node={"max_associations": 1}), workflows={})
    with Z.Client("127.0.0.1", node.address[1]) as c:
        assert c.associate() == Z.A_ASSOCIATE_AC
        c.send(Z.p_data(Z.pdv(1, 3, Z.c_echo_rq()))[:20])  # 20 of 82 bytes, then silence
        t0 = time.monotonic()
        c.sock.settimeout(10)
        while True:
            try:
                if not c.sock.recv(100):
                    break
            except OSError:
                break
        waited = time.monotonic() - t0
    assert waited < 4
    with Z.Client("127.0.0.1", node.address[1]) as c:  # the only slot is free again
        assert c.associate() == Z.A_ASSOCIATE_AC and c.echo() == 0


@pytest.mark.fast_path_only  # stock pynetdicom's own reactor aborts on its idle timer, which a PDU does not restart
def test_slow_pdu_whose_bytes_keep_arriving_is_not_a_silent_peer(node_factory, tmp_path: Path) -> None:
    """network_timeout is for a *silent* peer: a PDU that takes longer than it to arrive, a few bytes at a time
    (a slow link), is read to its end and answered, not cut off."""
    node = node_factory(make_config(tmp_path / "var", receive={"network_timeout_seconds": 1.0}), workflows={})
    with Z.Client("127.0.0.1", node.address[1]) as c:
        assert c.associate() == Z.A_ASSOCIATE_AC
        pdu = Z.p_data(Z.pdv(1, 3, Z.c_echo_rq()))
        step = -(-len(pdu) // 12)
        for start in range(0, len(pdu), step):  # 12 pieces, 0.2 s apart: 2.4 s for one PDU
            c.send(pdu[start:start + step])
            time.sleep(0.2)
        assert c.status() == 0
        assert c.echo() == 0  # and the association goes on


def test_association_limit_rejects_as_local_limit_and_says_so(node_factory, tmp_path: Path, caplog) -> None:
    node = node_factory(make_config(tmp_path / "var", node={"max_associations": 2}), workflows={})
    port = node.address[1]

    def associate():
        ae = AE(ae_title="LIMITSCU")
        ae.add_requested_context(Verification)
        return ae.associate("127.0.0.1", port, ae_title="LIVERNODE")

    first, second = associate(), associate()
    assert first.is_established and second.is_established
    with caplog.at_level(logging.WARNING, logger="node.scp"):
        third = associate()
        assert third.is_rejected
        rj = third.acceptor.primitive
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)  # transient, local limit exceeded
        # the node says so from its own thread once the A-ASSOCIATE-RJ is out (pynetdicom's EVT_REJECTED fires after
        # sending): the client may read the reply before the line is written (seen on a loaded machine)
        assert wait_until(lambda: "rejected: 2 associations already active (node.max_associations)" in caplog.text,
                          timeout=5)
    assert "unknown calling AE" not in caplog.text
    first.release()
    assert wait_until(lambda: associate().is_established, timeout=5)  # (released at once by the SCU side)
    second.release()


@pytest.mark.fast_path_only  # only the node's own associations know whether they are idle
def test_idle_associations_of_one_address_do_not_keep_another_out(node_factory, tmp_path: Path, caplog) -> None:
    """Every slot held by silent, established associations from 127.0.0.1: another address still stores (an idle
    one of them is aborted, with one line saying why); the same address is still refused (its own limit)."""
    node = node_factory(make_config(tmp_path / "var", node={"max_associations": 3},
                                    receive={"idle_association_seconds": 0.5}), workflows={})
    port = node.address[1]
    held = [Z.Client("127.0.0.1", port) for _ in range(3)]
    try:
        assert [c.associate() for c in held] == [Z.A_ASSOCIATE_AC] * 3
        assert held[1].echo() == 0  # one of them is not silent: it stays
        with Z.Client("127.0.0.1", port) as same:  # the holder's own address: nothing to take over
            assert same.associate() == Z.A_ASSOCIATE_RJ
        time.sleep(0.7)
        held[1].echo()
        (ds,) = F.ct_series("P-IDLE-SLOTS", 1)
        with caplog.at_level(logging.WARNING, logger="node.netfast"):
            ae = AE(ae_title="OTHERHOST")
            ae.add_requested_context(F.CT)
            assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE", bind_address=("127.0.0.2", 0))
            assert assoc.is_established
            assert assoc.send_c_store(ds).Status == 0
            assoc.release()
        aborted = [c for c in held if _ends_with_abort(c)]
        assert len(aborted) == 1 and aborted[0] is not held[1]
        assert held[1].echo() == 0
        lines = [r.getMessage() for r in caplog.records if "receive.idle_association_seconds" in r.getMessage()]
        assert len(lines) == 1 and "127.0.0.1:" in lines[0] and "127.0.0.2:" in lines[0], lines
    finally:
        for c in held:
            c.close()
    node.receiver.flush()
    assert node.index.has_instance(ds.SOPInstanceUID)


def _ends_with_abort(c: Z.Client) -> bool:
    """The node sent this association an A-ABORT (or closed it) without being asked."""
    c.sock.settimeout(0.5)
    try:
        pdu_type, _ = c.read()
        return pdu_type == Z.A_ABORT
    except Z.Closed:
        return True
    except TimeoutError:
        return False
    finally:
        c.sock.settimeout(10)


def test_rejections_name_their_reason(node_factory, tmp_path: Path, caplog) -> None:
    node = node_factory(make_config(tmp_path / "var", security={"allowed_calling_aes": ["CT_SCANNER"]}),
                        workflows={})
    port = node.address[1]
    with caplog.at_level(logging.WARNING, logger="node.scp"):
        for calling, called in (("INTRUDER", "LIVERNODE"), ("CT_SCANNER", "SOMEONEELSE")):
            ae = AE(ae_title=calling)
            ae.add_requested_context(Verification)
            assert ae.associate("127.0.0.1", port, ae_title=called).is_rejected
    assert "calling AE 'INTRUDER' is not in security.allowed_calling_aes" in caplog.text
    assert "called AE 'SOMEONEELSE' is not this node's AE title (LIVERNODE)" in caplog.text


@pytest.mark.fast_path_only
@pytest.mark.parametrize("when", ["before-association", "after-association"])
def test_over_long_pdu_is_aborted_before_it_is_read(node_factory, caplog, when: str) -> None:
    node = node_factory(workflows={})
    with caplog.at_level(logging.WARNING, logger="node.netfast"):
        with Z.Client("127.0.0.1", node.address[1]) as c:
            kind = Z.A_ASSOCIATE_RQ
            if when == "after-association":
                assert c.associate() == Z.A_ASSOCIATE_AC
                kind = Z.P_DATA_TF
            c.send(struct.pack(">BBL", kind, 0, 0xFFFFFFFF) + b"\0" * 64)
            pdu_type, body = c.read()
            assert pdu_type == Z.A_ABORT
            with pytest.raises((Z.Closed, OSError)):
                c.read()
    lines = [r for r in caplog.records if "announces 4294967295 bytes" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.WARNING
    assert "127.0.0.1:" in lines[0].getMessage()
    assert Z.Client("127.0.0.1", node.address[1]).associate() == Z.A_ASSOCIATE_AC  # and serving


MALFORMED = {
    "P-DATA on an unaccepted context": Z.p_data(Z.pdv(99, 3, Z.c_echo_rq())),
    "data set before its command": Z.p_data(Z.pdv(1, 2, b"\x08\x00\x16\x00")),
    "command without CommandField": Z.p_data(Z.pdv(1, 3, Z.command_set((0x0110, b"\x01\x00"),
                                                                       (0x0800, b"\x01\x01")))),
    "CommandField with two values": Z.p_data(Z.pdv(1, 3, Z.command_set(
        (0x0100, b"\x30\x00\x30\x00"), (0x0110, b"\x01\x00"), (0x0800, b"\x01\x01")))),
    "C-FIND (not offered)": Z.p_data(Z.pdv(1, 3, Z.command_set(
        (0x0002, Z.VERIFICATION.encode()), (0x0100, b"\x20\x00"), (0x0110, b"\x01\x00"), (0x0800, b"\x01\x01")))),
    "garbage command set": Z.p_data(Z.pdv(1, 3, bytes(range(256)))),
    "empty PDV": Z.p_data(struct.pack(">LB", 1, 1)),
}


@pytest.mark.fast_path_only  # the node's own DIMSE assembly; stock pynetdicom sometimes just closes
@pytest.mark.parametrize("what", list(MALFORMED))
def test_malformed_dimse_ends_in_one_line_and_an_abort(node_factory, caplog, what: str) -> None:
    node = node_factory(workflows={})
    caplog.clear()
    with caplog.at_level(logging.INFO):
        with Z.Client("127.0.0.1", node.address[1]) as c:
            assert c.associate() == Z.A_ASSOCIATE_AC
            c.send(MALFORMED[what])
            pdu_type, _ = c.read()
            assert pdu_type == Z.A_ABORT
        assert wait_until(lambda: any(r.levelno >= logging.WARNING for r in caplog.records), timeout=5)
        time.sleep(0.3)
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1, [r.getMessage() for r in problems]
    assert "127.0.0.1:" in problems[0].getMessage() and "FUZZ" in problems[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)
    with Z.Client("127.0.0.1", node.address[1]) as c:  # still serving
        assert c.associate() == Z.A_ASSOCIATE_AC and c.echo() == 0


@pytest.mark.fast_path_only  # stock pynetdicom keeps a data set in memory: no spool file to leave
@pytest.mark.parametrize("end", ["close", "abort", "release", "close-mid-pdu"])
def test_interrupted_store_leaves_no_spool_file(node_factory, end: str) -> None:
    node = node_factory(workflows={})
    (ds,) = F.ct_series("P-CUT", 1, rows=256, cols=256)
    raw = F.dataset_bytes(F.write([ds], node.config.node.data_dir.parent / "src")[0])
    with Z.Client("127.0.0.1", node.address[1]) as c:
        assert c.associate() == Z.A_ASSOCIATE_AC
        cx = c.context(Z.EXPLICIT_LE)
        c.send(Z.p_data(Z.pdv(cx, 3, Z.c_store_rq(Z.CT_IMAGE, str(ds.SOPInstanceUID)))))
        c.send(Z.p_data(Z.pdv(cx, 0, raw[:60000])))
        assert wait_until(lambda: bool(_spool_leftovers(node.store.tmp)), timeout=5)  # spooling
        if end == "abort":
            c.send(Z.abort())
        elif end == "release":
            c.send(Z.release_rq())
        elif end == "close-mid-pdu":
            c.send(Z.p_data(Z.pdv(cx, 0, raw[60000:]))[:30000])
    # removed when the association ends, not at the next restart
    assert wait_until(lambda: not _spool_leftovers(node.store.tmp), timeout=10), _spool_leftovers(node.store.tmp)
    node.receiver.flush()
    assert not node.index.has_instance(ds.SOPInstanceUID)


def test_start_up_cleanup_tells_spool_pool_from_interrupted_transfers(node_factory, tmp_path: Path,
                                                                       caplog) -> None:
    data = tmp_path / "var"
    (data / "tmp").mkdir(parents=True)
    (data / "tmp" / "a.part").write_bytes(b"")
    (data / "tmp" / "b.part").write_bytes(b"")
    (data / "tmp" / "c.part").write_bytes(b"\0" * 1234)
    with caplog.at_level(logging.INFO, logger="node.service"):
        node_factory(make_config(data), workflows={})
    removed = [r for r in caplog.records if r.name == "node.service" and r.getMessage().startswith("removed")]
    warnings = [r.getMessage() for r in removed if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in removed if r.levelno == logging.INFO]
    assert warnings == ["removed 1 partial spool file(s) of interrupted transfers (1234 bytes, never acknowledged)"]
    assert "removed 2 empty spool file(s) made ahead by the last run" in infos


def test_tls_handshake_never_blocks_the_port(node_factory, tmp_path: Path) -> None:
    """A TLS port: connections that never start their handshake do not stop others being accepted."""
    from testpeers.orthanc import make_pki

    pki = make_pki(tmp_path / "pki")
    cfg = make_config(tmp_path / "var", security={"tls": {"cert_file": str(pki.server_cert),
                                                          "key_file": str(pki.server_key),
                                                          "ca_file": str(pki.ca_cert)}})
    node = node_factory(cfg, workflows={})
    idle = [socket.create_connection(("127.0.0.1", node.address[1])) for _ in range(5)]
    try:
        from node.config import TlsConfig
        from node.tls import client_context

        ctx = client_context(TlsConfig(cert_file=pki.client_cert, key_file=pki.client_key, ca_file=pki.ca_cert))
        t0 = time.monotonic()
        ae = AE(ae_title="TLSSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", node.address[1], ae_title="LIVERNODE", tls_args=(ctx, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0
        assoc.release()
        assert time.monotonic() - t0 < 5
    finally:
        for s in idle:
            s.close()


def test_max_pdu_size_zero_no_longer_means_unlimited(node_factory, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="node.scp"):
        node = node_factory(make_config(tmp_path / "var", node={"max_pdu_size": 0}), workflows={})
    assert "node.max_pdu_size = 0 (unlimited) is no longer honoured" in caplog.text
    ae = AE(ae_title="PDUSCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.address[1], ae_title="LIVERNODE")
    assert assoc.acceptor.maximum_length == 4 * 1024 * 1024  # what the node advertises and enforces
    assoc.release()
