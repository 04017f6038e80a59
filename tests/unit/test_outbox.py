"""Outbox and sender without a network: durability, routing, idempotency, backoff, parking, resume, stop."""
# mypy: disable-error-code="union-attr, index, arg-type"
from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pydicom
import pytest

from node.destinations import DestinationError, Outcome
from node.outbox import Outbox, OutboxItem, backoff_delay
from node.sender import Sender
from node.workflow import OutputObject
from testpeers.orthanc import make_ct_series

from conftest import make_config

FOLDERS = {
    "pacs": {"folder": "results/pacs", "outputs": ["parametric-map", "secondary-capture"]},
    "tps": {"folder": "results/tps", "outputs": ["rtstruct"]},
}


def _config(tmp_path: Path, outbox: dict | None = None, destinations: dict | None = None):
    return make_config(tmp_path / "var", destinations=destinations or FOLDERS,
                       outbox=outbox or {"backoff_initial_seconds": 0.05, "backoff_max_seconds": 0.2})


def _objects(n: int, kind: str = "secondary-capture") -> list[OutputObject]:
    return [OutputObject(kind, ds) for ds in make_ct_series(n_slices=n, rows=8, cols=8)]


class ScriptedDestination:
    """A destination driven by a script of outcomes; records what it was handed in each session."""

    def __init__(self, name: str, script: list[str]) -> None:
        self.name = name
        self.script = list(script)  # per item: "ok", "fail", "park"; "down" as first entry = no session
        self.sessions: list[list[str]] = []

    def describe(self) -> str:
        return f"scripted {self.name}"

    def send(self, items: Sequence[OutboxItem]) -> Iterator[tuple[OutboxItem, Outcome]]:
        if self.script and self.script[0] == "down":
            self.script.pop(0)
            raise DestinationError("connection refused (scripted)")
        self.sessions.append([it.sop_instance_uid for it in items])
        for it in items:
            step = self.script.pop(0) if self.script else "ok"
            yield it, Outcome(step == "ok", f"scripted {step}", permanent=step == "park")


def _rows(cfg) -> list[sqlite3.Row]:
    """Read the queue with a separate connection, as another process would."""
    db = sqlite3.connect(cfg.node.data_dir / "index.sqlite3")
    db.row_factory = sqlite3.Row
    try:
        return db.execute("SELECT * FROM outbox_items ORDER BY id").fetchall()
    finally:
        db.close()


def test_produce_writes_the_file_then_queues_one_item_per_route(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ob = Outbox(cfg)
    sc, rt, report = _objects(1)[0], _objects(1, "rtstruct")[0], _objects(1, "report")[0]
    sc_ids = ob.produce("case 1/a", sc)
    rt_ids = ob.produce("case 1/a", rt)
    assert ob.produce("case 1/a", report) == []  # no destination takes reports here

    rows = _rows(cfg)
    assert [(r["destination"], r["sop_instance_uid"], r["state"]) for r in rows] == [
        ("pacs", sc.dataset.SOPInstanceUID, "pending"), ("tps", rt.dataset.SOPInstanceUID, "pending")]
    assert [r["id"] for r in rows] == sc_ids + rt_ids
    for r, obj in zip(rows, (sc, rt), strict=False):
        stored = pydicom.dcmread(cfg.node.data_dir / r["path"])
        assert stored.SOPInstanceUID == obj.dataset.SOPInstanceUID
        assert stored.PixelData == obj.dataset.PixelData
        assert r["path"].startswith("outbox/case_1_a/")  # case id made filesystem-safe
    assert (cfg.node.data_dir / "outbox" / "case_1_a" / f"{report.dataset.SOPInstanceUID}.dcm").exists()
    assert not list((cfg.node.data_dir / "outbox").rglob("*.part"))  # no temp files left behind
    db = sqlite3.connect(cfg.node.data_dir / "index.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()


def test_produce_is_idempotent_per_sop_instance_and_destination(tmp_path: Path) -> None:
    cfg = _config(tmp_path, destinations={**FOLDERS, "archive": {"folder": "arch", "outputs": ["secondary-capture"]}})
    ob = Outbox(cfg)
    obj = _objects(1)[0]
    first = ob.produce("c1", obj)
    assert len(first) == 2
    assert ob.produce("c1", obj) == first
    assert Outbox(cfg).produce("c1", obj) == first  # also from another connection (a restarted process)
    assert len(_rows(cfg)) == 2


def test_backoff_doubles_from_initial_and_is_capped() -> None:
    from node.config import OutboxConfig

    cfg = OutboxConfig(max_attempts=20, backoff_initial_seconds=5, backoff_max_seconds=600)
    assert [backoff_delay(n, cfg) for n in range(1, 10)] == [5, 10, 20, 40, 80, 160, 320, 600, 600]
    assert backoff_delay(10_000, cfg) == 600


def test_failures_back_off_then_park_as_failed_and_stay_visible(tmp_path: Path) -> None:
    cfg = _config(tmp_path, outbox={"max_attempts": 3, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 0.3})
    ob = Outbox(cfg)
    obj = _objects(1)[0]
    ob.produce("c1", obj)
    dest = ScriptedDestination("pacs", ["fail", "fail", "fail", "ok"])
    sender = Sender(cfg, ob, {"pacs": dest})

    assert sender.run_once() == 1
    r = _rows(cfg)[0]
    assert (r["state"], r["attempts"]) == ("retrying", 1)
    assert r["next_attempt"] - r["updated"] == pytest.approx(0.2, abs=1e-6)
    assert sender.run_once() == 0  # not due yet: nothing is attempted
    time.sleep(0.21)
    assert sender.run_once() == 1
    r = _rows(cfg)[0]
    assert (r["state"], r["attempts"]) == ("retrying", 2)
    assert r["next_attempt"] - r["updated"] == pytest.approx(0.3, abs=1e-6)  # 0.4 capped at 0.3
    time.sleep(0.31)
    assert sender.run_once() == 1
    r = _rows(cfg)[0]
    assert (r["state"], r["attempts"], r["last_error"]) == ("failed", 3, "scripted fail")
    time.sleep(0.31)
    assert sender.run_once() == 0  # parked: never retried on its own
    assert ob.depths() == {"pending": 0, "retrying": 0, "sending": 0, "failed": 1, "sent": 0}
    row = ob.summary()[0]
    assert (row["state"], row["attempts"], row["last_error"], row["next_attempt"]) == (
        "failed", 3, "scripted fail", None)
    assert ob.last_error()["error"] == "scripted fail"

    assert ob.resend(failed_only=True) == 1
    assert sender.run_once() == 1
    assert ob.depths()["sent"] == 1
    assert len(dest.sessions) == 4


def test_permanent_refusal_parks_at_once(tmp_path: Path) -> None:
    cfg = _config(tmp_path, outbox={"max_attempts": 10})
    ob = Outbox(cfg)
    ob.produce("c1", _objects(1)[0])
    Sender(cfg, ob, {"pacs": ScriptedDestination("pacs", ["park"])}).run_once()
    assert (ob.summary()[0]["state"], ob.summary()[0]["attempts"]) == ("failed", 1)


def test_one_session_per_batch_and_confirmed_items_are_never_sent_again(tmp_path: Path) -> None:
    cfg = _config(tmp_path, outbox={"batch_size": 4, "backoff_initial_seconds": 0.01, "backoff_max_seconds": 0.01})
    ob = Outbox(cfg)
    objs = _objects(6)
    for o in objs:
        ob.produce("c1", o)
    uids = [o.dataset.SOPInstanceUID for o in objs]
    # First session: two succeed, then the link breaks for the rest of the batch.
    dest = ScriptedDestination("pacs", ["ok", "ok", "fail", "fail"])
    sender = Sender(cfg, ob, {"pacs": dest})
    sender.run_once()
    assert dest.sessions == [uids[:4]]  # one session carried the whole batch of 4
    time.sleep(0.02)
    while sender.run_once():
        time.sleep(0.02)
    assert ob.depths()["sent"] == 6
    handed = [u for s in dest.sessions for u in s]
    assert handed.count(uids[0]) == handed.count(uids[1]) == 1
    assert sorted(set(handed)) == sorted(uids)


def test_unreachable_destination_counts_attempts_and_is_held_back(tmp_path: Path) -> None:
    cfg = _config(tmp_path, outbox={"backoff_initial_seconds": 0.3, "backoff_max_seconds": 1})
    ob = Outbox(cfg)
    for o in _objects(3):
        ob.produce("c1", o)
    dest = ScriptedDestination("pacs", ["down"])
    sender = Sender(cfg, ob, {"pacs": dest})
    sender.run_once()
    assert {(r["state"], r["attempts"], r["last_error"]) for r in _rows(cfg)} == {
        ("retrying", 1, "connection refused (scripted)")}
    assert sender.status()["destinations"]["pacs"]["unreachable_until"] is not None
    assert sender.run_once() == 0 and dest.sessions == []
    time.sleep(0.31)
    sender.run_once()
    assert ob.depths()["sent"] == 3 and len(dest.sessions) == 1


def test_restart_requeues_items_left_sending(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ob = Outbox(cfg)
    for o in _objects(3):
        ob.produce("c1", o)
    claimed = ob.claim("pacs", 10)  # a sender took them, then the process died
    assert len(claimed) == 3 and ob.depths()["sending"] == 3
    ob.close()

    ob2 = Outbox(cfg)
    sender = Sender(cfg, ob2)  # the configured folder destination
    sender.start()
    try:
        deadline = time.monotonic() + 5
        while ob2.depths()["sent"] < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sender.stop()
    assert ob2.depths() == {"pending": 0, "retrying": 0, "sending": 0, "failed": 0, "sent": 3}
    for it in claimed:
        delivered = cfg.node.data_dir / "results" / "pacs" / it.study_instance_uid / f"{it.sop_instance_uid}.dcm"
        assert delivered.read_bytes() == it.path.read_bytes()


def test_producing_wakes_the_sender_thread(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ob = Outbox(cfg)
    sender = Sender(cfg, ob)
    sender.poll_seconds = 30.0  # only the wake-up can make delivery quick
    sender.start()
    try:
        time.sleep(0.2)  # let the thread go to sleep
        obj = _objects(1)[0]
        t0 = time.monotonic()
        ob.produce("c1", obj)
        while ob.depths()["sent"] < 1 and time.monotonic() - t0 < 5:
            time.sleep(0.01)
        assert time.monotonic() - t0 < 2.0
    finally:
        sender.stop()
    assert ob.depths()["sent"] == 1


def test_stop_finishes_the_current_transfer_and_returns_the_rest_unattempted(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ob = Outbox(cfg)
    for o in _objects(3):
        ob.produce("c1", o)
    reached, gate = threading.Event(), threading.Event()

    class Blocking(ScriptedDestination):
        def send(self, items):
            yield items[0], Outcome(True, "ok")
            reached.set()
            gate.wait(5)
            yield items[1], Outcome(True, "ok")
            yield items[2], Outcome(True, "ok")  # never reached: the sender stops before asking

    sender = Sender(cfg, ob, {"pacs": Blocking("pacs", [])})
    sender.start()
    assert reached.wait(5)
    stopper = threading.Thread(target=sender.stop)
    stopper.start()
    time.sleep(0.1)
    gate.set()
    stopper.join(5)
    assert not sender.running
    states = [(r["state"], r["attempts"]) for r in _rows(cfg)]
    assert states == [("sent", 1), ("sent", 1), ("pending", 0)]


def test_resend_by_case_and_failed_only(tmp_path: Path) -> None:
    cfg = _config(tmp_path)
    ob = Outbox(cfg)
    a, b = _objects(2)
    ob.produce("A", a)
    ob.produce("B", b)
    Sender(cfg, ob, {"pacs": ScriptedDestination("pacs", ["ok", "park"])}).run_once()
    assert {r["case"]: r["state"] for r in ob.summary()} == {"A": "sent", "B": "failed"}
    with pytest.raises(ValueError):
        ob.resend()
    assert ob.resend("A", failed_only=True) == 0
    assert ob.resend(failed_only=True) == 1
    assert ob.resend("A") == 1  # a sent case can be sent again on request
    assert {r["case"]: (r["state"], r["attempts"]) for r in ob.summary()} == {"A": ("pending", 0),
                                                                              "B": ("pending", 0)}
    assert [r["case"] for r in ob.summary("B")] == ["B"]
    assert all(r["next_attempt"] is not None for r in ob.summary())
