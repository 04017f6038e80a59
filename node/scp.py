"""The network edge: a pynetdicom AE serving Verification and Storage.

Handlers stay tiny (spool the raw bytes, hand over, return a PS3.4 status); this is the only place where the
node's exceptions become DIMSE statuses. Datasets are never decoded here: the received bytes are written as they
came (preamble + file meta + dataset) and only the header is parsed by the receiver.
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
from pynetdicom import _config as _pynetdicom_config
from pynetdicom import dimse_messages as _dimse_messages
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from node import dimse_status as statuses
from node import netfast
from node.audit import audit
from node.config import Config
from node.header import DatasetMismatchError, UndecodableDatasetError
from node.receive import Receiver
from node.sopclasses import STORAGE_SOP_CLASSES, TRANSFER_SYNTAXES
from node.store import InvalidUIDError, StorageError

logger = logging.getLogger(__name__)

_SOCKET_BUFFER = 4 * 1024 * 1024
_WRITEBACK_CHUNK = 1 << 17  # start disk writeback every 128 KiB received, so the final fsync has little left to do

try:  # Linux: start writeback of a range without waiting for it (no Python binding in os)
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    _sync_file_range = _libc.sync_file_range
    _sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    _SYNC_FILE_RANGE_WRITE = 2
except (OSError, AttributeError):
    _sync_file_range = None


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
    """The temp file pynetdicom streams a C-STORE dataset into (STORE_RECV_CHUNKED_DATASET).

    It lives in the node's tmp folder on the data volume, so committing it is an fsync and a rename, and it
    kicks off disk writeback while later PDUs are still arriving: most of the fsync's work is then done
    before the last byte comes in. Provides what pynetdicom uses of a NamedTemporaryFile.
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
        self.file = self  # pynetdicom calls .file.flush()

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


def enable_streaming_receive(tmp_dir: Path) -> None:
    """Have pynetdicom stream every C-STORE dataset to a SpoolFile in `tmp_dir` (one node per process)."""
    SpoolFile.directory = Path(tmp_dir)
    _pynetdicom_config.STORE_RECV_CHUNKED_DATASET = True
    _dimse_messages.NamedTemporaryFile = SpoolFile  # type: ignore[attr-defined]


def _status(code: int, comment: str) -> Dataset:
    ds = Dataset()
    ds.Status = code
    ds.ErrorComment = comment[:64]  # LO
    return ds


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
        self.server: ThreadedAssociationServer | None = None
        self.ae = self._make_ae()
        # per association: study UID -> [stored, refused], audited once per study when the association ends
        self._transfers: dict[int, dict[str, list[int]]] = {}
        self._transfers_lock = threading.Lock()
        # metrics hook (node/metrics.py NodeMetrics.observe_store): wraps the C-STORE handler when set
        self.observe_store: Any = None

    def _make_ae(self) -> AE:
        c = self.config
        if not logging.getLogger("pynetdicom").isEnabledFor(logging.DEBUG):
            # pynetdicom's standard handlers only feed its DEBUG log; unbound, every PDU and message is cheaper
            _pynetdicom_config.LOG_HANDLER_LEVEL = "none"
        ae = AE(ae_title=c.node.ae_title)
        ae.maximum_pdu_size = c.node.max_pdu_size
        ae.maximum_associations = c.node.max_associations
        ae.require_called_aet = True
        ae.require_calling_aet = list(c.security.allowed_calling_aes)
        ae.network_timeout = 60
        ae.acse_timeout = 30
        ae.dimse_timeout = 60
        ae.add_supported_context(Verification)
        classes = dict.fromkeys([cx.abstract_syntax for cx in AllStoragePresentationContexts])
        classes.update(dict.fromkeys(STORAGE_SOP_CLASSES))
        for uid in classes:
            ae.add_supported_context(uid, TRANSFER_SYNTAXES)
        return ae

    @property
    def handlers(self) -> list[tuple[Any, Any]]:
        store = self.observe_store(self.handle_store) if self.observe_store else self.handle_store  # metrics hook
        return [
            (evt.EVT_C_STORE, store),
            (evt.EVT_CONN_OPEN, self._on_connect),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_C_ECHO, self._on_echo),
        ]

    def start(self) -> tuple[str, int]:
        """Listen (non-blocking). Returns the bound (host, port)."""
        n = self.config.node
        enable_streaming_receive(self.tmp_dir)
        netfast.install()
        self.server = self.ae.start_server((n.host, n.port), block=False, evt_handlers=self.handlers,
                                           ssl_context=self.ssl_context)
        host, port = self.server.server_address[:2]
        logger.info("listening as %s on %s:%d%s", n.ae_title, host, port, " (TLS)" if self.ssl_context else "")
        return host, port

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.ae.shutdown()
        SpoolFile.pool.drain()

    # ------------------------------------------------------------------ handlers
    def handle_store(self, event: Any) -> int | Dataset:
        req = event.request
        calling, _ = _peer(event)
        sop_class = str(req.AffectedSOPClassUID or "")
        sop_inst = str(req.AffectedSOPInstanceUID or "")
        try:
            spooled = self._spool(event)
            path, new = self.receiver.accept(spooled, sop_class, sop_inst, calling,
                                             str(event.context.transfer_syntax))
        except UndecodableDatasetError as exc:
            logger.error("C-STORE %s from %s refused (0xC000): %s", sop_inst, calling, exc)
            self._count(event, "(undecodable)", ok=False)
            return _status(statuses.CANNOT_UNDERSTAND, str(exc))
        except (DatasetMismatchError, InvalidUIDError) as exc:
            logger.error("C-STORE %s from %s refused (0xA900): %s", sop_inst, calling, exc)
            self._count(event, "(invalid)", ok=False)
            return _status(statuses.DATA_SET_DOES_NOT_MATCH_SOP_CLASS, str(exc))
        except (StorageError, OSError) as exc:
            logger.error("C-STORE %s from %s refused (0xA700 out of resources): %s", sop_inst, calling, exc)
            self._count(event, "(not stored)", ok=False)
            return _status(statuses.OUT_OF_RESOURCES, f"cannot store: {exc.strerror or exc}")
        logger.debug("stored %s (%s)", path, "new" if new else "duplicate")
        self._count(event, path.parent.parent.name, ok=True)
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
        spooled = Path(event.dataset_path)  # streamed by pynetdicom into a SpoolFile (start() turns this on)
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
        logger.warning("association from %s (%s) calling %r rejected (unknown calling AE or wrong called AE)",
                       ae, addr, called)
        audit("association", direction="in", peer_ae=ae, address=addr, called_ae=called, result="rejected")

    def _on_aborted(self, event: Any) -> None:
        ae, addr = _peer(event)
        logger.warning("association with %s (%s) aborted", ae or "(unknown)", addr)
        self._audit_transfers(event, ae, addr)
        audit("association", direction="in", peer_ae=ae, address=addr, result="aborted")

    def _on_released(self, event: Any) -> None:
        ae, addr = _peer(event)
        self._audit_transfers(event, ae, addr)
        audit("association", direction="in", peer_ae=ae, address=addr, result="released")

    def _on_echo(self, event: Any) -> int:
        return statuses.SUCCESS
