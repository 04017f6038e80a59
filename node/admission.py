"""Who may hold a connection to the DICOM port, before and after association negotiation.

A connection that has not yet sent its A-ASSOCIATE-RQ ("negotiating") costs a thread and a socket and proves
nothing about its peer: a vulnerability scanner, a half-open probe or a confused client. Such connections get
their own small budget and a short time limit, separate from the budget of real associations
(``node.max_associations``), so a burst of them can never refuse a sender that is ready to talk:

- at most ``receive.max_negotiating`` negotiating connections in all, ``receive.max_negotiating_per_address``
  from one address. A newcomer is never refused for these limits: the *oldest* negotiating connection of the
  address with the most of them is closed instead, so a flood from one host only pushes out its own connections;
- a negotiating connection that has not delivered its A-ASSOCIATE-RQ within
  ``receive.negotiation_timeout_seconds`` (TLS handshake included) is closed;
- once the A-ASSOCIATE-RQ is in, the connection leaves the negotiating budget and asks for one of the
  ``node.max_associations`` association slots; when none is free the association is rejected as
  "local limit exceeded" (PS3.8 7.1.1.9: rejected-transient, presentation related) and logged as such;
- unless another address holds more slots than it would leave the newcomer's address (at least two more) and one
  of its associations has been silent, with nothing in progress, for ``receive.idle_association_seconds``: that
  one is aborted and its slot given to the newcomer. Associations that sit open doing nothing (a misbehaving
  modality, or a peer holding the port on purpose) thus cannot keep another address out for the network timeout.

Pure bookkeeping, no networking: the server (node/netfast.py) reports events and closes what this returns.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Limits", "Connection", "Admission", "OncePerInterval"]

NEGOTIATING, ASSOCIATED, CLOSED = "negotiating", "associated", "closed"


@dataclass(frozen=True)
class Limits:
    max_associations: int
    max_negotiating: int
    max_negotiating_per_address: int
    negotiation_timeout: float  # seconds
    #: an association silent this long (nothing in progress) may give its slot to another address; inf: never
    idle_association: float = float("inf")


@dataclass(eq=False)
class Connection:
    """One accepted TCP connection."""

    address: str
    port: int
    sock: Any
    since: float
    state: str = NEGOTIATING
    association: Any = field(default=None, repr=False)

    @property
    def peer(self) -> str:
        return f"{self.address}:{self.port}"


class Admission:
    """Thread-safe registry of the port's connections and the limits above."""

    def __init__(self, limits: Limits, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self._clock = clock
        self._lock = threading.Lock()
        self._negotiating: dict[int, Connection] = {}  # id(conn) -> conn, in arrival order
        self._associated: dict[int, Connection] = {}

    # ------------------------------------------------------------------ events
    def connected(self, sock: Any, address: str, port: int) -> tuple[Connection, list[Connection]]:
        """A new connection. Returns it and the negotiating connections to close to make room for it."""
        conn = Connection(address, port, sock, self._clock())
        with self._lock:
            evicted: list[Connection] = []
            per_address = Counter(c.address for c in self._negotiating.values())
            while (len(self._negotiating) >= self.limits.max_negotiating
                   or per_address[address] >= self.limits.max_negotiating_per_address):
                busiest = address if per_address[address] >= self.limits.max_negotiating_per_address \
                    else max(per_address, key=lambda a: (per_address[a], a == address))
                victim = next(c for c in self._negotiating.values() if c.address == busiest)
                del self._negotiating[id(victim)]
                victim.state = CLOSED
                per_address[busiest] -= 1
                evicted.append(victim)
            self._negotiating[id(conn)] = conn
        return conn, evicted

    def requested(self, conn: Connection) -> bool:
        """The A-ASSOCIATE-RQ arrived. True (slot taken) if an association slot is free, else False (reject)."""
        with self._lock:
            return self._take_slot(conn)

    def _take_slot(self, conn: Connection) -> bool:
        if conn.state != NEGOTIATING:
            return conn.state == ASSOCIATED
        self._negotiating.pop(id(conn), None)
        if len(self._associated) >= self.limits.max_associations:
            conn.state = CLOSED
            return False
        conn.state = ASSOCIATED
        self._associated[id(conn)] = conn
        return True

    def request_slot(self, conn: Connection, idle_seconds: Callable[[Connection], float | None]
                     ) -> tuple[bool, Connection | None]:
        """As :meth:`requested`, but when every slot is taken, the slot of an idle association of an address that
        holds at least two more than the newcomer's may be taken over. `idle_seconds` says how long an
        association has been silent with nothing in progress (None: busy, or not known). Returns (granted, the
        association to abort, taken out of the registry)."""
        with self._lock:
            victim = None
            if conn.state == NEGOTIATING and len(self._associated) >= self.limits.max_associations:
                victim = self._idle_victim(conn.address, idle_seconds)
                if victim is not None:
                    del self._associated[id(victim)]
                    victim.state = CLOSED
            return self._take_slot(conn), victim

    def _idle_victim(self, address: str, idle_seconds: Callable[[Connection], float | None]) -> Connection | None:
        per_address = Counter(c.address for c in self._associated.values())
        best: tuple[float, Connection] | None = None
        for c in self._associated.values():
            if per_address[c.address] < per_address[address] + 2:
                continue
            idle = idle_seconds(c)
            if idle is None or idle < self.limits.idle_association:
                continue
            if best is None or idle > best[0]:
                best = (idle, c)
        return best[1] if best is not None else None

    def closed(self, conn: Connection) -> None:
        """The connection ended (any way): its budget is free again."""
        with self._lock:
            conn.state = CLOSED
            self._negotiating.pop(id(conn), None)
            self._associated.pop(id(conn), None)

    def overdue(self) -> list[Connection]:
        """Negotiating connections past the time limit, taken out of the registry (the caller closes them)."""
        deadline = self._clock() - self.limits.negotiation_timeout
        with self._lock:
            late = [c for c in self._negotiating.values() if c.since <= deadline]
            for c in late:
                del self._negotiating[id(c)]
                c.state = CLOSED
        return late

    def associated(self) -> list[Connection]:
        with self._lock:
            return list(self._associated.values())

    def find(self, sock: Any) -> Connection | None:
        """The connection of an accepted socket."""
        with self._lock:
            for c in (*self._negotiating.values(), *self._associated.values()):
                if c.sock is sock:
                    return c
        return None

    def sweep(self, is_closed: Callable[[Connection], bool]) -> None:
        """Forget connections whose socket was closed without an event reaching us."""
        with self._lock:
            for registry in (self._negotiating, self._associated):
                for key in [k for k, c in registry.items() if is_closed(c)]:
                    registry.pop(key).state = CLOSED

    # ------------------------------------------------------------------ figures
    def counts(self) -> tuple[int, int]:
        """(negotiating, associated)."""
        with self._lock:
            return len(self._negotiating), len(self._associated)


class OncePerInterval:
    """Logs the first of a kind of message per key and interval, then how many were held back.

    A flood (a port scan, a broken client reconnecting in a loop) must not bury the log: the first line names the
    peer and the reason, later ones within `interval` seconds are counted and reported with the next line.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[Any, float] = {}
        self._held: Counter[Any] = Counter()

    def log(self, level: int, key: Any, msg: str, *args: Any) -> bool:
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self._interval:
                self._held[key] += 1
                return False
            self._last[key] = now
            held = self._held.pop(key, 0)
            if len(self._last) > 4096:  # forget old keys: many addresses must not grow this without bound
                for k in [k for k, t in self._last.items() if now - t >= self._interval]:
                    self._last.pop(k, None)
        if held:
            msg += f" ({held} more like this in the last {self._interval:.0f} s not logged)"
        self._logger.log(level, msg, *args)
        return True
