"""Background delivery of the outbox: one thread, one association per destination batch, backoff on failure.

Each pass takes, for every configured destination with due items, up to ``outbox.batch_size`` items and hands
them to the destination in one session. Every item's result is written to the outbox as soon as its transfer
ends (so a crash never re-sends a confirmed item), audited, and failures are scheduled again with exponential
backoff (``outbox.backoff_*``) until ``outbox.max_attempts``, after which the item is parked as ``failed``.
A destination that cannot be reached is left alone until its items are due again.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from node.audit import audit
from node.config import Config
from node.destinations import Destination, DestinationError, Outcome, make_destination
from node.outbox import Outbox, OutboxItem, backoff_delay

__all__ = ["Sender"]

logger = logging.getLogger(__name__)


class Sender:
    """Delivers outbox items in a background thread. ``start()``, ``wake()`` after producing, ``stop()``."""

    #: Longest sleep between passes, so items queued by another process (e.g. ``resend``) are noticed.
    poll_seconds = 2.0
    #: After a wake-up, wait this long so the rest of a burst of outputs joins the same batch (association).
    gather_seconds = 0.5

    def __init__(self, config: Config, outbox: Outbox,
                 destinations: Mapping[str, Destination] | None = None) -> None:
        """`destinations` replaces the configured ones (tests); by default one per ``[destinations.NAME]``."""
        self._config = config
        self._outbox = outbox
        self._dests: dict[str, Destination] = dict(destinations) if destinations is not None else {
            d.name: make_destination(d, config) for d in config.destinations}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._hold: dict[str, float] = {}  # destination -> unix time before which it is not contacted
        self._last_error: dict | None = None
        #: destination -> unix time of its first failure since its last success (alerts, dashboard, metrics)
        self.failing_since: dict[str, float] = {}
        #: optional hook (node/metrics.py): on_delivery(destination, ok) after every attempt
        self.on_delivery: Callable[[str, bool], None] | None = None
        outbox.add_listener(self.wake)  # deliver as soon as something is produced

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Re-queue items interrupted by a crash, then start the delivery thread."""
        if self.running:
            return
        self._outbox.recover_interrupted()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="outbox-sender", daemon=True)
        self._thread.start()
        logger.info("sender started for %s", ", ".join(f"{n} ({d.describe()})" for n, d in self._dests.items())
                    or "no destinations")

    def stop(self, timeout: float = 10) -> None:
        """Stop after the transfer in progress; items not yet attempted go back to pending."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                logger.warning("sender did not stop within %.0f s (a transfer is still running)", timeout)
            else:
                self._thread = None

    def wake(self) -> None:
        """Look for due items now (call after producing)."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def last_error(self) -> dict | None:
        """The latest delivery failure seen by this sender (destination, item, error, time), or None."""
        return self._last_error

    def status(self) -> dict:
        """Sender state for the health endpoint."""
        now = time.time()
        return {
            "running": self.running,
            "destinations": {n: {"target": d.describe(),
                                 "unreachable_until": _iso(self._hold[n]) if self._hold.get(n, 0) > now else None,
                                 "failing_since": _iso(self.failing_since[n]) if n in self.failing_since else None}
                             for n, d in self._dests.items()},
            "last_error": self._last_error,
        }

    # ------------------------------------------------------------------ work
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # never let one bad pass kill delivery for good
                logger.exception("sender pass failed")
                self._last_error = {"error": f"sender pass failed: {exc!r}", "time": _iso(time.time())}
            if self._wake.wait(self._sleep_seconds()) and not self._stop.is_set():
                self._stop.wait(self.gather_seconds)
            self._wake.clear()

    def _sleep_seconds(self) -> float:
        now = time.time()
        due = self._outbox.next_due_by_destination(list(self._dests))
        times = [max(t, self._hold.get(name, 0.0)) for name, t in due.items()]
        if not times:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, min(times) - now))

    def run_once(self) -> int:
        """One pass: one batch per destination with due items. Returns the number of items attempted."""
        attempted = 0
        now = time.time()
        for name in self._outbox.destinations_with_due_items(list(self._dests), now):
            if self._stop.is_set():
                break
            if self._hold.get(name, 0.0) > now:
                continue
            batch = self._outbox.claim(name, self._config.outbox.batch_size)
            if batch:
                attempted += len(batch)
                self._deliver(self._dests[name], batch)
        return attempted

    def _deliver(self, dest: Destination, batch: Sequence[OutboxItem]) -> None:
        waiting = {it.id: it for it in batch}
        results = dest.send(batch)
        try:
            for item, outcome in results:
                waiting.pop(item.id, None)
                self._record(dest, item, outcome)
                if self._stop.is_set():
                    break
        except DestinationError as exc:
            delay = backoff_delay(min(it.attempts for it in waiting.values()) + 1, self._config.outbox) \
                if waiting else self._config.outbox.backoff_initial_seconds
            self._hold[dest.name] = time.time() + delay
            # No association, so no transfer took place: one log line and one queue update for the whole batch.
            states = self._outbox.mark_failed_many(list(waiting), str(exc))
            for _ in states:
                self._attempted(dest.name, False)
            waiting.clear()
            parked = sum(1 for st in states.values() if st == "failed")
            logger.warning("destination %s (%s) unavailable: %s; %d item(s) retry in %.1f s%s", dest.name,
                           dest.describe(), exc, len(states) - parked, delay,
                           f", {parked} parked as failed after their last attempt" if parked else "")
            self._last_error = {"destination": dest.name, "error": str(exc), "time": _iso(time.time())}
        except Exception as exc:  # a bug or library error: count it as a failed attempt, keep the items visible
            logger.exception("delivery to %s failed unexpectedly", dest.name)
            for item in list(waiting.values()):
                waiting.pop(item.id)
                self._record(dest, item, Outcome(False, f"internal error: {exc!r}"))
        finally:
            close = getattr(results, "close", None)
            if close is not None:
                close()  # a generator: releases the association if we stopped early
            if waiting:
                if self._stop.is_set():
                    self._outbox.release(list(waiting))
                else:
                    for item in waiting.values():
                        self._record(dest, item, Outcome(False, "destination reported no result"))
            self._outbox.changed({it.case_id for it in batch})  # manifests follow the delivery states

    def _attempted(self, destination: str, ok: bool) -> None:
        if ok:
            self.failing_since.pop(destination, None)
        else:
            self.failing_since.setdefault(destination, time.time())
        if self.on_delivery is not None:
            self.on_delivery(destination, ok)

    def _record(self, dest: Destination, item: OutboxItem, outcome: Outcome) -> None:
        self._attempted(dest.name, outcome.ok)
        if outcome.ok:
            self._outbox.mark_sent(item.id, outcome.sent_as)
            state = "sent"
        else:
            state = self._outbox.mark_failed(item.id, outcome.detail, outcome.permanent)
            self._last_error = {"destination": dest.name, "case": item.case_id,
                                "sop_instance_uid": item.sop_instance_uid, "error": outcome.detail,
                                "time": _iso(time.time())}
            log = logger.error if state == "failed" else logger.warning
            log("%s %s to %s: %s (attempt %d) -> %s", item.kind, item.sop_instance_uid, dest.name, outcome.detail,
                item.attempts + 1, state)
        audit("transfer", direction="out", destination=dest.name, peer=dest.describe(), case=item.case_id,
              study=item.study_instance_uid, sop_instance_uid=item.sop_instance_uid, kind=item.kind,
              result=state, attempt=item.attempts + 1, detail=outcome.detail, sent_as=outcome.sent_as)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")
