"""pynetdicom at the node's receive edge: the one module that changes how pynetdicom behaves.

Nothing here runs at import time. The SCP calls :func:`start_server` once it starts listening; that makes the
listening server with pynetdicom's documented ``AE.make_server(..., server_class=...)`` and everything below
applies to the associations *that server accepts* and to nothing else: the outbox's C-STORE SCU associations
(node/destinations.py) are stock pynetdicom objects (tested).

**The edge server** (:class:`EdgeServer`, every pynetdicom version; socketserver's and pynetdicom's public
hooks only): admission control (node/admission.py: a separate, short-lived budget for connections that have
not asked for an association yet, association slots counted only for real associations, an idle association
giving its slot to another address when the port is full (fast path only: it knows when one is idle), refusals
logged as what they are), TLS handshakes in the connection's own thread under the negotiation time limit (never in the
accept loop), storage of private SOP classes under the tolerant policy (pynetdicom's documented
``register_uid``), a per-connection inactivity time limit, and containment: an exception in an acceptor
thread or a pynetdicom error record about an acceptor association becomes one WARNING line naming the peer,
never a traceback (:class:`_AcceptorLogFilter`, :func:`_acceptor_excepthook`).

**The fast path** (pynetdicom 3.0.4 only, :data:`SUPPORTED_PYNETDICOM`; any other version gets stock pynetdicom
and a log line saying so): subclasses of pynetdicom's request handler, Association, DUL and DIMSE providers,
used only for the edge server's associations:

- PDUs are read by the node: the 6-byte header first, its length checked against what this node accepts
  (``node.max_pdu_size`` for P-DATA-TF, 1 MiB for an A-ASSOCIATE-RQ, a few bytes for the fixed-size PDUs)
  *before* anything is allocated; an over-long PDU aborts the association (A-ABORT) with one WARNING line.
  The receive buffer grows with the bytes that actually arrive (``recv_into``, no 4 KiB Python loop).
  Total receive memory is thus bounded by ``max_associations`` x ``max_pdu_size`` plus ``max_negotiating``
  x 1 MiB.
- DIMSE messages are assembled by the node: every fragment is checked (context accepted, command before data
  set, one context per message, command set <= 64 KiB and decodable, a command the node serves: C-ECHO,
  C-STORE, C-CANCEL), a malformed one aborts the association with one log line; a C-STORE data set streams
  straight into a spool file (preamble + file meta + the data set bytes as received), which is removed if the
  association ends before the handler took it.
- the DUL thread, when idle, waits in ``poll`` on its socket and a wake-up pipe that is written when a PDU is
  queued for sending, instead of sleeping 1 ms; the association thread waits on the DIMSE message queue
  instead of polling it every 1 ms;
- a *successful* C-STORE response (the one message sent per instance) is encoded directly: seven fixed
  elements in implicit VR little endian, byte-identical to pynetdicom's own encoding (tested).

Every wait has a short limit (IDLE_WAIT_SECONDS), so timers, release and abort are noticed as before.

The process-wide pieces, :func:`configure_process` (set once by the service at start, documented pynetdicom
options): ``STORE_SEND_CHUNKED_DATASET``, so the outbox sends stored files as their bytes instead of decoding
and re-encoding them (it changes only C-STORE requests made from a file path, which only the outbox makes); and
``VALIDATORS["UI"]`` wrapped so that, on an acceptor thread of ours only, a UID that is digits and dots but
longer than 64 characters is let through to the node's own check (which stores it and marks it unusable)
instead of aborting the association; everywhere else the original validator answers.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import re
import select
import socket
import socketserver
import ssl
import struct
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

import pynetdicom
from pynetdicom import _config as _pynetdicom_config
from pynetdicom import evt
from pynetdicom._globals import MODE_ACCEPTOR
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import _MESSAGE_TYPES, C_CANCEL_RQ, C_ECHO_RQ, C_STORE_RQ
from pynetdicom.dimse_primitives import C_CANCEL, C_STORE
from pynetdicom.dsutils import create_file_meta, decode, encode_file_meta
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import StorageServiceClass
from pynetdicom.sop_class import register_uid, uid_to_service_class
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from node.admission import Admission, Connection, Limits, OncePerInterval

__all__ = ["SUPPORTED_PYNETDICOM", "EdgeSettings", "EdgeServer", "SpoolFactory", "configure_process",
           "fast_path_available", "start_server", "encode_store_response"]

logger = logging.getLogger(__name__)

#: pynetdicom versions whose internals the fast path was written against and tested with.
SUPPORTED_PYNETDICOM = ("3.0.4",)
#: Longest wait of an idle acceptor thread before it looks at timers, release and abort again.
IDLE_WAIT_SECONDS = 0.005
#: Largest A-ASSOCIATE-RQ accepted (128 presentation contexts with many transfer syntaxes stay far below it).
ASSOCIATE_PDU_LIMIT = 1 << 20
#: A-ASSOCIATE-RJ, A-RELEASE-RQ/RP and A-ABORT carry 4 bytes (PS3.8 9.3); anything much longer is not one.
FIXED_PDU_LIMIT = 64
#: A command set is a few hundred bytes; more is not a DIMSE command.
COMMAND_SET_LIMIT = 64 * 1024
#: Data set of a message that is not a C-STORE (none of the services the node provides has one).
INLINE_DATA_SET_LIMIT = 64 * 1024
#: Requests received but not yet answered on one association (the asynchronous operations window is 1).
MAX_QUEUED_REQUESTS = 8
_FIRST_CHUNK = 256 * 1024  # a PDU's buffer starts at most this large and grows as its bytes arrive
_MAX_PRIVATE_CLASSES = 512  # private SOP classes registered per process (each is a small table entry)
_PDU_NAMES = {1: "A-ASSOCIATE-RQ", 2: "A-ASSOCIATE-AC", 3: "A-ASSOCIATE-RJ", 4: "P-DATA-TF", 5: "A-RELEASE-RQ",
              6: "A-RELEASE-RP", 7: "A-ABORT"}


class SpoolFactory(Protocol):
    """Makes the file a C-STORE data set streams into (node.scp.SpoolFile)."""

    def __call__(self) -> Any: ...


@dataclass(frozen=True)
class EdgeSettings:
    """What the SCP asks of its server."""

    limits: Limits
    max_pdu_size: int  # the largest P-DATA-TF PDU we accept (and advertise)
    network_timeout: float  # an association whose peer is silent this long (inside a PDU too) is closed
    fast_path: bool = True
    #: abstract syntaxes outside the supported list to accept as storage (tolerant policy); None = none
    extra_storage: Callable[[str], bool] | None = None
    transfer_syntaxes: tuple[str, ...] = ()  # offered for those
    spool: SpoolFactory | None = None


def fast_path_available() -> bool:
    return pynetdicom.__version__ in SUPPORTED_PYNETDICOM


_process_configured = False
_configure_lock = threading.Lock()


def configure_process() -> None:
    """The process-wide pieces, once: the documented STORE_SEND_CHUNKED_DATASET option (see the module
    docstring), the log filter and the thread exception hook for acceptor threads. Called by the service at
    start (idempotent)."""
    global _process_configured
    with _configure_lock:
        if _process_configured:
            return
        _pynetdicom_config.STORE_SEND_CHUNKED_DATASET = True
        _pynetdicom_config.VALIDATORS["UI"] = _tolerant_uid_validator(_pynetdicom_config.VALIDATORS["UI"])
        # pydicom's warnings about what a peer sent (UIDs in an A-ASSOCIATE-RQ, values in a data set) come from
        # the same threads; py.warnings carries Python warnings once logging.captureWarnings is on (logsetup)
        names = [n for n in list(logging.Logger.manager.loggerDict) if n.split(".")[0] in ("pynetdicom", "pydicom")]
        for name in {*names, "pynetdicom", "pydicom", "py.warnings"}:
            logging.getLogger(name).addFilter(_LOG_FILTER)
        previous = threading.excepthook

        def hook(args: threading.ExceptHookArgs) -> None:
            if not _acceptor_excepthook(args):
                previous(args)

        threading.excepthook = hook
        _process_configured = True


_UID_SYNTAX = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_MAX_UID = 256


def _tolerant_uid_validator(original: Callable[[Any], tuple[bool, str]]) -> Callable[[Any], tuple[bool, str]]:
    def validate(value: Any) -> tuple[bool, str]:
        ok, reason = original(value)
        if ok or not isinstance(value, str) or _acceptor_of_current_thread() is None:
            return ok, reason
        if len(value) <= _MAX_UID and _UID_SYNTAX.match(value):
            return True, ""  # non-conformant but parseable: the node's header check decides (node/header.py)
        return ok, reason

    validate.wrapped = original  # type: ignore[attr-defined]
    return validate


def start_server(ae: Any, address: tuple[str, int], settings: EdgeSettings, evt_handlers: list[Any],
                 ssl_context: ssl.SSLContext | None = None) -> EdgeServer:
    """Listen (serve_forever in a daemon thread) with an :class:`EdgeServer`; fast path if asked and possible."""
    configure_process()
    handler: type[RequestHandler] = RequestHandler
    if settings.fast_path and fast_path_available():
        handler = _FastRequestHandler
        logger.info("receiving with the tuned pynetdicom %s receive path (node/netfast.py)", pynetdicom.__version__)
    elif settings.fast_path:
        logger.warning("pynetdicom %s is not a version the receive fast path was written for (%s): receiving with "
                       "stock pynetdicom (slower; PDU lengths are not checked before the data arrives)",
                       pynetdicom.__version__, ", ".join(SUPPORTED_PYNETDICOM))
    else:
        logger.info("receive fast path off ([receive] fast_path = false): receiving with stock pynetdicom")
    server: EdgeServer = ae.make_server(address, evt_handlers=evt_handlers, ssl_context=ssl_context,
                                        server_class=EdgeServer, request_handler=handler, edge=settings)
    thread = threading.Thread(target=server.serve_forever, name="dicom-accept", daemon=True)
    thread.start()
    server.thread = thread
    return server


# ====================================================================== the edge server (every version)
def _is_standard_log_handler(handler: Any) -> bool:
    return getattr(handler, "__module__", "") == "pynetdicom._handlers"


class EdgeServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server with the node's admission control and containment."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, ae: Any, address: tuple[str, int], ae_title: str, contexts: list[PresentationContext],
                 ssl_context: ssl.SSLContext | None = None, evt_handlers: list[Any] | None = None,
                 request_handler: Any = None, *, edge: EdgeSettings) -> None:
        self.edge = edge
        self.admission = Admission(edge.limits)
        self.thread: threading.Thread | None = None
        self.fast = request_handler is _FastRequestHandler
        self._tls_context = ssl_context
        self._conns: weakref.WeakKeyDictionary[Any, Connection] = weakref.WeakKeyDictionary()
        self._conns_lock = threading.Lock()
        self.reports = OncePerInterval(logger, interval=10.0)
        self._problems: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._supported = {str(cx.abstract_syntax) for cx in contexts}
        super().__init__(ae, address, ae_title, contexts, None, evt_handlers, request_handler)
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            # pynetdicom's standard handlers only feed its DEBUG log; unbound, every PDU and message is cheaper
            for event in list(self._handlers):
                for handler in self._standard_handlers(event):
                    self.unbind(event, handler)
        self.bind(evt.EVT_CONN_OPEN, self._on_open)
        self.bind(evt.EVT_REQUESTED, self._on_requested)
        self.bind(evt.EVT_CONN_CLOSE, self._on_close)

    def contexts_for_association(self) -> list[PresentationContext]:
        """The supported contexts handed to each fast-path association. Stock pynetdicom deep-copies them per
        connection; they are only read during negotiation, so one shared list serves."""
        return list(self.contexts)

    def _standard_handlers(self, event: Any) -> list[Any]:
        bound = self._handlers.get(event)
        if isinstance(bound, list):
            return [h for h, _ in bound if _is_standard_log_handler(h)]
        return []

    # -------------------------------------------------------------- accepting (socketserver hooks)
    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()  # type: ignore[union-attr]
        if self._tls_context is not None:  # the handshake happens in the connection's thread, under a time limit
            sock = self._tls_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def verify_request(self, request: Any, client_address: Any) -> bool:
        conn, evicted = self.admission.connected(request, str(client_address[0]), int(client_address[1]))
        for old in evicted:
            self.reports.log(logging.WARNING, ("evicted", old.address),
                             "closed connection from %s: it had not asked for an association and %s is at its "
                             "limit of connections still negotiating (receive.max_negotiating%s)", old.peer,
                             "this address" if old.address == conn.address else "the node",
                             "_per_address" if old.address == conn.address else "")
            _close(old.sock)
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        conn = self.admission.find(request)
        try:
            if isinstance(request, ssl.SSLSocket) and not self._handshake(request, conn):
                return
            self.finish_request(request, client_address)
        except Exception as exc:  # never a traceback from an accepted connection
            self.reports.log(logging.WARNING, ("error", client_address[0]), "connection from %s:%s failed: %s: %s",
                             client_address[0], client_address[1], type(exc).__name__, exc)
            if conn is not None:
                self.admission.closed(conn)
            self.shutdown_request(request)

    def _handshake(self, sock: ssl.SSLSocket, conn: Connection | None) -> bool:
        left = self.edge.limits.negotiation_timeout - (time.monotonic() - conn.since if conn else 0.0)
        try:
            sock.settimeout(max(left, 0.05))
            sock.do_handshake()
            sock.settimeout(None)  # blocking again, as pynetdicom expects (no per-call poll on the hot path)
            return True
        except (OSError, ValueError) as exc:
            what = "timed out" if isinstance(exc, TimeoutError) else \
                (getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__)
            peer = conn.peer if conn else "?"
            self.reports.log(logging.WARNING, ("tls", peer.rsplit(":", 1)[0]), "TLS handshake with %s failed: %s",
                             peer, what)
            if conn is not None:
                self.admission.closed(conn)
            _close(sock)
            return False

    def handle_error(self, request: Any, client_address: Any) -> None:
        """socketserver prints a traceback here; one line instead."""
        import sys

        exc = sys.exc_info()[1]
        self.reports.log(logging.WARNING, ("error", str(client_address)), "connection from %s failed: %s: %s",
                         client_address, type(exc).__name__, exc)

    def service_actions(self) -> None:
        """Every poll of the accept loop (0.5 s): close connections past the negotiation time limit, and
        associations whose peer sent nothing for network_timeout seconds, even in the middle of a PDU (pynetdicom
        would abort them but wait forever for a reader blocked on a socket that stays silent)."""
        super().service_actions()
        for conn in self.admission.overdue():
            self.reports.log(logging.WARNING, ("timeout", conn.address),
                             "closed connection from %s: no association request within %.1f s "
                             "(receive.negotiation_timeout_seconds)", conn.peer, self.edge.limits.negotiation_timeout)
            _close(conn.sock)
        for conn in self.admission.associated():
            assoc = conn.association() if conn.association is not None else None
            if assoc is not None and assoc.dul.idle_timer_expired():
                self.report(assoc, f"no data for {self.edge.network_timeout:.0f} s (network timeout): closed")
                _close(conn.sock)
        self.admission.sweep(lambda c: _fileno(c.sock) < 0)

    def shutdown(self) -> None:
        """Stop serving and close the listening socket (made by make_server, so not in the AE's own list)."""
        socketserver.BaseServer.shutdown(self)
        self.server_close()
        servers = getattr(self.ae, "_servers", [])
        if self in servers:
            servers.remove(self)

    # -------------------------------------------------------------- association events (public pynetdicom API)
    def _connection_of(self, assoc: Any) -> Connection | None:
        with self._conns_lock:
            return self._conns.get(assoc)

    def _on_open(self, event: Any) -> None:
        sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
        conn = self.admission.find(sock)
        if conn is not None:
            with self._conns_lock:
                self._conns[event.assoc] = conn
            conn.association = weakref.ref(event.assoc)

    def _on_requested(self, event: Any) -> None:
        assoc = event.assoc
        try:
            conn = self._connection_of(assoc)
            granted, idle = self.admission.request_slot(conn, _idle_seconds) if conn is not None else (True, None)
            if idle is not None:
                self._abort_idle(idle, conn)
            if not granted:
                # rejected-transient, presentation related: local limit exceeded (PS3.8 7.1.1.9); the SCP's
                # EVT_REJECTED handler logs and audits it, as for every rejection
                assoc.acse.send_reject(0x02, 0x03, 0x02)
                evt.trigger(assoc, evt.EVT_REJECTED, {})
                assoc.kill()
                return
            if self.edge.extra_storage is not None:
                self._accept_private_storage(assoc)
        except Exception as exc:  # a handler must not raise into pynetdicom (it logs a traceback)
            self.report(assoc, f"cannot process the association request: {type(exc).__name__}: {exc}")

    def _abort_idle(self, idle: Connection, newcomer: Connection | None) -> None:
        """Give the slot of an idle association to a newcomer from another address (node/admission.py)."""
        assoc = idle.association() if idle.association is not None else None
        if assoc is None:  # gone meanwhile
            _close(idle.sock)
            return
        seconds = _idle_seconds(idle)
        self.report(assoc, f"aborted after {seconds or 0:.0f} s without a request while its address held more "
                           f"association slots than {newcomer.peer if newcomer else 'another address'}, which asked "
                           f"for one (receive.idle_association_seconds)")
        if isinstance(assoc, _FastAssociation):
            assoc.dul._abort_now()
            evt.trigger(assoc, evt.EVT_ABORTED, {})
        else:
            _close(idle.sock)

    def _accept_private_storage(self, assoc: Any) -> None:
        """Tolerant policy: a requested abstract syntax we do not list but that may be a storage SOP class
        (a vendor's private class, a standard one newer than our tables) is accepted as storage."""
        wanted = self.edge.extra_storage
        extra = []
        for cx in assoc.requestor.requested_contexts:
            uid = str(cx.abstract_syntax)
            if uid in self._supported or wanted is None or not wanted(uid):
                continue
            if not _storage_registered(uid):
                continue
            extra.append(PresentationContext())
            extra[-1].abstract_syntax = uid
            extra[-1].transfer_syntax = list(self.edge.transfer_syntaxes)
        if extra:
            assoc.acceptor.supported_contexts = assoc.acceptor.supported_contexts + extra

    def _on_close(self, event: Any) -> None:
        conn = self._connection_of(event.assoc)
        if conn is not None:
            self.admission.closed(conn)

    def association_ended(self, assoc: Any) -> None:
        conn = self._connection_of(assoc)
        if conn is not None:
            self.admission.closed(conn)

    # -------------------------------------------------------------- containment
    def report(self, assoc: Any, problem: str) -> None:
        """What went wrong with an association: logged once per association at WARNING, with the peer."""
        with self._conns_lock:
            if assoc in self._problems:
                logger.debug("association %s: also: %s", _peer_of(assoc), problem)
                return
            self._problems[assoc] = problem
        address = _peer_of(assoc)
        self.reports.log(logging.WARNING, ("problem", address.rsplit(":", 1)[0], problem[:40]), "%s: %s",
                         _who(assoc), problem)

    def problem_of(self, assoc: Any) -> str:
        with self._conns_lock:
            return self._problems.get(assoc, "")


_registered_private: set[str] = set()
_register_lock = threading.Lock()


def _idle_seconds(conn: Connection) -> float | None:
    """How long an association has been silent with nothing in progress; None when busy or not known (stock
    pynetdicom associations are never taken for idle)."""
    assoc = conn.association() if conn.association is not None else None
    return assoc.idle_seconds() if isinstance(assoc, _FastAssociation) else None


def _storage_registered(uid: str) -> bool:
    """Make pynetdicom dispatch C-STOREs of `uid` to its Storage service (documented register_uid)."""
    if uid_to_service_class(uid) is StorageServiceClass:
        return True
    with _register_lock:
        if len(_registered_private) >= _MAX_PRIVATE_CLASSES:
            return False
        register_uid(uid, "NodePrivateStorage_" + uid.replace(".", "_"), StorageServiceClass)
        _registered_private.add(uid)
    return True


def _fileno(sock: Any) -> int:
    try:
        return int(sock.fileno())
    except (OSError, ValueError, AttributeError):
        return -1


def _close(sock: Any) -> None:
    """Close a connection another thread may be blocked reading: shutdown wakes it (it then closes)."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError, AttributeError):
        pass


def _peer_of(assoc: Any) -> str:
    try:
        info = assoc.requestor
        return f"{info.address}:{info.port}"
    except Exception:  # noqa: BLE001 - only used for a log line
        return "?"


def _who(assoc: Any) -> str:
    """'association with AE (address)', or 'connection from address (no association request yet)'."""
    try:
        primitive = assoc.requestor.primitive
    except Exception:  # noqa: BLE001 - only used for a log line
        primitive = None
    if primitive is None:
        return f"connection from {_peer_of(assoc)} (no association request yet)"
    return f"association with {str(primitive.calling_ae_title).strip() or '?'} ({_peer_of(assoc)})"


def _edge_server_of(assoc: Any) -> EdgeServer | None:
    server = getattr(assoc, "_server", None)
    return server if isinstance(server, EdgeServer) else None


def _acceptor_of_current_thread() -> Any:
    """The acceptor association of one of our servers that the current thread works for, else None."""
    thread = threading.current_thread()
    assoc = thread if isinstance(thread, Association) else getattr(thread, "assoc", None) \
        if isinstance(thread, DULServiceProvider) else None
    if assoc is None or not getattr(assoc, "is_acceptor", False) or _edge_server_of(assoc) is None:
        return None
    return assoc


class _AcceptorLogFilter(logging.Filter):
    """pynetdicom's (and pydicom's) warnings and errors on the threads of our acceptor associations (tracebacks
    included) become one WARNING line per association, naming the peer; records from any other thread pass
    unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        assoc = _acceptor_of_current_thread()
        if assoc is None:
            return True
        text = record.getMessage().strip()
        if text.startswith("Non-conformant"):  # a UID's conformance: the node's own check reports it per instance
            return False
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = f"{type(exc).__name__}: {exc}" if not text or text == str(exc) else \
                f"{text} ({type(exc).__name__}: {exc})"
        server = _edge_server_of(assoc)
        if server is not None:
            server.report(assoc, f"{record.name.split('.')[0]}: {text}"[:400])
        return False


_LOG_FILTER = _AcceptorLogFilter()


def _acceptor_excepthook(args: threading.ExceptHookArgs) -> bool:
    """An exception that escaped an acceptor thread (stock pynetdicom only; the fast path catches its own):
    one line, no traceback. Returns False for every other thread."""
    thread = args.thread
    assoc = thread if isinstance(thread, Association) else getattr(thread, "assoc", None) \
        if isinstance(thread, DULServiceProvider) else None
    server = _edge_server_of(assoc) if assoc is not None and getattr(assoc, "is_acceptor", False) else None
    if server is None or assoc is None:
        return False
    server.report(assoc, f"connection thread ended by {args.exc_type.__name__}: {args.exc_value}")
    _close(getattr(getattr(assoc.dul, "socket", None), "socket", None))
    return True


# ====================================================================== the fast path (SUPPORTED_PYNETDICOM)
class _ProtocolError(Exception):
    """The peer sent something PS3.7/PS3.8 does not allow; the association is aborted."""


def _recv_exact(sock: Any, n: int) -> bytearray:
    """Up to `n` bytes (fewer only if the peer closed)."""
    buf = bytearray(n)
    got = 0
    with memoryview(buf) as view:
        while got < n:
            k = sock.recv_into(view[got:], n - got)
            if not k:
                break
            got += k
    del buf[got:]
    return buf


def _recv_growing(sock: Any, header: bytes | bytearray, length: int,
                  on_data: Callable[[], None] | None = None) -> bytearray:
    """`header` + up to `length` more bytes. The buffer starts at most _FIRST_CHUNK large and doubles as data
    arrives, so what is allocated never exceeds twice what the peer has really sent. `on_data` is called whenever
    bytes arrive (the network idle timer: a peer whose PDU is slow to arrive is not a silent one)."""
    buf = bytearray(header)
    start = len(buf)
    target = start + length
    got = start
    while got < target:
        if got == len(buf):
            grow = min(target, max(start + _FIRST_CHUNK, 2 * len(buf))) - len(buf)
            buf.extend(bytes(grow))
        with memoryview(buf) as view:
            k = sock.recv_into(view[got:], len(buf) - got)
        if not k:
            break
        got += k
        if on_data is not None:
            on_data()
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
            return  # decrypted bytes already buffered: poll would not see them
        try:
            events = self._poll.poll(max(1, int(timeout * 1000)))
        except (OSError, ValueError):  # socket closed under us: the next look reports it
            time.sleep(IDLE_WAIT_SECONDS)
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


class _FastRequestHandler(RequestHandler):
    """Creates the node's Association subclass for each accepted connection."""

    server: EdgeServer

    def _create_association(self) -> Association:
        server = self.server
        assoc = _FastAssociation(self.ae, server.edge)
        assoc._server = server
        assoc.name = f"AcceptorThread@{datetime.now():%Y%m%d%H%M%S}"
        assoc.set_socket(AssociationSocket(assoc, client_socket=self.request))
        acceptor = assoc.acceptor
        acceptor.maximum_length = server.edge.max_pdu_size
        acceptor.ae_title = server.ae_title
        acceptor.address_info = self.local
        acceptor.implementation_class_uid = self.ae.implementation_class_uid
        acceptor.implementation_version_name = self.ae.implementation_version_name
        acceptor.supported_contexts = server.contexts_for_association()
        assoc.requestor.address_info = self.remote
        for event, bound in server._handlers.items():  # as pynetdicom's RequestHandler does
            if event.is_intervention:
                if bound:
                    assoc.bind(event, *bound)
            elif isinstance(event, evt.NotificationEvent):
                for handler, args in bound:  # type: ignore[misc]
                    assoc.bind(event, handler, args)
        return assoc


class _FastAssociation(Association):
    """An acceptor association with the node's DUL and DIMSE providers and an event-driven reactor."""

    dul: _FastDUL
    dimse: _FastDIMSE

    def __init__(self, ae: Any, edge: EdgeSettings) -> None:
        super().__init__(ae, MODE_ACCEPTOR)
        self.dul = _FastDUL(self, edge)
        self.dimse = _FastDIMSE(self, edge)
        self._serving = False
        # the timeouts were applied to the providers made by Association.__init__: apply them to ours
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            for event in list(self._handlers):
                bound = self._handlers[event]
                if isinstance(bound, list):
                    for handler, _ in list(bound):
                        if _is_standard_log_handler(handler):
                            self.unbind(event, handler)

    def idle_seconds(self) -> float | None:
        """Seconds since the peer last sent anything, when nothing is in progress (else None)."""
        if self._serving or not self.is_established or self.dimse.busy:
            return None
        return time.monotonic() - self.dul.last_received

    def report(self, problem: str) -> None:
        server = _edge_server_of(self)
        if server is not None:
            server.report(self, problem)
        else:
            logger.warning("%s: %s", _who(self), problem)

    def run_reactor(self) -> None:
        try:
            super().run_reactor()
        except Exception as exc:  # noqa: BLE001 - nothing escapes a network thread
            self.report(f"association ended by {type(exc).__name__}: {exc}")
            self.is_established = False
            self.dul.kill_dul()
            _close(getattr(self.dul.socket, "socket", None))
        finally:
            self.dimse.discard_unserved()
            server = _edge_server_of(self)
            if server is not None:
                server.association_ended(self)

    def _run_reactor(self) -> None:
        """pynetdicom's acceptor loop, with the 1 ms sleep replaced by a wait on the DIMSE queue."""
        self._is_paused = False
        while not self._kill:
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            context_id, msg = self.dimse.get_msg(block=False)
            if msg is not None:
                self._serving = True
                try:
                    self._serve_request(msg, context_id)
                finally:
                    self._serving = False
                    self.dimse.forget(msg)
            if self.is_established and self.acse.is_release_requested():
                self.acse.send_release(is_response=True)
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return
            if self.acse.is_aborted():
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return
            if not self.dul.is_alive():
                self.kill()
                return
            if self.dul.idle_timer_expired():
                self.report(f"no data for {self.network_timeout} s (network timeout)")
                _close(getattr(self.dul.socket, "socket", None))  # wakes a reader blocked inside a PDU
                self.abort()
                self.kill()
                return


class _FastDUL(DULServiceProvider):
    """Reads PDUs with their length checked first; idles in poll; contains every exception."""

    def __init__(self, assoc: _FastAssociation, edge: EdgeSettings) -> None:
        super().__init__(assoc)
        self._max_pdu = edge.max_pdu_size
        self._waiter: _Waiter | None = None
        self._broken = False  # the peer sent something malformed: read nothing more from it
        self.last_received = time.monotonic()  # when the peer last sent bytes
        self.name = f"AcceptorDUL@{datetime.now():%Y%m%d%H%M%S}"

    def _limit(self, pdu_type: int) -> int:
        if pdu_type == 0x04:
            return self._max_pdu + 6  # tolerate peers that count the PDU header in the maximum length
        if pdu_type in (0x01, 0x02):
            return ASSOCIATE_PDU_LIMIT
        return FIXED_PDU_LIMIT

    def _problem(self, text: str) -> None:
        self._broken = True
        self.assoc.report(text)  # type: ignore[attr-defined]
        self.event_queue.put("Evt19")  # unrecognised or invalid PDU: A-ABORT (PS3.8 9.2, AA-1/AA-8)

    def _read_pdu_data(self) -> None:
        sock = getattr(self.socket, "socket", None)
        if sock is None:
            self.event_queue.put("Evt17")
            return
        if self._broken:  # bad input seen: what else the peer sends is dropped unread until the A-ABORT is out
            try:  # and the ARTIM timer (acse_timeout) closes the connection
                if not sock.recv(65536):
                    self.event_queue.put("Evt17")
            except (OSError, ValueError):
                self.event_queue.put("Evt17")
            return
        try:
            header = _recv_exact(sock, 6)
            if len(header) < 6:
                if header:
                    self.assoc.report(f"connection closed inside a PDU header ({len(header)} of 6 bytes)")  # type: ignore[attr-defined]
                self.event_queue.put("Evt17")
                return
            pdu_type, _, length = struct.unpack(">BBL", header)
            name = _PDU_NAMES.get(pdu_type)
            if name is None:
                self._problem(f"unknown PDU type 0x{pdu_type:02X} (not DICOM, or a broken sender)")
                return
            if length > self._limit(pdu_type):
                what = "node.max_pdu_size" if pdu_type == 0x04 else "the limit for this PDU type"
                self._problem(f"{name} PDU announces {length} bytes, more than the {self._limit(pdu_type)} "
                              f"this node accepts ({what}): aborted before reading it")
                return
            self.last_received = time.monotonic()
            data = _recv_growing(sock, header, length, self._data_arrived)
        except (OSError, ValueError) as exc:
            if isinstance(exc, TimeoutError):
                self.assoc.report(  # type: ignore[attr-defined]
                    f"no data for {self.assoc.network_timeout} s in the middle of a PDU (network timeout)")
            elif not isinstance(exc, ValueError) and exc.errno not in (errno.ECONNRESET, errno.EBADF, errno.EPIPE):
                self.assoc.report(f"connection error: {exc.strerror or exc}")  # type: ignore[attr-defined]
            self.event_queue.put("Evt17")
            return
        if len(data) < 6 + length:
            self.assoc.report(  # type: ignore[attr-defined]
                f"connection closed inside a {name} PDU ({len(data) - 6} of {length} bytes received)")
            self.event_queue.put("Evt17")
            return
        try:
            pdu, event = self._decode_pdu(data)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is a malformed PDU
            self._problem(f"malformed {name} PDU ({type(exc).__name__}: {exc})"[:300])
            return
        self.event_queue.put(event)
        self._recv_pdu.put(pdu)

    def _data_arrived(self) -> None:
        self.last_received = time.monotonic()
        self._idle_timer.restart()

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        waiter = self._waiter
        if waiter is not None:
            waiter.wake()

    def run_reactor(self) -> None:
        """pynetdicom's DUL loop, waiting in poll (socket readable or a PDU to send) instead of sleeping."""
        sock = getattr(self.socket, "socket", None)
        waiter = _Waiter(sock) if sock is not None else None
        self._waiter = waiter
        self._idle_timer.start()
        try:
            while not self._kill_thread:
                if not self.assoc._dul_ready.is_set():
                    self.assoc._dul_ready.set()
                if self.artim_timer.expired:
                    self.event_queue.put("Evt18")
                busy = self._process_recv_primitive()
                if not busy and self._is_transport_event():
                    self._idle_timer.restart()
                    busy = True
                try:
                    event = self.event_queue.get_nowait()
                except queue.Empty:
                    if not busy:
                        if waiter is not None:
                            waiter.wait(IDLE_WAIT_SECONDS)
                        else:
                            time.sleep(IDLE_WAIT_SECONDS)
                    continue
                self.state_machine.do_action(event)
        except Exception as exc:  # noqa: BLE001 - nothing escapes a network thread
            self.assoc.report(f"protocol error: {type(exc).__name__}: {exc}"[:300])  # type: ignore[attr-defined]
            self._abort_now()
        finally:
            self._waiter = None
            if waiter is not None:
                waiter.close()

    def _abort_now(self) -> None:
        """Send an A-ABORT straight to the socket and stop (the state machine cannot be trusted any more)."""
        try:
            pdu = A_ABORT_RQ()
            pdu.source = 0x02
            pdu.reason_diagnostic = 0x00
            if self.socket is not None and self.socket.socket is not None:
                self.socket.send(pdu.encode())
        except Exception:  # noqa: BLE001 - the peer may be gone already
            pass
        self.assoc.is_aborted = True
        self.assoc.is_established = False
        self.assoc._kill = True
        self._kill_thread = True
        if self.socket is not None:
            _close(self.socket.socket)


class _Incoming:
    """One DIMSE message being assembled from P-DATA fragments."""

    def __init__(self, context_id: int) -> None:
        self.context_id = context_id
        self.command = bytearray()
        self.message: Any = None  # the pynetdicom DIMSEMessage, once the command set is complete
        self.spool: Any = None  # C-STORE data set: the spool file it streams into
        self.data: BytesIO | None = None  # any other data set (small)

    def discard(self) -> None:
        if self.spool is not None:
            _discard_spool(self.spool)
            self.spool = None


def _discard_spool(spool: Any) -> None:
    try:
        spool.close()
    except OSError:
        pass
    try:
        os.unlink(spool.name)
    except OSError:
        pass


class _FastDIMSE(DIMSEServiceProvider):
    """Assembles DIMSE messages with every fragment checked; streams C-STORE data sets into spool files."""

    def __init__(self, assoc: _FastAssociation, edge: EdgeSettings) -> None:
        super().__init__(assoc)
        self._spool = edge.spool
        self._incoming: _Incoming | None = None

    # -------------------------------------------------------------- receiving
    def receive_primitive(self, primitive: P_DATA) -> None:
        try:
            for context_id, data in primitive.presentation_data_value_list:
                self._fragment(context_id, data)
        except _ProtocolError as exc:
            self._fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - malformed content surfaces as anything
            self._fail(f"malformed DIMSE message ({type(exc).__name__}: {exc})"[:300])

    def _fail(self, problem: str) -> None:
        if self._incoming is not None:
            self._incoming.discard()
            self._incoming = None
        self.dul._problem(problem)  # type: ignore[attr-defined]

    def _context(self, context_id: int) -> PresentationContext:
        cx = self.assoc._accepted_cx.get(context_id)
        if cx is None:
            raise _ProtocolError(f"P-DATA on presentation context {context_id}, which was not accepted")
        return cx

    def _fragment(self, context_id: int, data: bytes) -> None:
        if not data:
            raise _ProtocolError("empty presentation data value")
        cx = self._context(context_id)
        header = data[0]
        incoming = self._incoming
        if incoming is not None and incoming.context_id != context_id:
            raise _ProtocolError(f"a message started on presentation context {incoming.context_id} continues on "
                                 f"{context_id}")
        if header & 0x01:  # command fragment
            if incoming is None:
                incoming = self._incoming = _Incoming(context_id)
            elif incoming.message is not None:
                raise _ProtocolError("command fragment after the command set was complete")
            incoming.command += data[1:]
            if len(incoming.command) > COMMAND_SET_LIMIT:
                raise _ProtocolError(f"command set longer than {COMMAND_SET_LIMIT} bytes")
            if header & 0x02:
                self._command_complete(incoming, cx)
            return
        if incoming is None or incoming.message is None:
            raise _ProtocolError("data set fragment before its command set")
        if incoming.spool is not None:
            incoming.spool.write(memoryview(data)[1:])
        else:
            assert incoming.data is not None
            incoming.data.write(data[1:])
            if incoming.data.tell() > INLINE_DATA_SET_LIMIT and not isinstance(incoming.message, C_STORE_RQ):
                raise _ProtocolError(f"data set of a {type(incoming.message).__name__} longer than "
                                     f"{INLINE_DATA_SET_LIMIT} bytes")
        if header & 0x02:
            self._message_complete(incoming)

    def _command_complete(self, incoming: _Incoming, cx: PresentationContext) -> None:
        try:
            command = decode(BytesIO(bytes(incoming.command)), True, True)
            field = command.get("CommandField")
            has_data = command.get("CommandDataSetType")
        except Exception as exc:  # noqa: BLE001
            raise _ProtocolError(f"undecodable command set ({type(exc).__name__}: {exc})") from exc
        if not isinstance(field, int) or field not in _MESSAGE_TYPES:
            raise _ProtocolError(f"command set with an unknown CommandField {field!r}")
        if not isinstance(has_data, int):
            raise _ProtocolError(f"command set with an invalid CommandDataSetType {has_data!r}")
        name, cls = _MESSAGE_TYPES[field]
        if cls not in (C_STORE_RQ, C_ECHO_RQ, C_CANCEL_RQ):
            raise _ProtocolError(f"{name} is not a service this node provides (C-ECHO and C-STORE only)")
        if self.msg_queue.qsize() >= MAX_QUEUED_REQUESTS:
            raise _ProtocolError(f"more than {MAX_QUEUED_REQUESTS} requests sent without waiting for responses")
        message = cls()
        message.command_set = command
        message.context_id = incoming.context_id
        incoming.message = message
        if has_data == 0x0101:  # no data set
            self._message_complete(incoming)
            return
        if cls is C_STORE_RQ and self._spool is not None:
            sop_class = command.get("AffectedSOPClassUID")
            sop_instance = command.get("AffectedSOPInstanceUID")
            if not isinstance(sop_class, str) or not isinstance(sop_instance, str):
                raise _ProtocolError("C-STORE-RQ without a single Affected SOP Class and Instance UID")
            try:
                incoming.spool = self._spool()
            except OSError:  # no spool file (disk full, tmp/ gone): keep it in memory; the handler, which needs
                incoming.data = BytesIO()  # to write it anyway, answers 0xA700 with the reason
                return
            meta = create_file_meta(sop_class_uid=sop_class, sop_instance_uid=sop_instance,  # type: ignore[arg-type]
                                    transfer_syntax=cx.transfer_syntax[0])
            incoming.spool.write(b"\x00" * 128 + b"DICM" + encode_file_meta(meta))
        else:
            incoming.data = BytesIO()

    def _message_complete(self, incoming: _Incoming) -> None:
        message = incoming.message
        if incoming.spool is not None:
            incoming.spool.close()
            message._data_set_path = Path(incoming.spool.name)
            message._data_set_file = incoming.spool
            message.data_set = BytesIO()
        else:
            message.data_set = incoming.data or BytesIO()
        self._incoming = None
        try:
            primitive = message.message_to_primitive()
        except Exception as exc:  # noqa: BLE001
            incoming.discard()
            raise _ProtocolError(f"invalid {type(message).__name__.replace('_', '-')} "
                                 f"({type(exc).__name__}: {exc})") from exc
        evt.trigger(self.assoc, evt.EVT_DIMSE_RECV, {"message": message})
        if isinstance(primitive, C_CANCEL):
            if len(self.cancel_req) < 10:
                self.cancel_req[int(primitive.MessageIDBeingRespondedTo or 0)] = primitive
            return
        self.msg_queue.put((incoming.context_id, primitive))

    @property
    def busy(self) -> bool:
        """A message is being received or waits to be served."""
        return self._incoming is not None or not self.msg_queue.empty()

    def forget(self, primitive: Any) -> None:
        """After a request was served: its spool file, if the handler did not take it, is removed."""
        path = getattr(primitive, "_dataset_path", None)
        if isinstance(path, Path):
            try:
                path.unlink()
            except OSError:
                pass

    def discard_unserved(self) -> None:
        """The association ended: remove the spool files of messages not complete or not served."""
        if self._incoming is not None:
            self._incoming.discard()
            self._incoming = None
        while True:
            try:
                _, primitive = self.msg_queue.get_nowait()
            except queue.Empty:
                break
            self.forget(primitive)

    # -------------------------------------------------------------- sending
    def get_msg(self, block: bool = False) -> Any:
        if block:
            return super().get_msg(block)
        try:  # returns as soon as the DUL thread completes a message
            return self.msg_queue.get(timeout=IDLE_WAIT_SECONDS)
        except queue.Empty:
            return None, None

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if not _is_plain_store_response(primitive) or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            super().send_msg(primitive, context_id)
            return
        command = encode_store_response(str(primitive.AffectedSOPClassUID), str(primitive.AffectedSOPInstanceUID),
                                        int(primitive.MessageIDBeingRespondedTo), int(primitive.Status))
        if self.maximum_pdu_size and len(command) + 6 > self.maximum_pdu_size:
            super().send_msg(primitive, context_id)  # a peer with tiny PDUs: let pynetdicom fragment
            return
        pdata = P_DATA()
        # one PDV, the last (and only) fragment of a command: control header bits 11
        pdata.presentation_data_value_list.append((context_id, b"\x03" + command))
        self.dul.send_pdu(pdata)
