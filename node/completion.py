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

from node.classify import CasePlan, plan_case
from node.config import Config
from node.errors import AnalysisError
from node.index import CaseRow, Index, SeriesRow
from node.record import CaseRecord, RecordError
from node.workflow import CaseSeries

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
                cases = self.index.mark_study_stable(study_uid)
                if cases is None:
                    state = self.index.study_due(study_uid)
                    if state is not None and not state[1]:  # more arrived since: wait for the new due time
                        self._arm(study_uid, state[0])
                    return
            logger.info("study %s stable (case%s %s)", study_uid, "s" if len(cases) > 1 else "", ", ".join(cases))
            for case_id in cases:
                self.evaluate_case(case_id)
        except Exception:  # a timer must never die silently: log, and the study is re-armed on next arrival
            logger.exception("completion check of study %s failed", study_uid)

    def evaluate_case(self, case_id: str) -> bool:
        """Queue the case if all its studies are stable and a workflow can run (an analysed case: only when an
        input changed). Returns whether it was queued."""
        with self._case_lock:
            if not self.index.case_studies_stable(case_id):
                return False
            case = self.index.get_case(case_id)
            if case is None or case.state not in ("receiving", "stable", "done", "failed"):
                return False
            series = self.index.series_of_case(case_id)
            plan = plan_case(series, self.config.analysis.liver_roi_names, self.config.workflows,
                             self.config.classify.tracers)
            for text in plan.tracer_disagreements:
                logger.warning("case %s: %s", case_id, text)
            waiting = "; ".join(f"{wf} waits for {', '.join(m)}" for wf, m in plan.waiting.items())
            notes = "; ".join(plan.notes)
            previous = case.state
            allowed = ("receiving", "stable") if previous in ("receiving", "stable") else (previous,)
            change = ""
            if previous in ("done", "failed"):
                if not series:
                    return False  # retired (its series went to another case): nothing to analyse
                change = self._input_change(case, series, plan)
                if not change:
                    logger.info("case %s: nothing that arrived since analysis v%d is an input; not analysed again",
                                case_id, case.version)
                    return False
            if not plan.runnable:
                reason = waiting or "no workflow has its inputs (" + ", ".join(sorted(set(plan.roles.values()))) + ")"
                reason += f"; {notes}" if notes else ""
                if change:
                    reason = f"{change}; {reason}"
                self.index.set_case_state(case_id, "stable", reason, only_from=allowed)
                logger.info("case %s stable, not ready: %s", case_id, reason)
                return False
            reason = "ready: " + ", ".join(plan.runnable) + (f" ({waiting})" if waiting else "")
            reason += f"; {notes}" if notes else ""
            if change:
                reason = f"{change}; {reason}"
            if not self.index.set_case_state(case_id, "queued", reason, only_from=allowed):
                return False
        logger.info("case %s ready for analysis: %s", case_id, reason)
        self.on_ready(case_id)
        return True

    def _input_change(self, case: CaseRow, series: list[SeriesRow], plan: CasePlan) -> str:
        """What changed in the inputs of an analysed case since its last analysis ("" = nothing)."""
        try:
            record = CaseRecord.from_json(case.result) if case.result else None
        except RecordError:
            record = None
        since = case.analysed_input_at or 0.0
        changed = {s.series_uid: s for s in series if s.changed_at > since}
        inputs = self.index.case_inputs(case.case_id)
        touched = [s for uid, s in changed.items() if uid in inputs]
        if touched:
            return (f"input series {', '.join(repr(s.series_description or s.series_uid) for s in touched)} "
                    f"changed since analysis v{case.version}")
        ran = list(record.workflows) if record is not None else []
        new = [w for w in plan.runnable if w not in ran]
        if new:
            return f"{', '.join(new)} can run now (new inputs since analysis v{case.version})"
        gone = [w for w in ran if w not in plan.runnable]
        if gone:
            return f"{', '.join(gone)} can no longer run (its inputs changed since analysis v{case.version})"
        if record is None or not changed:
            return ""
        case_series = CaseSeries(case.case_id, tuple(series), plan.roles)
        for wf in self.config.workflows:
            recorded = {i["series_uid"] for i in record.inputs.get(wf.name, [])}
            if wf.name not in plan.runnable or not recorded:
                continue
            try:
                chosen = {c.series.series_uid for c in
                          wf.select_inputs(case_series, self.config.analysis.settings_for(wf)).chosen}
            except AnalysisError:
                continue
            if chosen != recorded:
                return f"{wf.name} would now use other series than in analysis v{case.version}"
        return ""
