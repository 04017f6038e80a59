"""Destinations behind one protocol: a folder (durable file copies) or a DICOM peer (C-STORE SCU, optional TLS).

A destination delivers a batch of outbox items in one session (one association for DICOM) and yields one
:class:`Outcome` per item as soon as that item's transfer finished, so the sender can record each success
before the next transfer starts. If the session cannot be opened at all it raises :class:`DestinationError`.

DICOM negotiation fallbacks (logged, audited, recorded in the outcome's ``sent_as``):

- the stored transfer syntax is refused but the SOP class is accepted uncompressed: the object is decoded and
  sent in Explicit (or Implicit) VR Little Endian;
- a Parametric Map is refused (at negotiation, or with status 0x0122 "SOP class not supported") and
  ``outbox.parametric_map_fallback = "secondary-capture"`` (or the destination's own): a Secondary Capture
  rendition is sent instead
  (:func:`node.pm_fallback.pm_to_secondary_capture`);
- otherwise the item fails permanently with a message naming what the peer refused.
"""
from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import pydicom
from pydicom import Dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ParametricMapStorage,
    SecondaryCaptureImageStorage,
)
from pynetdicom import AE, build_context, evt
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext
from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS

from node import netfast
from node.audit import audit
from node.config import Config, ConfigError, DestinationConfig
from node.outbox import OutboxItem, atomic_write
from node.pm_fallback import FallbackError, pm_to_secondary_capture
from node.tls import TlsSetupError, client_context

__all__ = ["Outcome", "DestinationError", "Destination", "FolderDestination", "DicomDestination",
           "make_destination", "MAX_CONTEXTS"]

logger = logging.getLogger(__name__)

#: PS3.8 limits an association to 128 presentation contexts (odd context IDs 1..255).
MAX_CONTEXTS = 128
_UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
_SC_FALLBACK_STATUS = 0x0122  # "SOP class not supported" on the C-STORE itself


class DestinationError(RuntimeError):
    """No session could be opened with the destination (unreachable, association rejected, TLS failure)."""


@dataclass(frozen=True)
class Outcome:
    """Result of one item's transfer."""

    ok: bool
    detail: str = ""          # peer status or error text
    permanent: bool = False   # retrying cannot help (the peer refuses this kind of object): park at once
    sent_as: str = ""         # how it went when not as stored, e.g. "secondary-capture <uid>"
    status: int | None = None  # the peer's C-STORE status, when there was one


class Destination(Protocol):
    """Where outbox items go."""

    name: str

    def describe(self) -> str:
        """Short human description for logs (e.g. ``PACS@10.0.0.5:104 (TLS)``)."""
        ...

    def send(self, items: Sequence[OutboxItem]) -> Iterator[tuple[OutboxItem, Outcome]]:
        """Deliver `items` in one session, yielding each item's outcome as it completes."""
        ...


# ---------------------------------------------------------------------- folder

def _writer(data: bytes) -> Callable[[BinaryIO], None]:
    """A writer of `data` for atomic_write."""

    def write(fh: BinaryIO) -> None:
        fh.write(data)

    return write

class FolderDestination:
    """Writes each object durably to ``folder/<StudyInstanceUID>/<SOPInstanceUID>.dcm``."""

    def __init__(self, config: DestinationConfig) -> None:
        if config.folder is None:
            raise ValueError(f"destination {config.name} has no folder")
        self.name = config.name
        self.folder = Path(config.folder)

    def describe(self) -> str:
        return f"folder {self.folder}"

    def target(self, item: OutboxItem) -> Path:
        """Where `item` is written."""
        return self.folder / (item.study_instance_uid or "_") / f"{item.sop_instance_uid}.dcm"

    def send(self, items: Sequence[OutboxItem]) -> Iterator[tuple[OutboxItem, Outcome]]:
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot create folder {self.folder}: {exc.strerror or exc}") from exc
        for item in items:
            try:
                atomic_write(self.target(item), _writer(item.path.read_bytes()))
            except OSError as exc:
                yield item, Outcome(False, f"cannot write {self.target(item)}: {exc.strerror or exc}")
            else:
                yield item, Outcome(True, str(self.target(item)))


# ---------------------------------------------------------------------- DICOM
def _set_nodelay(event: evt.Event) -> None:
    """Disable Nagle on our side: without it small PDUs wait for delayed ACKs and loopback C-STORE crawls."""
    try:
        sock = event.assoc.dul.socket
        if sock is not None and sock.socket is not None:
            sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError) as exc:
        logger.debug("TCP_NODELAY not set: %s", exc)


def _status_text(code: int) -> str:
    meaning = STORAGE_SERVICE_CLASS_STATUS.get(code, ("", "unknown status"))[1]
    return f"0x{code:04X} ({meaning})"


def _sop_name(uid: str) -> str:
    name = UID(uid).name
    return name if name and name != uid else uid


class DicomDestination:
    """C-STORE SCU to one peer; one association per batch (split only above 128 presentation contexts)."""

    def __init__(self, config: DestinationConfig, node: Config) -> None:
        if config.ae_title is None or config.host is None or config.port is None:
            raise ValueError(f"destination {config.name} lacks ae_title/host/port")
        self.name = config.name
        self.ae_title = config.ae_title
        self.host = config.host
        self.port = config.port
        # Stored files go out as their bytes, streamed in PDU-sized chunks, never decoded and re-encoded: the
        # documented STORE_SEND_CHUNKED_DATASET option, set (once, not at import) by netfast.configure_process.
        netfast.configure_process()
        self._calling = node.node.ae_title
        self._max_pdu = node.node.max_pdu_size
        self._pm_fallback = (config.parametric_map_fallback or node.outbox.parametric_map_fallback) == \
            "secondary-capture"
        # Built once so a bad certificate or key stops start-up instead of failing every batch.
        try:
            self._tls = client_context(config.tls) if config.tls is not None else None
        except TlsSetupError as exc:
            raise ConfigError(f"destinations.{config.name}.tls.{exc.field}", str(exc)) from exc
        self.connection_timeout = 10.0
        self.acse_timeout = 30.0
        self.dimse_timeout = 120.0  # a large multi-frame object can take a while for a slow PACS to commit

    def describe(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}{' (TLS)' if self._tls else ''}"

    # -------------------------------------------------------------- negotiation plan
    def _contexts_for(self, items: Sequence[OutboxItem]) -> list[PresentationContext]:
        """Per SOP class: its stored compressed syntax(es) if any, plus an uncompressed context; plus Secondary
        Capture when a Parametric Map may need the fallback."""
        wanted: dict[str, list[list[str]]] = {}
        for it in items:
            syntaxes = wanted.setdefault(it.sop_class_uid, [list(_UNCOMPRESSED)])
            if it.transfer_syntax_uid not in _UNCOMPRESSED and [it.transfer_syntax_uid] not in syntaxes:
                syntaxes.insert(0, [it.transfer_syntax_uid])
        if self._pm_fallback and ParametricMapStorage in wanted:
            wanted.setdefault(SecondaryCaptureImageStorage, [list(_UNCOMPRESSED)])
        return [build_context(sop, ts) for sop, lists in wanted.items() for ts in lists]

    def _chunks(self, items: Sequence[OutboxItem]) -> list[list[OutboxItem]]:
        """Split a batch only if its contexts exceed the 128 an association may carry (grouped by SOP class)."""
        by_class: dict[str, list[OutboxItem]] = {}
        for it in items:
            by_class.setdefault(it.sop_class_uid, []).append(it)
        chunks: list[list[OutboxItem]] = [[]]
        for group in by_class.values():
            if chunks[-1] and len(self._contexts_for(chunks[-1] + group)) > MAX_CONTEXTS:
                chunks.append([])
            chunks[-1].extend(group)
        return chunks

    @staticmethod
    def _plan(item: OutboxItem, accepted: dict[str, set[str]], pm_fallback: bool) -> str | None:
        """How to send `item` on this association: 'as-stored', 'uncompressed', 'secondary-capture' or None."""
        ts = accepted.get(item.sop_class_uid, set())
        if item.transfer_syntax_uid in ts:
            return "as-stored"
        if ts & set(_UNCOMPRESSED):
            return "uncompressed"
        if pm_fallback and item.sop_class_uid == ParametricMapStorage and \
                accepted.get(SecondaryCaptureImageStorage, set()) & set(_UNCOMPRESSED):
            return "secondary-capture"
        return None

    @staticmethod
    def _payload(item: OutboxItem, plan: str) -> tuple[Path | Dataset, str]:
        """The object to hand to send_c_store and the `sent_as` note."""
        if plan == "as-stored":
            return item.path, ""
        ds = pydicom.dcmread(item.path)
        if plan == "secondary-capture":
            sc = pm_to_secondary_capture(ds)
            return sc, f"secondary-capture {sc.SOPInstanceUID}"
        stored = UID(item.transfer_syntax_uid)
        if stored.is_encapsulated:
            # Decoded in place; the transfer syntax becomes Explicit VR Little Endian. Same SOP Instance UID: it is
            # the same instance in another encoding, and a new UID would break references to it.
            ds.decompress(generate_instance_uid=False)
            return ds, f"decompressed from {stored.name} to Explicit VR Little Endian"
        if stored.is_deflated or not stored.is_little_endian:
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            return ds, f"re-encoded from {stored.name} to Explicit VR Little Endian"
        return ds, ""  # explicit <-> implicit little endian: pynetdicom converts on the fly, nothing to note

    # -------------------------------------------------------------- association
    def _associate(self, contexts: list[PresentationContext]) -> Association:
        ae = AE(ae_title=self._calling)
        ae.connection_timeout = self.connection_timeout
        ae.acse_timeout = self.acse_timeout
        ae.dimse_timeout = self.dimse_timeout
        ae.network_timeout = self.dimse_timeout
        return ae.associate(self.host, self.port, contexts=contexts, ae_title=self.ae_title, max_pdu=self._max_pdu,
                            tls_args=(self._tls, self.host) if self._tls is not None else None,
                            evt_handlers=[(evt.EVT_CONN_OPEN, _set_nodelay)])

    def _diagnose(self) -> str:
        """Why the association could not be opened: probe TCP and TLS once to give the operator a reason."""
        where = f"{self.host}:{self.port}"
        try:
            with socket.create_connection((self.host, self.port), timeout=self.connection_timeout) as raw:
                if self._tls is None:
                    return f"{where} accepted TCP but closed the association without an answer"
                with self._tls.wrap_socket(raw, server_hostname=self.host) as tls:
                    tls.settimeout(1.0)
                    try:
                        tls.recv(1)  # TLS 1.3 reports a refused client certificate only after the handshake
                    except TimeoutError:
                        pass
                return f"{where}: TLS handshake succeeded but the peer closed the association"
        except ssl.SSLError as exc:
            return f"TLS handshake with {where} failed: {exc.reason or exc}"
        except OSError as exc:
            return f"cannot connect to {where}: {exc.strerror or exc}"

    def send(self, items: Sequence[OutboxItem]) -> Iterator[tuple[OutboxItem, Outcome]]:
        for chunk in self._chunks(items):
            yield from self._send_chunk(chunk)

    def _send_chunk(self, items: list[OutboxItem]) -> Iterator[tuple[OutboxItem, Outcome]]:
        contexts = self._contexts_for(items)
        assoc = self._associate(contexts)
        peer = {"destination": self.name, "peer_ae": self.ae_title, "address": f"{self.host}:{self.port}",
                "tls": "yes" if self._tls else "no", "calling_ae": self._calling}
        if not assoc.is_established:
            refused = assoc.rejected_contexts
            if assoc.is_rejected:
                p = assoc.acceptor.primitive
                reason = (f"association rejected by {self.ae_title}: {p.result_str}, {p.source_str}, {p.reason_str}"
                          if p is not None else f"association rejected by {self.ae_title}")
            elif refused and not assoc.accepted_contexts:
                # The peer answered but accepted none of our SOP classes: nothing to retry until it is reconfigured.
                audit("association", direction="out", **peer, result="no-accepted-contexts", sent=0,
                      failed=len(items))
                for it in items:
                    yield it, self._refusal(it)
                return
            else:
                reason = self._diagnose()
            audit("association", direction="out", **peer, result="failed", reason=reason)
            raise DestinationError(reason)

        accepted: dict[str, set[str]] = {}
        for cx in assoc.accepted_contexts:
            accepted.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))
        sent = failed = fallbacks = 0
        result = "released"
        try:
            for item in items:
                if not assoc.is_established:
                    failed += 1
                    yield item, Outcome(False, "association ended before this instance was sent")
                    continue
                outcome = self._store(assoc, item, accepted)
                if outcome.ok:
                    sent += 1
                else:
                    failed += 1
                fallbacks += 1 if outcome.sent_as else 0
                yield item, outcome
        finally:
            if assoc.is_established:
                assoc.release()
            elif assoc.is_aborted:
                result = "aborted"
            audit("association", direction="out", **peer, result=result, sent=sent, failed=failed,
                  fallbacks=fallbacks)

    def _refusal(self, item: OutboxItem) -> Outcome:
        """Permanent failure: the peer refused the SOP class (or every transfer syntax we can produce)."""
        offered = ", ".join(UID(ts).name for ts in dict.fromkeys([item.transfer_syntax_uid, *_UNCOMPRESSED]))
        why = ""
        if item.sop_class_uid == ParametricMapStorage:
            why = (" and parametric_map_fallback is 'none'" if not self._pm_fallback
                   else " nor the Secondary Capture fallback")
        return Outcome(False, f"{self.describe()} does not accept {_sop_name(item.sop_class_uid)} in any offered "
                              f"transfer syntax ({offered}){why}", permanent=True)

    def _store(self, assoc: Association, item: OutboxItem, accepted: dict[str, set[str]]) -> Outcome:
        plan = self._plan(item, accepted, self._pm_fallback)
        if plan is None:
            return self._refusal(item)
        outcome = self._store_as(assoc, item, plan)
        sc_accepted = bool(accepted.get(SecondaryCaptureImageStorage, set()) & set(_UNCOMPRESSED))
        if (outcome.status == _SC_FALLBACK_STATUS and plan != "secondary-capture" and assoc.is_established
                and item.sop_class_uid == ParametricMapStorage and self._pm_fallback and sc_accepted):
            # Some archives accept every SOP class at negotiation and refuse on the C-STORE itself.
            logger.warning("%s refused Parametric Map %s with %s; sending the Secondary Capture fallback",
                           self.describe(), item.sop_instance_uid, outcome.detail)
            outcome = self._store_as(assoc, item, "secondary-capture")
        return outcome

    def _store_as(self, assoc: Association, item: OutboxItem, plan: str) -> Outcome:
        try:
            payload, sent_as = self._payload(item, plan)
        except (OSError, FallbackError) as exc:
            return Outcome(False, f"cannot prepare {item.path.name}: {exc}")
        except (ValueError, RuntimeError, NotImplementedError) as exc:  # pixel decoding without a codec
            return Outcome(False, f"cannot convert {item.path.name} for {self.describe()}: {exc}", permanent=True)
        if sent_as:
            logger.warning("%s: %s %s sent as %s", self.describe(), _sop_name(item.sop_class_uid),
                           item.sop_instance_uid, sent_as)
        try:
            status = assoc.send_c_store(payload)
        except (ValueError, AttributeError) as exc:
            return Outcome(False, f"cannot send {item.path.name}: {exc}", permanent=True)
        if "Status" not in status:
            return Outcome(False, "no C-STORE response (association aborted or timed out)")
        code = int(status.Status)
        if code == 0x0000:
            return Outcome(True, "0x0000 (Success)", sent_as=sent_as, status=code)
        if code in (0xB000, 0xB006, 0xB007):
            return Outcome(True, f"warning {_status_text(code)}", sent_as=sent_as, status=code)
        return Outcome(False, _status_text(code), status=code)


def make_destination(config: DestinationConfig, node: Config) -> Destination:
    """The destination implementation for a configured ``[destinations.NAME]``."""
    return FolderDestination(config) if config.kind == "folder" else DicomDestination(config, node)
