"""Measured tuning of pynetdicom's receive path (see bench/ingest.py and the README's figures).

pynetdicom is correct but paced for generality: its socket reader pulls PDUs 4 KiB at a time in a Python loop,
its DUL thread polls with 1 ms sleeps, and the association reactor sleeps 1 ms between looks at the DIMSE queue.
A C-STORE SCU waits for each response before sending the next instance, so those pauses add up to whole seconds
per thousand instances. The changes here keep pynetdicom's behaviour and state machine and only shorten the
waits and the syscall count:

- read a PDU with ``recv_into`` into one preallocated buffer (one syscall per socket buffer instead of per 4 KiB);
- poll the DUL every 0.2 ms instead of 1 ms while an association is open (set per association);
- cap the association reactor's idle sleep at 0.2 ms.

Idle cost: a few thousand short wake-ups per second per *open* association, nothing between associations.
"""
from __future__ import annotations

import time as _time
from typing import Any

import pynetdicom.association as _association
from pynetdicom.transport import AssociationSocket

POLL_SECONDS = 0.0002
_installed = False


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


class _ShortSleepTime:
    """The `time` module as seen by pynetdicom.association, with sleeps capped at POLL_SECONDS."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        _time.sleep(min(seconds, POLL_SECONDS))


def install() -> None:
    """Apply the tuning once per process (idempotent)."""
    global _installed
    if _installed:
        return
    AssociationSocket.recv = _recv  # type: ignore[method-assign]
    _association.time = _ShortSleepTime()  # type: ignore[assignment]
    _installed = True


def tune_association(assoc: Any) -> None:
    """Per association (on connection): poll the DUL at POLL_SECONDS."""
    assoc.dul._run_loop_delay = POLL_SECONDS
