"""The network edge: a pynetdicom AE serving Verification and Storage.

Handlers stay tiny (spool the raw bytes, hand over, return a PS3.4 status); this is the only place where the
node's exceptions become DIMSE statuses, and no exception leaves a handler. Datasets are never decoded here.

What a stored file holds ("as received"): a 128-byte zero preamble, "DICM", a file meta group written by the
node (group length, version, Media Storage SOP Class and Instance UID from the C-STORE request, the transfer
syntax of the presentation context, pynetdicom's implementation UID and version name), then the data set bytes
exactly as they arrived in the P-DATA fragments, unchanged (a sender's group 0002 elements inside the data set
included). How pynetdicom is driven at this edge lives in node/netfast.py.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import socket
import ssl
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import time

from node import dimse_status as statuses
from node import netfast
from node.admission import Limits
from node.audit import audit
from node.config import Config, NodeConfig
from node.header import DatasetMismatchError, UndecodableDatasetError
from node.receive import Receiver
from node.sopclasses import STORAGE_SOP_CLASSES, may_be_storage_sop_class, transfer_syntaxes
from node.store import InvalidUIDError, StorageError

logger = logging.getLogger(__name__)

_SOCKET_BUFFER = 4 * 1024 * 1024
_WRITEBACK_CHUNK = 1 << 17  # start disk writeback every 128 KiB received, so the final fsync has little left to do

_sync_file_range: Any = None
try:  # Linux: start writeback of a range without waiting for it (no Python binding in os)
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _sync_file_range = _libc.sync_file_range
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    _SYNC_FILE_RANGE_WRITE = 2
except (OSError, AttributeError):
    pass


class _SpoolPool:
    """A few empty spool files created ahead of need by a background thread.

    Creating a file is a journaled metadata write that can wait behind an fsync in progress (measured ~0.3-0.5 ms
    per instance on the receive path); taking a ready one costs nothing. Files left in the pool at a crash are
    partial writes like any other and are removed from tmp/ at start-up.
    """

    SIZE = 2

    def __init__(self) -> None:
        self._ready: deque[tuple[Path, int, str]] = deque()
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None

    def take(self, directory: Path) -> tuple[int, str]:
        """An open, empty temp file in `directory`: (fd, name)."""
        with self._lock:
            while self._ready:
                folder, fd, name = self._ready.popleft()
                if folder == directory:
                    self._wanted.set()
                    return fd, name
                _discard(fd, name)  # made for another (stopped) node's folder
            if self._thread is None:
                self._thread = threading.Thread(target=self._fill, name="spool-pool", daemon=True)
                self._thread.start()
        self._wanted.set()
        return tempfile.mkstemp(dir=directory, suffix=".part")

    def __len__(self) -> int:
        """Files made ahead and ready."""
        with self._lock:
            return len(self._ready)

    def drain(self) -> None:
        """Close and remove the files made ahead (node stop; one being made at that moment may stay behind,
        empty, until the next start cleans tmp/)."""
        with self._lock:
            while self._ready:
                _discard(*self._ready.popleft()[1:])

    def _fill(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            while True:
                directory = SpoolFile.directory
                with self._lock:
                    if directory is None or len(self._ready) >= self.SIZE:
                        break
                try:
                    fd, name = tempfile.mkstemp(dir=directory, suffix=".part")
                except OSError:  # disk full or folder gone: the receive path creates its own and reports
                    break
                with self._lock:
                    self._ready.append((directory, fd, name))


def _discard(fd: int, name: str) -> None:
    os.close(fd)
    try:
        os.unlink(name)
    except OSError:
        pass


class SpoolFile:
    """The temp file a C-STORE dataset streams into as its PDUs arrive (node/netfast.py).

    It lives in the node's tmp folder on the data volume, so committing it is an fsync and a rename, and it
    kicks off disk writeback while later PDUs are still arriving: most of the fsync's work is then done
    before the last byte comes in.
    """

    directory: Path | None = None
    #: spool files whose writing failed (e.g. disk full), by name: the handler answers 0xA700 for them
    failed: dict[str, OSError] = {}

    pool = _SpoolPool()

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        fd, self.name = self.pool.take(Path(self.directory or tempfile.gettempdir()))
        self._fd = fd
        self._pos = 0
        self._started = 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        if self.name in self.failed:
            return len(data)  # keep draining the network; the C-STORE is refused when it completes
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self._pos += n
        except OSError as exc:  # raising here would kill pynetdicom's reader thread and the association
            self.failed[self.name] = exc
            os.ftruncate(self._fd, 0)  # give the space back at once
            return len(data)
        if _sync_file_range is not None and self._pos - self._started >= _WRITEBACK_CHUNK:
            _sync_file_range(self._fd, self._started, self._pos - self._started, _SYNC_FILE_RANGE_WRITE)
            self._started = self._pos
        return len(data)

    def tell(self) -> int:
        return self._pos

    def flush(self) -> None:
        """Data goes straight to the OS with os.write; nothing is buffered here."""

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO
    return ds


def _contained(handler: Any) -> Any:
    """A notification handler that never raises into pynetdicom (which would log a traceback): one line."""
    def run(event: Any) -> None:
        try:
            handler(event)
        except Exception as exc:  # noqa: BLE001
            logger.error("%s failed for %s: %s: %s", handler.__name__, event.event.name, type(exc).__name__, exc)

    run.__name__ = handler.__name__
    return run


def _rejection_reason(primitive: Any, calling: str, called: str, config: Config) -> str:
    """The A-ASSOCIATE-RJ we sent, in words (PS3.8 7.1.1.9 result/source/diagnostic)."""
    source = getattr(primitive, "result_source", None)
    diagnostic = getattr(primitive, "diagnostic", None)
    if source == 0x01 and diagnostic == 0x03:
        return f"calling AE {calling!r} is not in security.allowed_calling_aes"
    if source == 0x01 and diagnostic == 0x07:
        return f"called AE {called!r} is not this node's AE title ({config.node.ae_title})"
    if source == 0x01 and diagnostic == 0x02:
        return "application context not supported"
    if source == 0x03 and diagnostic == 0x02:
        return f"{config.node.max_associations} associations already active (node.max_associations)"
    if source == 0x02 and diagnostic == 0x02:
        return "protocol version not supported"
    if source == 0x02 and diagnostic == 0x01:
        return "user identity not accepted"
    return f"result source {source}, diagnostic {diagnostic}"


def _peer(event: Any) -> tuple[str, str]:
    req = event.assoc.requestor
    return str(req.ae_title).strip(), f"{req.address}:{req.port}"


class StorageSCP:
    """Verification + Storage SCP writing through a :class:`Receiver`."""

    def __init__(self, config: Config, receiver: Receiver, ssl_context: ssl.SSLContext | None = None) -> None:
        self.config = config
        self.receiver = receiver
        self.ssl_context = ssl_context
        self.tmp_dir = receiver.store.tmp
        self.strict = config.receive.strict
        self.max_pdu_size = config.node.max_pdu_size or NodeConfig.max_pdu_size
        self.server: netfast.EdgeServer | None = None
        self.ae = self._make_ae()
        # per association: study UID -> [stored, refused], audited once per study when the association ends
        self._transfers: dict[int, dict[str, list[int]]] = {}
        self._transfers_lock = threading.Lock()
        # metrics hook (node/metrics.py NodeMetrics.observe_store): wraps the C-STORE handler when set
        self.observe_store: Any = None

    def _make_ae(self) -> AE:
        c = self.config
        ae = AE(ae_title=c.node.ae_title)
        ae.maximum_pdu_size = self.max_pdu_size
        # the association limit is the edge server's (node/admission.py), which counts real associations only;
        # pynetdicom's own check would also count connections that never asked for one
        ae.maximum_associations = 100_000
        ae.require_called_aet = True
        ae.require_calling_aet = list(c.security.allowed_calling_aes)
        ae.network_timeout = c.receive.network_timeout_seconds
        ae.acse_timeout = c.receive.negotiation_timeout_seconds
        ae.dimse_timeout = 60
        ae.add_supported_context(Verification)
        classes = dict.fromkeys(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)
        classes.update(dict.fromkeys(STORAGE_SOP_CLASSES))
        for uid in classes:
            ae.add_supported_context(uid, transfer_syntaxes(self.strict))
        return ae

    @property
    def handlers(self) -> list[tuple[Any, Any]]:
        store = self.observe_store(self.handle_store) if self.observe_store else self.handle_store  # metrics hook
        return [
            (evt.EVT_C_STORE, store),
            (evt.EVT_CONN_OPEN, _contained(self._on_connect)),
            (evt.EVT_ACCEPTED, _contained(self._on_accepted)),
            (evt.EVT_REJECTED, _contained(self._on_rejected)),
            (evt.EVT_ABORTED, _contained(self._on_aborted)),
            (evt.EVT_RELEASED, _contained(self._on_released)),
            (evt.EVT_C_ECHO, self._on_echo),
        ]

    def edge_settings(self) -> netfast.EdgeSettings:
        r = self.config.receive
        return netfast.EdgeSettings(
            limits=Limits(max_associations=self.config.node.max_associations, max_negotiating=r.max_negotiating,
                          max_negotiating_per_address=r.max_negotiating_per_address,
                          negotiation_timeout=r.negotiation_timeout_seconds,
                          idle_association=r.idle_association_seconds),
            max_pdu_size=self.max_pdu_size,
            network_timeout=float(self.ae.network_timeout or 60),
            fast_path=r.fast_path,
            extra_storage=None if self.strict else may_be_storage_sop_class,
            transfer_syntaxes=tuple(transfer_syntaxes(self.strict)),
            spool=SpoolFile,
        )

    def start(self) -> tuple[str, int]:
        """Listen (non-blocking). Returns the bound (host, port)."""
        n = self.config.node
        if not n.max_pdu_size:
            logger.warning("node.max_pdu_size = 0 (unlimited) is no longer honoured: one connection could claim "
                           "gigabytes; receiving PDUs of up to %d bytes", self.max_pdu_size)
        SpoolFile.directory = Path(self.tmp_dir)
        self.server = netfast.start_server(self.ae, (n.host, n.port), self.edge_settings(), self.handlers,
                                           self.ssl_context)
        host, port = self.server.server_address[:2]
        logger.info("listening as %s on %s:%d%s (%s receive policy)", n.ae_title, host, port,
                    " (TLS)" if self.ssl_context else "", "strict" if self.strict else "tolerant")
        return host, port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()  # no new connections
        self.ae.shutdown()  # ends the running associations (their events still see the server)
        self.server = None
        SpoolFile.pool.drain()

    @property
    def fast_path(self) -> bool:
        """Whether the server runs node/netfast.py's fast path (False: stock pynetdicom)."""
        return self.server is not None and self.server.fast

    # ------------------------------------------------------------------ handlers
    def handle_store(self, event: Any) -> int | Dataset:
        """C-STORE: spool, check, store, answer. Never raises (pynetdicom would log a traceback)."""
        try:
            return self._store(event)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one instance a failure status, nothing more
            calling, addr = _peer(event)
            logger.error("C-STORE from %s (%s) failed (0x%04X processing failure): %s: %s", calling, addr,
                         statuses.PROCESSING_FAILURE, type(exc).__name__, exc)
            return _status(statuses.PROCESSING_FAILURE, f"internal error: {type(exc).__name__}")

    def _store(self, event: Any) -> int | Dataset:
        req = event.request
        calling, _ = _peer(event)
        sop_class = str(req.AffectedSOPClassUID or "")
        sop_inst = str(req.AffectedSOPInstanceUID or "")
        try:
            spooled = self._spool(event)
            path, new, info = self.receiver.accept(spooled, sop_class, sop_inst, calling,
                                                   str(event.context.transfer_syntax))
        except UndecodableDatasetError as exc:
            logger.error("C-STORE %s from %s refused (0xC000): %s", sop_inst[:80], calling, exc)
            self._count(event, "(undecodable)", ok=False)
            return _status(statuses.CANNOT_UNDERSTAND, str(exc))
        except (DatasetMismatchError, InvalidUIDError) as exc:
            logger.error("C-STORE %s from %s refused (0xA900): %s", sop_inst[:80], calling, exc)
            self._count(event, "(invalid)", ok=False)
            return _status(statuses.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, str(exc))
        except (StorageError, OSError) as exc:
            logger.error("C-STORE %s from %s refused (0xA700 out of resources): %s", sop_inst[:80], calling, exc)
            self._count(event, "(not stored)", ok=False)
            return _status(statuses.OUT_OF_RESOURCES, f"cannot store: {exc.strerror or exc}")
        if info.unusable and new:
            logger.warning("C-STORE %s from %s stored, but not usable as an analysis input: %s", sop_inst[:80],
                           calling, info.unusable)
        logger.debug("stored %s (%s)", path, "new" if new else "duplicate")
        self._count(event, info.study_uid, ok=True)
        return statuses.SUCCESS

    def _count(self, event: Any, study_uid: str, ok: bool) -> None:
        with self._transfers_lock:
            per_study = self._transfers.setdefault(id(event.assoc), {})
            per_study.setdefault(study_uid, [0, 0])[0 if ok else 1] += 1

    def _audit_transfers(self, event: Any, ae: str, addr: str) -> None:
        with self._transfers_lock:
            per_study = self._transfers.pop(id(event.assoc), {})
        for study, (stored, refused) in per_study.items():
            audit("transfer", direction="in", peer_ae=ae, address=addr, study=study, stored=stored, refused=refused,
                  result="ok" if not refused else "partial" if stored else "refused")

    def _spool(self, event: Any) -> Path:
        """The Part 10 temp file holding the dataset exactly as received (preamble + file meta + dataset)."""
        path = event.dataset_path  # the fast path streamed it into a SpoolFile as it arrived
        if path is None:  # stock pynetdicom: the data set is in memory; write it out the same way
            spool = SpoolFile()
            path = spool.name
            spool.write(event.encoded_dataset(include_meta=True))
            spool.close()
        spooled = Path(path)
        error = SpoolFile.failed.pop(str(spooled), None)
        if error is not None:
            spooled.unlink(missing_ok=True)
            raise StorageError(error.errno or 28, f"cannot spool dataset: {error.strerror or error}")
        return spooled

    def _on_connect(self, event: Any) -> None:
        sock = getattr(event.assoc.dul.socket, "socket", None)
        if isinstance(sock, socket.socket):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            except OSError:
                pass

    def _on_accepted(self, event: Any) -> None:
        ae, addr = _peer(event)
        audit("association", direction="in", peer_ae=ae, address=addr, called_ae=self.config.node.ae_title,
              result="accepted")

    def _on_rejected(self, event: Any) -> None:
        ae, addr = _peer(event)
        called = str(event.assoc.requestor.primitive.called_ae_title).strip() if event.assoc.requestor.primitive \
            else ""
        why = _rejection_reason(event.assoc.acceptor.primitive, ae, called, self.config)
        logger.warning("association from %s (%s) calling %r rejected: %s", ae, addr, called, why)
        audit("association", direction="in", peer_ae=ae, address=addr, called_ae=called, result="rejected",
              reason=why)

    def _on_aborted(self, event: Any) -> None:
        ae, addr = _peer(event)
        problem = self.server.problem_of(event.assoc) if self.server is not None else ""
        # one line per bad association: the edge already said what was wrong
        logger.log(logging.DEBUG if problem else logging.WARNING, "association with %s (%s) aborted",
                   ae or "(unknown)", addr)
        self._audit_transfers(event, ae, addr)
        audit("association", direction="in", peer_ae=ae, address=addr, result="aborted")

    def _on_released(self, event: Any) -> None:
        ae, addr = _peer(event)
        self._audit_transfers(event, ae, addr)
        audit("association", direction="in", peer_ae=ae, address=addr, result="released")

    def _on_echo(self, event: Any) -> int:
        return statuses.SUCCESS
