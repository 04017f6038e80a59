"""node.admission: which connection gives way when the port is full (pure bookkeeping, no network)."""
from __future__ import annotations

from node.admission import Admission, Connection, Limits


def _admission(max_associations: int = 3, idle: float = 10.0) -> Admission:
    return Admission(Limits(max_associations=max_associations, max_negotiating=32, max_negotiating_per_address=8,
                            negotiation_timeout=5.0, idle_association=idle), clock=lambda: 0.0)


def _associate(adm: Admission, address: str) -> Connection:
    conn, _ = adm.connected(object(), address, 1000)
    assert adm.requested(conn)
    return conn


def test_a_full_port_gives_the_most_idle_slot_of_the_busiest_address_to_another_address() -> None:
    adm = _admission()
    a1, a2, a3 = (_associate(adm, "10.0.0.1") for _ in range(3))
    idle = {id(a1): 12.0, id(a2): 30.0, id(a3): None}  # a3 is busy: never taken
    newcomer, _ = adm.connected(object(), "10.0.0.2", 1000)
    granted, victim = adm.request_slot(newcomer, lambda c: idle[id(c)])
    assert granted and victim is a2
    assert adm.counts() == (0, 3)
    # the same address asking again: 10.0.0.1 holds 2, 10.0.0.2 holds 1: not two more, so refused
    second, _ = adm.connected(object(), "10.0.0.2", 1001)
    assert adm.request_slot(second, lambda c: 99.0) == (False, None)


def test_nothing_gives_way_for_the_same_address_short_idleness_or_busy_associations() -> None:
    adm = _admission()
    held = [_associate(adm, "10.0.0.1") for _ in range(3)]
    same, _ = adm.connected(object(), "10.0.0.1", 2000)
    assert adm.request_slot(same, lambda c: 99.0) == (False, None)
    for idle in (9.9, None):
        other, _ = adm.connected(object(), "10.0.0.2", 2001)

        def idle_seconds(_conn: Connection, idle: float | None = idle) -> float | None:
            return idle

        assert adm.request_slot(other, idle_seconds) == (False, None)
    assert all(c.state == "associated" for c in held)


def test_a_free_slot_takes_nothing_from_anyone() -> None:
    adm = _admission()
    _associate(adm, "10.0.0.1")
    newcomer, _ = adm.connected(object(), "10.0.0.2", 1000)
    assert adm.request_slot(newcomer, lambda c: 99.0) == (True, None)
