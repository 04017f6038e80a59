"""Completion detection: quiet-period timers per study (apscheduler), readiness per patient case.

A study is *stable* when nothing arrived for ``stable_seconds``. The due time lives in the index
(``studies.stable_due``), so a restart re-arms every pending timer. One timer job per study: an arriving
instance only moves the due time in the index; when the job fires early it re-schedules itself to the new due
time, which keeps scheduler work off the C-STORE hot path. A case (all studies of one PatientID) is queued for
analysis when every study is stable and at least one workflow has all its inputs.
"""
from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable

from apscheduler.schedulers.background import BackgroundScheduler

from node.classify import plan_case
from node.config import Config
from node.index import Index

logger = logging.getLogger(__name__)


class Completion:
    """Arms study timers and queues ready cases through `on_ready(case_id)`."""

    def __init__(self, index: Index, config: Config, on_ready: Callable[[str], None]) -> None:
        self.index = index
        self.config = config
        self.on_ready = on_ready
        self._scheduler = BackgroundScheduler(timezone=dt.UTC,
                                              job_defaults={"misfire_grace_time": None, "coalesce": True})
        self._armed: set[str] = set()
        self._lock = threading.Lock()
        self._case_lock = threading.Lock()

    def start(self) -> None:
        """Start the scheduler and re-arm the timers of every study not yet stable (e.g. after a restart)."""
        self._scheduler.start()
        pending = self.index.pending_studies()
        for study_uid, due in pending:
            with self._lock:
                self._arm(study_uid, due)
        if pending:
            logger.info("re-armed %d pending study timer(s)", len(pending))

    def stop(self) -> None:
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def instance_arrived(self, study_uid: str) -> None:
        """Called after an instance is indexed; cheap when the study's timer is already armed."""
        with self._lock:
            if study_uid not in self._armed:
                self._arm(study_uid, time.time() + self.config.completion.stable_seconds)

    def _arm(self, study_uid: str, due: float) -> None:
        self._armed.add(study_uid)
        run_at = dt.datetime.fromtimestamp(max(due, time.time()), tz=dt.UTC)
        self._scheduler.add_job(self._fire, "date", run_date=run_at, args=[study_uid], id=f"study:{study_uid}",
                                replace_existing=True)

    def _fire(self, study_uid: str) -> None:
        try:
            with self._lock:
                self._armed.discard(study_uid)
                case_id = self.index.mark_study_stable(study_uid)
                if case_id is None:
                    state = self.index.study_due(study_uid)
                    if state is not None and not state[1]:  # more arrived since: wait for the new due time
                        self._arm(study_uid, state[0])
                    return
            logger.info("study %s stable (case %s)", study_uid, case_id)
            self.evaluate_case(case_id)
        except Exception:  # a timer must never die silently: log, and the study is re-armed on next arrival
            logger.exception("completion check of study %s failed", study_uid)

    def evaluate_case(self, case_id: str) -> bool:
        """Queue the case if all its studies are stable and a workflow can run. Returns whether it was queued."""
        with self._case_lock:
            if not self.index.case_studies_stable(case_id):
                return False
            case = self.index.get_case(case_id)
            if case is None or case.state not in ("receiving", "stable"):
                return False
            plan = plan_case(self.index.series_of_case(case_id), self.config.analysis.liver_roi_names,
                             self.config.workflows)
            waiting = "; ".join(f"{wf} waits for {', '.join(m)}" for wf, m in plan.waiting.items())
            if not plan.runnable:
                reason = waiting or "no workflow has its inputs (" + ", ".join(sorted(set(plan.roles.values()))) + ")"
                self.index.set_case_state(case_id, "stable", reason, only_from=("receiving", "stable"))
                logger.info("case %s stable, not ready: %s", case_id, reason)
                return False
            reason = "ready: " + ", ".join(plan.runnable) + (f" ({waiting})" if waiting else "")
            if not self.index.set_case_state(case_id, "queued", reason, only_from=("receiving", "stable")):
                return False
        logger.info("case %s ready for analysis: %s", case_id, reason)
        self.on_ready(case_id)
        return True
