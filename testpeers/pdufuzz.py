"""PS3.8 Upper Layer and PS3.7 DIMSE bytes for tests: builders, hostile mutations, a client, a parser and a
recording proxy (not a test module).

Written from the standard (PS3.8 9.3 PDU structure, PS3.7 9.3 / E.1 command sets), sharing nothing with
pynetdicom or the node, so a test can say exactly what went over the wire:

- builders: :func:`associate_rq`, :func:`p_data`, :func:`release_rq`, :func:`abort`, :func:`command_set`;
- :func:`hostile_cases`: a seeded list of named hostile connections (random bytes, mutated and truncated
  A-ASSOCIATE-RQs, oversized length fields up to 4 GiB, malformed P-DATA-TF and DIMSE commands after a valid
  association, closes in the middle of a PDU, slow senders), each a function of (host, port);
- :class:`Client`: a raw association (associate, C-ECHO, C-STORE of exact bytes) with time limits;
- :class:`RecordingProxy`: sits between a real sender and the node and records every C-STORE data set as the
  bytes that went over the wire, and every C-STORE response status;
- :func:`file_facts`: what a sender that sends a file as it is puts on the wire (also for bench.corpus).
"""
from __future__ import annotations

import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
IMPLICIT_LE = "1.2.840.10008.1.2"

A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, P_DATA_TF = 0x01, 0x02, 0x03, 0x04
A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x05, 0x06, 0x07


# ---------------------------------------------------------------------- PDUs (PS3.8 9.3)
def pdu(pdu_type: int, body: bytes, length: int | None = None) -> bytes:
    """Type, reserved, 4-byte big-endian length (the real one unless `length` lies), body."""
    return struct.pack(">BBL", pdu_type, 0, len(body) if length is None else length) + body


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)[:16]


def associate_rq(called: str = "LIVERNODE", calling: str = "FUZZ",
                 contexts: list[tuple[str, list[str]]] | None = None, max_pdu: int = 16384,
                 implementation_uid: str = "1.2.826.0.1.3680043.9.9999.1") -> bytes:
    """A-ASSOCIATE-RQ: protocol version 1, AE titles, application context, presentation contexts (odd IDs),
    user information (maximum length, implementation class UID)."""
    contexts = contexts or [(VERIFICATION, [IMPLICIT_LE]), (CT_IMAGE, [EXPLICIT_LE, IMPLICIT_LE])]
    items = _item(0x10, APPLICATION_CONTEXT.encode())
    for i, (abstract, syntaxes) in enumerate(contexts):
        sub = _item(0x30, abstract.encode()) + b"".join(_item(0x40, ts.encode()) for ts in syntaxes)
        items += _item(0x20, bytes([2 * i + 1, 0, 0, 0]) + sub)
    user = _item(0x51, struct.pack(">L", max_pdu)) + _item(0x52, implementation_uid.encode())
    items += _item(0x50, user)
    body = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32) + items
    return pdu(A_ASSOCIATE_RQ, body)


def parse_associate_ac(body: bytes) -> dict[int, tuple[int, str]]:
    """Presentation context results of an A-ASSOCIATE-AC body: context ID -> (result, transfer syntax)."""
    out = {}
    pos = 68
    while pos + 4 <= len(body):
        item_type, _, length = struct.unpack_from(">BBH", body, pos)
        value = body[pos + 4:pos + 4 + length]
        if item_type == 0x21:
            cid, result = value[0], value[2]
            ts = ""
            if len(value) >= 8:
                _, _, ts_len = struct.unpack_from(">BBH", value, 4)
                ts = value[8:8 + ts_len].decode("ascii", "replace").rstrip("\0 ")
            out[cid] = (result, ts)
        pos += 4 + length
    return out


def pdv(context_id: int, control: int, data: bytes) -> bytes:
    """One presentation data value item: length (context ID + header + data), context ID, control header."""
    return struct.pack(">LB", len(data) + 2, context_id) + bytes([control]) + data


def p_data(*pdvs: bytes, length: int | None = None) -> bytes:
    return pdu(P_DATA_TF, b"".join(pdvs), length)


def release_rq() -> bytes:
    return pdu(A_RELEASE_RQ, bytes(4))


def release_rp() -> bytes:
    return pdu(A_RELEASE_RP, bytes(4))


def abort(source: int = 0, reason: int = 0) -> bytes:
    return pdu(A_ABORT, bytes([0, 0, source, reason]))


# ---------------------------------------------------------------------- DIMSE command sets (PS3.7, implicit VR LE)
def _el(element: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0"
    return struct.pack("<HHI", 0x0000, element, len(value)) + value


def _us(v: int) -> bytes:
    return struct.pack("<H", v)


def command_set(*elements: tuple[int, bytes]) -> bytes:
    """A group-0000 command set with its group length, elements in the order given."""
    body = b"".join(_el(e, v) for e, v in elements)
    return _el(0x0000, struct.pack("<L", len(body))) + body


def c_echo_rq(message_id: int = 1) -> bytes:
    return command_set((0x0002, VERIFICATION.encode()), (0x0100, _us(0x0030)), (0x0110, _us(message_id)),
                       (0x0800, _us(0x0101)))


def c_store_rq(sop_class: str, sop_instance: str, message_id: int = 1) -> bytes:
    return command_set((0x0002, sop_class.encode()), (0x0100, _us(0x0001)), (0x0110, _us(message_id)),
                       (0x0700, _us(0x0002)), (0x0800, _us(0x0000)), (0x1000, sop_instance.encode()))


def parse_command(data: bytes) -> dict[int, bytes]:
    """Elements of an implicit VR little endian group-0000 command set: element number -> value bytes."""
    out = {}
    pos = 0
    while pos + 8 <= len(data):
        group, element, length = struct.unpack_from("<HHI", data, pos)
        out[element] = data[pos + 8:pos + 8 + length]
        pos += 8 + length
    return out


# ---------------------------------------------------------------------- a raw client
class Closed(Exception):
    """The peer closed the connection."""


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = _read_exact(sock, 6)
    pdu_type, _, length = struct.unpack(">BBL", header)
    return pdu_type, _read_exact(sock, length)


def _read_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 16))
        if not chunk:
            raise Closed(f"closed after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


class Client:
    """One raw connection to a DICOM port, with a time limit on every read."""

    def __init__(self, host: str, port: int, timeout: float = 10.0, source: str | None = None) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=(source, 0) if source else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.accepted: dict[int, tuple[int, str]] = {}

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read(self) -> tuple[int, bytes]:
        return read_pdu(self.sock)

    def associate(self, called: str = "LIVERNODE", calling: str = "FUZZ",
                  contexts: list[tuple[str, list[str]]] | None = None) -> int:
        """Send an A-ASSOCIATE-RQ; returns the answer's PDU type (A_ASSOCIATE_AC on success)."""
        self.send(associate_rq(called, calling, contexts))
        pdu_type, body = self.read()
        if pdu_type == A_ASSOCIATE_AC:
            self.accepted = parse_associate_ac(body)
        return pdu_type

    def context(self, transfer_syntax: str | None = None) -> int:
        """An accepted presentation context ID (with that transfer syntax, if given)."""
        for cid, (result, ts) in sorted(self.accepted.items()):
            if result == 0 and (transfer_syntax is None or ts == transfer_syntax):
                return cid
        raise AssertionError(f"no accepted context for {transfer_syntax}: {self.accepted}")

    def echo(self, context_id: int = 1) -> int:
        self.send(p_data(pdv(context_id, 0x03, c_echo_rq())))
        return self.status()

    def store(self, context_id: int, sop_class: str, sop_instance: str, dataset: bytes,
              fragment: int = 16000) -> int:
        self.send(p_data(pdv(context_id, 0x03, c_store_rq(sop_class, sop_instance))))
        for start in range(0, max(len(dataset), 1), fragment):
            last = start + fragment >= len(dataset)
            self.send(p_data(pdv(context_id, 0x02 if last else 0x00, dataset[start:start + fragment])))
        return self.status()

    def status(self) -> int:
        """The Status of the next DIMSE response (one command PDV per PDU, as the node sends)."""
        command = b""
        while True:
            pdu_type, body = self.read()
            if pdu_type != P_DATA_TF:
                raise Closed(f"PDU type 0x{pdu_type:02X} instead of a response")
            pos = 0
            while pos < len(body):
                length = struct.unpack_from(">L", body, pos)[0]
                control = body[pos + 5]
                command += body[pos + 6:pos + 4 + length]
                pos += 4 + length
                if control & 0x03 == 0x03:
                    return struct.unpack("<H", parse_command(command)[0x0900][:2])[0]

    def release(self) -> None:
        self.send(release_rq())
        try:
            self.read()
        except (Closed, OSError):
            pass
        self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- hostile cases
Case = Callable[[str, int], None]


def _drain(sock: socket.socket, seconds: float) -> None:
    """Read whatever the node answers (an A-ABORT, a close) for up to `seconds`."""
    sock.settimeout(seconds)
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end and sock.recv(65536):
            pass
    except OSError:
        pass


def _raw(payload: bytes, then: str = "close", linger: float = 0.5, chunk: int | None = None,
         pause: float = 0.0) -> Case:
    """Connect, send `payload` (in chunks with pauses: a slow sender), then close, half-close or stall."""
    def case(host: str, port: int) -> None:
        try:
            with socket.create_connection((host, port), timeout=5) as s:
                if chunk:
                    for i in range(0, len(payload), chunk):
                        s.sendall(payload[i:i + chunk])
                        time.sleep(pause)
                else:
                    s.sendall(payload)
                if then == "half-close":
                    s.shutdown(socket.SHUT_WR)
                    _drain(s, linger)
                elif then == "stall":
                    _drain(s, linger)
        except OSError:
            pass  # the node aborted and closed first: fine
    return case


def _sends(payload: bytes) -> Callable[[Client], None]:
    return lambda c: c.send(payload)


def _associated(actions: Callable[[Client], None]) -> Case:
    """A valid association with the node, then `actions` (hostile), then a close."""
    def case(host: str, port: int) -> None:
        try:
            with Client(host, port, timeout=5) as c:
                if c.associate() != A_ASSOCIATE_AC:
                    return
                actions(c)
                _drain(c.sock, 0.3)
        except (OSError, Closed):
            pass
    return case


def hostile_cases(seed: int = 17, n_random: int = 60) -> list[tuple[str, Case]]:
    """About 330 named hostile connections; the same list for the same seed."""
    rnd = random.Random(seed)
    rq = associate_rq()
    cases: list[tuple[str, Case]] = []
    # random bytes, text protocols, TLS hellos on a plain port
    for i in range(n_random):
        cases.append((f"random-{i}", _raw(rnd.randbytes(rnd.choice([1, 5, 6, 7, 64, 4096, 70000])))))
    cases.append(("http", _raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", then="half-close")))
    cases.append(("tls-hello", _raw(bytes.fromhex("16030100a5010000a10303") + rnd.randbytes(160))))
    # truncated A-ASSOCIATE-RQs, closed at every kind of boundary
    for cut in sorted(rnd.sample(range(1, len(rq)), 40)):
        cases.append((f"rq-cut-{cut}", _raw(rq[:cut])))
    # mutated A-ASSOCIATE-RQs: flipped bytes, wrong item lengths, wrong PDU lengths
    for i in range(80):
        data = bytearray(rq)
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(6, len(data))] = rnd.randrange(256)
        cases.append((f"rq-mutated-{i}", _raw(bytes(data), then="half-close", linger=0.3)))
    for delta in (-40, -10, -1, 1, 10, 1000):
        cases.append((f"rq-length{delta:+d}", _raw(pdu(A_ASSOCIATE_RQ, rq[6:], len(rq) - 6 + delta))))
    cases.append(("rq-empty", _raw(pdu(A_ASSOCIATE_RQ, b""))))
    cases.append(("rq-twice", _raw(rq + rq, then="half-close")))
    cases.append(("rq-bad-version", _raw(pdu(A_ASSOCIATE_RQ, b"\x00\x07" + rq[8:]), then="half-close")))
    # oversized length fields, before and after association (up to 4 GiB - 1)
    for length in (0xFFFFFFFF, 0x80000000, 0x40000000, 0x10000000, 64 << 20, 5 << 20):
        for pdu_type in (A_ASSOCIATE_RQ, P_DATA_TF, A_RELEASE_RQ, A_ABORT, 0x09):
            cases.append((f"len-{pdu_type}-{length}", _raw(struct.pack(">BBL", pdu_type, 0, length) + b"\0" * 100)))
        cases.append((f"assoc-then-pdata-{length}", _associated(
            _sends(struct.pack(">BBL", P_DATA_TF, 0, length) + b"\0" * 1000))))
    # things that are not allowed before association
    for name, payload in (("pdata-first", p_data(pdv(1, 3, c_echo_rq()))), ("release-first", release_rq()),
                          ("abort-first", abort()), ("rp-first", release_rp())):
        cases.append((name, _raw(payload, then="half-close")))
    # malformed P-DATA-TF and DIMSE after a valid association
    echo = c_echo_rq()
    store = c_store_rq(CT_IMAGE, "1.2.3.4.5")
    malformed = {
        "pdv-empty": p_data(struct.pack(">LB", 1, 1)),
        "pdv-zero": p_data(struct.pack(">LB", 0, 1)),
        "pdv-long": p_data(struct.pack(">LB", 5000, 1) + b"\x03" + echo),
        "pdv-unaccepted-context": p_data(pdv(99, 3, echo)),
        "data-before-command": p_data(pdv(1, 2, b"\x08\x00\x16\x00")),
        "command-garbage": p_data(pdv(1, 3, rnd.randbytes(200))),
        "command-no-field": p_data(pdv(1, 3, command_set((0x0110, _us(1)), (0x0800, _us(0x0101))))),
        "command-field-vm2": p_data(pdv(1, 3, command_set((0x0100, _us(0x0030) + _us(0x0030)),
                                                          (0x0110, _us(1)), (0x0800, _us(0x0101))))),
        "command-unknown-field": p_data(pdv(1, 3, command_set((0x0100, _us(0x7777)), (0x0800, _us(0x0101))))),
        "command-find": p_data(pdv(1, 3, command_set((0x0002, VERIFICATION.encode()), (0x0100, _us(0x0020)),
                                                     (0x0110, _us(1)), (0x0800, _us(0x0101))))),
        "command-truncated": p_data(pdv(1, 3, echo[:-5])),
        "command-bad-length": p_data(pdv(1, 3, echo[:8] + struct.pack("<L", 0xFFFFFF) + echo[12:])),
        "store-no-instance": p_data(pdv(3, 3, command_set((0x0002, CT_IMAGE.encode()), (0x0100, _us(1)),
                                                          (0x0110, _us(1)), (0x0800, _us(0))))),
        "store-uid-vm2": p_data(pdv(3, 3, command_set((0x0002, CT_IMAGE.encode()), (0x0100, _us(1)),
                                                      (0x0110, _us(1)), (0x0800, _us(0)),
                                                      (0x1000, b"1.2.3\\4.5.6")))),
        "store-two-contexts": p_data(pdv(3, 1, store[:20])) + p_data(pdv(1, 3, store[20:])),
        "store-huge-command": p_data(pdv(3, 1, b"\0" * 70000)),
        "response-as-request": p_data(pdv(1, 3, command_set((0x0100, _us(0x8030)), (0x0120, _us(1)),
                                                            (0x0800, _us(0x0101)), (0x0900, _us(0))))),
        "second-rq": rq,
        "unknown-pdu": pdu(0x0A, b"\0" * 10),
    }
    for name, payload in malformed.items():
        cases.append((f"dimse-{name}", _associated(_sends(payload))))
    for i in range(30):  # random command sets and random P-DATA bodies after association
        control, value = rnd.choice([0, 1, 2, 3]), rnd.randbytes(rnd.randint(1, 300))
        cases.append((f"dimse-random-{i}", _associated(_sends(p_data(pdv(1, control, value))))))
        cases.append((f"pdata-random-{i}", _associated(_sends(pdu(P_DATA_TF, rnd.randbytes(rnd.randint(1, 300)))))))
    # a C-STORE cut off: close, abort or release in the middle of the data set (spool files must go)
    dataset = b"\x08\x00\x16\x00" + rnd.randbytes(60000)
    for end in ("close", "abort", "release"):
        def cut_store(c: Client, end: str = end) -> None:
            c.send(p_data(pdv(3, 3, c_store_rq(CT_IMAGE, "1.2.3.4.5"))))
            c.send(p_data(pdv(3, 0, dataset[:30000])))
            if end == "abort":
                c.send(abort())
            elif end == "release":
                c.send(release_rq())
        cases.append((f"store-cut-{end}", _associated(cut_store)))
        cases.append((f"store-cut-mid-pdu-{end}", _associated(
            lambda c: c.send(p_data(pdv(3, 3, c_store_rq(CT_IMAGE, "1.2.3.4.6")))
                             + p_data(pdv(3, 0, dataset))[:20000]))))
    # slow senders (bounded: a byte every 20-50 ms for a few dozen bytes)
    for i in range(6):
        cases.append((f"slow-rq-{i}", _raw(rq[:rnd.randint(10, 40)], chunk=1, pause=0.03, then="stall",
                                           linger=0.2)))
    cases.append(("slow-full-rq", _raw(rq, chunk=37, pause=0.02, then="half-close")))
    return cases


# ---------------------------------------------------------------------- a recording proxy
@dataclass(frozen=True)
class Stored:
    """One C-STORE-RQ as it went over the wire."""

    sop_class: str
    sop_instance: str
    dataset: bytes  # the data set fragments of the message, concatenated: exactly what was sent
    transfer_syntax: str  # of the presentation context it was sent on (from the A-ASSOCIATE-AC)


@dataclass
class Recording:
    """What went over one proxied connection: C-STORE data sets as sent, responses as answered."""

    stores: list[Stored] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)  # Error Comment (0000,0902) of each response ("" if none)
    transfer_syntaxes: dict[int, str] = field(default_factory=dict)  # accepted context ID -> TS


class _Dimse:
    """Reassembles DIMSE messages from one direction's P-DATA-TF PDUs."""

    def __init__(self) -> None:
        self.command = b""
        self.data = bytearray()
        self.context = 0

    def feed(self, body: bytes) -> Iterator[tuple[dict[int, bytes], bytes | None, int]]:
        pos = 0
        while pos + 6 <= len(body):
            length, cid = struct.unpack_from(">LB", body, pos)
            control = body[pos + 5]
            value = body[pos + 6:pos + 4 + length]
            pos += 4 + length
            self.context = cid
            if control & 0x01:
                self.command += value
                if control & 0x02:
                    command = parse_command(self.command)
                    if struct.unpack("<H", command.get(0x0800, b"\x01\x01")[:2])[0] == 0x0101:
                        yield command, None, cid
                        self.command = b""
            else:
                self.data += value
                if control & 0x02:
                    yield parse_command(self.command), bytes(self.data), cid
                    self.command, self.data = b"", bytearray()


class RecordingProxy:
    """TCP proxy from a sender to the node that records C-STORE data sets exactly as sent. Each new connection goes
    to `target` as it is then (a test may point it at another node between connections)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.recordings: list[Recording] = []
        self._lock = threading.Lock()
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                continue
            rec = Recording()
            with self._lock:
                self.recordings.append(rec)
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, rec, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, rec, False), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, rec: Recording, upstream: bool) -> None:
        buf = bytearray()
        dimse = _Dimse()
        try:
            while True:
                chunk = src.recv(1 << 16)
                if not chunk:
                    break
                buf += chunk
                self._record(buf, dimse, rec, upstream)  # before forwarding: the peer reacts only afterwards
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    @staticmethod
    def _record(buf: bytearray, dimse: _Dimse, rec: Recording, upstream: bool) -> None:
        while len(buf) >= 6:
            pdu_type, _, length = struct.unpack_from(">BBL", buf)
            if len(buf) < 6 + length:
                return
            body = bytes(buf[6:6 + length])
            del buf[:6 + length]
            if pdu_type == A_ASSOCIATE_AC and not upstream:
                rec.transfer_syntaxes = {k: ts for k, (r, ts) in parse_associate_ac(body).items() if r == 0}
            if pdu_type != P_DATA_TF:
                continue
            for command, data, cid in dimse.feed(body):
                field_ = struct.unpack("<H", command.get(0x0100, b"\0\0")[:2])[0]
                if upstream and field_ == 0x0001 and data is not None:
                    rec.stores.append(Stored(command[0x0002].decode().rstrip("\0 "),
                                             command[0x1000].decode().rstrip("\0 "), data,
                                             rec.transfer_syntaxes.get(cid, "")))
                elif not upstream and field_ == 0x8001:
                    rec.statuses.append(struct.unpack("<H", command[0x0900][:2])[0])
                    rec.comments.append(command.get(0x0902, b"").decode("ascii", "replace").rstrip("\0 "))

    def stores(self) -> list[Stored]:
        with self._lock:
            return [s for r in self.recordings for s in r.stores]

    def statuses(self) -> list[int]:
        with self._lock:
            return [s for r in self.recordings for s in r.statuses]

    def comments(self) -> list[str]:
        """The Error Comment of each response, in the order of statuses()."""
        with self._lock:
            return [c for r in self.recordings for c in r.comments]

    def close(self) -> None:
        self._stop = True
        self._thread.join(2)
        self.listener.close()

    def __enter__(self) -> RecordingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------- a file's own parts
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def part10_meta(raw: bytes) -> tuple[dict[int, bytes], int]:
    """File meta elements of a Part 10 file's bytes (element number -> value, explicit VR LE, read by its group
    length) and where the data set starts. ({}, 0) for a file without preamble + DICM."""
    if raw[128:134] != b"DICM\x02\x00":  # (one corpus file has "DICM" at 128 by chance, inside its data set)
        return {}, 0
    end = 144 + struct.unpack_from("<I", raw, 140)[0]
    out, pos = {}, 132
    while pos < end:
        _, element = struct.unpack_from("<HH", raw, pos)
        vr = raw[pos + 4:pos + 6]
        if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ"):
            length, start = struct.unpack_from("<I", raw, pos + 8)[0], pos + 12
        else:
            length, start = struct.unpack_from("<H", raw, pos + 6)[0], pos + 8
        out[element] = raw[start:start + length]
        pos = start + length
    return out, end


def uid_text(value: bytes) -> str:
    return value.decode("ascii").rstrip("\0 ")


def file_facts(path: Path) -> tuple[str, str, str, bytes]:
    """(SOP class, SOP instance, transfer syntax, data set bytes) of a file, from its own bytes: what a sender
    that sends the file as it is puts in its C-STORE (implicit VR without file meta; Secondary Capture and a new
    UID when the file names no SOP class or instance)."""
    import pydicom
    from pydicom.uid import generate_uid

    raw = path.read_bytes()
    meta, start = part10_meta(raw)
    ts = uid_text(meta[0x0010]) if 0x0010 in meta else IMPLICIT_LE
    ds: pydicom.Dataset
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except (RecursionError, Exception):  # noqa: BLE001 - e.g. a data set nested too deep: use its file meta
        ds = pydicom.Dataset()
    sop_class = str(ds.get("SOPClassUID", "") or uid_text(meta.get(0x0002, b"")) or SECONDARY_CAPTURE)
    sop_instance = str(ds.get("SOPInstanceUID", "") or "")
    if not sop_instance:
        sop_instance = uid_text(meta[0x0003]) if 0x0003 in meta else generate_uid()
    return sop_class, sop_instance, ts, raw[start:]


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak resident set) of a process, in KiB, from /proc: how a fuzzed node's memory is read."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out
