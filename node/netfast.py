"""Measured tuning of pynetdicom's receive path (see bench/ingest.py and the README's figures).

pynetdicom is correct but paced for generality: its socket reader pulls PDUs 4 KiB at a time in a Python loop,
its DUL thread polls the socket with 1 ms sleeps, and the association reactor sleeps 1 ms between looks at the
DIMSE queue. A C-STORE SCU waits for each response before sending the next instance, so every hand-over that
waits for a poll adds to every instance. The changes here keep pynetdicom's behaviour and state machine and only
replace the polls by waits that end when there is something to do, and cut the syscall count:

- read a PDU with ``recv_into`` into one preallocated buffer (one syscall per socket buffer instead of per 4 KiB);
- an acceptor's DUL thread, when idle, waits in ``poll`` on its socket *and* a wake-up pipe that is written
  whenever the association queues a PDU to send (the C-STORE response), instead of sleeping 1 ms;
- an acceptor's association reactor waits on the DIMSE message queue (woken when a message is complete)
  instead of polling it every 1 ms;
- other sleeps of pynetdicom's association module are capped at 0.2 ms;
- a *successful* C-STORE response (the one message sent per instance) is encoded directly: seven fixed
  elements in implicit VR little endian, byte-identical to pynetdicom's own encoding (tested), instead of
  building and encoding a pydicom Dataset (measured ~0.5 ms per instance). Failure responses, which carry an
  error comment, go through pynetdicom unchanged.

Every wait has a short time limit (IDLE_WAIT_SECONDS), so timers, release and abort are noticed as before.
Associations the node opens itself (the outbox's SCU) keep pynetdicom's own pacing.
"""
from __future__ import annotations

import os
import queue
import select
import ssl
import struct
import threading
import time as _time
from typing import Any

import pynetdicom.association as _association
import pynetdicom.dul as _dul
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

POLL_SECONDS = 0.0002
#: Longest wait of an idle acceptor thread before it looks at timers, release and abort again.
IDLE_WAIT_SECONDS = 0.005
_installed = False
_local = threading.local()  # .waiter: the _Waiter of the DUL thread running on this thread, if any


def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """Read exactly `nr_bytes` (fewer only if the peer closed), as AssociationSocket.recv does."""
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    got = 0
    sock = self.socket
    try:
        while got < nr_bytes:
            n = sock.recv_into(view[got:], nr_bytes - got)  # type: ignore[union-attr]
            if not n:
                break
            got += n
    finally:
        view.release()
    if got < nr_bytes:
        del buf[got:]
    return buf


class _Waiter:
    """Lets an idle DUL thread sleep until its socket is readable or a PDU is queued for sending."""

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._lock = threading.Lock()
        self._closed = False
        self._poll = select.poll()  # not select(): no limit on descriptor numbers on a busy node
        self._poll.register(sock, select.POLLIN | select.POLLPRI)
        self._poll.register(self._r, select.POLLIN)

    def wait(self, timeout: float) -> None:
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes already buffered: select would not see them
        try:
            events = self._poll.poll(max(1, int(timeout * 1000)))
        except (OSError, ValueError):  # socket closed under us: pynetdicom's next look reports it
            _time.sleep(POLL_SECONDS)
            return
        if any(fd == self._r for fd, _ in events):
            try:
                os.read(self._r, 4096)
            except BlockingIOError:
                pass

    def wake(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                os.write(self._w, b"\0")
            except (BlockingIOError, OSError):
                pass  # pipe full: a wake-up is pending anyway

    def close(self) -> None:
        with self._lock:
            self._closed = True
            os.close(self._r)
            os.close(self._w)


class _DulTime:
    """The `time` module as seen by pynetdicom.dul: an acceptor's idle sleep becomes a _Waiter wait."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        waiter = getattr(_local, "waiter", None)
        if waiter is None:  # not an acceptor's DUL thread (e.g. the outbox's SCU): pynetdicom's own pacing
            _time.sleep(seconds)
        else:
            waiter.wait(IDLE_WAIT_SECONDS)


class _ShortSleepTime:
    """The `time` module as seen by pynetdicom.association, with sleeps capped at POLL_SECONDS."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        _time.sleep(min(seconds, POLL_SECONDS))


def _element(element: int, value: bytes) -> bytes:
    """One group-0000 element, implicit VR little endian."""
    return struct.pack("<HHI", 0, element, len(value)) + value


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def encode_store_response(sop_class_uid: str, sop_instance_uid: str, message_id: int, status: int) -> bytes:
    """The command set of a C-STORE-RSP without error comment or offending element (PS3.7 9.3.1.2)."""
    body = b"".join((
        _element(0x0002, _uid(sop_class_uid)),
        _element(0x0100, struct.pack("<H", 0x8001)),  # CommandField: C-STORE-RSP
        _element(0x0120, struct.pack("<H", message_id)),
        _element(0x0800, struct.pack("<H", 0x0101)),  # CommandDataSetType: no data set
        _element(0x0900, struct.pack("<H", status)),
        _element(0x1000, _uid(sop_instance_uid)),
    ))
    return _element(0x0000, struct.pack("<I", len(body))) + body


def _is_plain_store_response(primitive: Any) -> bool:
    return (isinstance(primitive, C_STORE) and primitive.MessageIDBeingRespondedTo is not None
            and isinstance(primitive.Status, int) and primitive.ErrorComment is None
            and primitive.OffendingElement is None and primitive.AffectedSOPClassUID is not None
            and primitive.AffectedSOPInstanceUID is not None)


_original_run_reactor = DULServiceProvider.run_reactor
_original_send_pdu = DULServiceProvider.send_pdu
_original_get_msg = DIMSEServiceProvider.get_msg
_original_send_msg = DIMSEServiceProvider.send_msg


def _run_reactor(self: DULServiceProvider) -> None:
    sock = getattr(self.socket, "socket", None)
    if not self.assoc.is_acceptor or sock is None:
        _original_run_reactor(self)
        return
    waiter = _Waiter(sock)
    self._netfast_waiter = waiter  # type: ignore[attr-defined]
    _local.waiter = waiter
    try:
        _original_run_reactor(self)
    finally:
        _local.waiter = None
        self._netfast_waiter = None  # type: ignore[attr-defined]
        waiter.close()


def _send_pdu(self: DULServiceProvider, primitive: Any) -> None:
    _original_send_pdu(self, primitive)
    waiter = getattr(self, "_netfast_waiter", None)
    if waiter is not None:
        waiter.wake()


def _get_msg(self: DIMSEServiceProvider, block: bool = False) -> Any:
    if block or not self.assoc.is_acceptor:
        return _original_get_msg(self, block)
    try:  # returns as soon as the DUL thread completes a message
        return self.msg_queue.get(timeout=IDLE_WAIT_SECONDS)
    except queue.Empty:
        return None, None


def _send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    if not _is_plain_store_response(primitive) or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
        _original_send_msg(self, primitive, context_id)
        return
    command = encode_store_response(str(primitive.AffectedSOPClassUID), str(primitive.AffectedSOPInstanceUID),
                                    int(primitive.MessageIDBeingRespondedTo), int(primitive.Status))
    if self.maximum_pdu_size and len(command) + 6 > self.maximum_pdu_size:
        _original_send_msg(self, primitive, context_id)  # a peer with tiny PDUs: let pynetdicom fragment
        return
    pdata = P_DATA()
    # one PDV, the last (and only) fragment of a command: control header bits 11
    pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
    self.dul.send_pdu(pdata)


def install() -> None:
    """Apply the tuning once per process (idempotent)."""
    global _installed
    if _installed:
        return
    AssociationSocket.recv = _recv  # type: ignore[method-assign]
    _association.time = _ShortSleepTime()  # type: ignore[assignment]
    _dul.time = _DulTime()  # type: ignore[assignment]
    DULServiceProvider.run_reactor = _run_reactor  # type: ignore[method-assign]
    DULServiceProvider.send_pdu = _send_pdu  # type: ignore[method-assign]
    DIMSEServiceProvider.get_msg = _get_msg  # type: ignore[method-assign]
    DIMSEServiceProvider.send_msg = _send_msg  # type: ignore[method-assign]
    _installed = True
