"""The analysis queue: one worker thread runs ready cases, one at a time, and hands outputs to the outbox.

The queue itself is the index (cases in state 'queued'), so a crash or restart loses no pending analysis:
start() re-queues whatever was queued or interrupted mid-analysis.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable, Protocol

from node.classify import plan_case
from node.config import Config
from node.index import Index
from node.results import AnalysisError, AnalysisResult, OutputObject
from node.workflows import WORKFLOWS, CaseInputs, build_case_report

logger = logging.getLogger(__name__)

POLL_SECONDS = 5.0


class OutputSink(Protocol):
    def produce(self, case_id: str, obj: OutputObject) -> list[int]: ...


class AnalysisRunner:
    def __init__(self, config: Config, index: Index, sink: OutputSink | None,
                 workflows: dict[str, Callable[[CaseInputs, Config], AnalysisResult]] | None = None,
                 report: Callable[[CaseInputs], list[OutputObject]] | None = build_case_report) -> None:
        self.config = config
        self.index = index
        self.sink = sink
        self.workflows = WORKFLOWS if workflows is None else workflows
        self.report = report
        self._queue: "queue.Queue[str | None]" = queue.Queue()
        self._thread: threading.Thread | None = None
        self.last_error = ""

    def submit(self, case_id: str) -> None:
        self._queue.put(case_id)

    def start(self) -> None:
        for case_id in self.index.requeue_interrupted():
            logger.info("case %s re-queued for analysis after restart", case_id)
            self._queue.put(case_id)
        self._thread = threading.Thread(target=self._loop, name="analysis", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None

    def depth(self) -> int:
        return self._queue.qsize()

    def _loop(self) -> None:
        while True:
            try:
                case_id = self._queue.get(timeout=POLL_SECONDS)
            except queue.Empty:
                # `reprocess` from another process queues in the index only: pick such cases up here.
                for cid in self.index.queued_cases():
                    self._queue.put(cid)
                continue
            if case_id is None:
                return
            try:
                self.run_case(case_id)
            except Exception as exc:  # the worker must survive anything one case does
                logger.exception("analysis of case %s crashed", case_id)
                self.last_error = f"{case_id}: {exc}"
                self.index.finish_analysis(case_id, ok=False, reason=f"internal error: {exc}")

    def run_case(self, case_id: str) -> str | None:
        """Run every runnable workflow of a queued case. Returns the final state (None if it was not queued)."""
        if self.index.start_analysis(case_id) is None:
            return None
        series = self.index.series_of_case(case_id)
        plan = plan_case(series, self.config.analysis.liver_roi_names)
        inputs = CaseInputs(case_id=case_id, series=series, roles=plan.roles, index=self.index)
        logger.info("analysing case %s: workflows %s; series: %s", case_id, ", ".join(plan.runnable) or "none",
                    ", ".join(f"{s.modality} {s.series_description!r} ({plan.roles[s.series_uid]}, "
                              f"{s.n_instances} inst.)" for s in series))
        measurements: dict[str, Any] = {"workflows": list(plan.runnable), "waiting": plan.waiting}
        errors: list[str] = []
        produced = 0
        for wf in plan.runnable:
            fn = self.workflows.get(wf)
            if fn is None:
                errors.append(f"{wf}: no analysis available in this version")
                continue
            t0 = time.perf_counter()
            try:
                result = fn(inputs, self.config)
            except AnalysisError as exc:
                logger.error("case %s: %s analysis refused: %s", case_id, wf, exc)
                errors.append(f"{wf}: {exc}")
                continue
            except Exception as exc:
                logger.exception("case %s: %s analysis failed", case_id, wf)
                errors.append(f"{wf}: internal error ({type(exc).__name__}: {exc})")
                self.last_error = f"{case_id}/{wf}: {exc}"
                continue
            measurements[wf] = result.measurements
            measurements[wf + "_seconds"] = round(time.perf_counter() - t0, 2)
            inputs.results[wf] = result
            if self.sink is not None:
                for obj in result.outputs:
                    self.sink.produce(case_id, obj)
                    produced += 1
        if inputs.results and self.report is not None:
            try:
                for obj in self.report(inputs):
                    if self.sink is not None:
                        self.sink.produce(case_id, obj)
                        produced += 1
            except Exception as exc:  # the analyses' own outputs are already queued; say what is missing
                logger.exception("case %s: report failed", case_id)
                errors.append(f"report: {type(exc).__name__}: {exc}")
        measurements["outputs"] = produced
        ok = not errors
        state = self.index.finish_analysis(case_id, ok=ok, reason="; ".join(errors), result=measurements)
        logger.info("case %s analysed: %s (%d outputs)%s", case_id, state, produced,
                    f"; {'; '.join(errors)}" if errors else "")
        return state
