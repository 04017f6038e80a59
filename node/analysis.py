"""The analysis queue: one worker thread runs ready cases, one at a time, and hands outputs to the outbox.

The queue itself is the index (cases in state 'queued'), so a crash or restart loses no pending analysis:
start() re-queues whatever was queued or interrupted mid-analysis.

A case runs every runnable workflow of the registry, dependencies first (node.registry): each selects its
series, reads them through a :class:`CaseReader` (pixel data included) and runs; when it returns, the pixel
data it read is released and only the headers stay, for the case report built at the end. Its typed
measurements go into the case record (node.record), its outputs to the outbox.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from pydicom import Dataset
from pydicom.tag import Tag

from node.classify import plan_case
from node.config import Config
from node.errors import AnalysisError, itk_reason
from node.header import read_stored
from node.index import Index, SeriesRow
from node.record import CaseRecord, WorkflowRecord, dumps, encode
from node.registry import Registry
from node.report.build import build_report
from node.workflow import CaseSeries, OutputObject, RunContext, Workflow, WorkflowResult

logger = logging.getLogger(__name__)

__all__ = ["AnalysisRunner", "CaseReader", "OutputSink", "ReportBuilder"]

POLL_SECONDS = 5.0
_PIXEL_TAGS = (Tag(0x7FE0, 0x0010), Tag(0x7FE0, 0x0008), Tag(0x7FE0, 0x0009))  # Pixel, Float, Double Float Data

ReportBuilder = Callable[[str, Mapping[str, WorkflowResult[Any]], Mapping[str, Sequence[Dataset]], Registry],
                         list[OutputObject]]


class OutputSink(Protocol):
    def produce(self, case_id: str, obj: OutputObject) -> list[int]: ...


class CaseReader:
    """Reads a case's series for one workflow and, when it ends, keeps only their headers (pixel data released).

    Only the case's own instances of a series are read (a series whose instances carry two patient identities is
    two series of two cases). A series an operator reassigned to this case is read with the case's patient
    identity, so no output carries another patient's."""

    def __init__(self, index: Index, case: CaseSeries) -> None:
        self.index = index
        self.case = case
        self._read: list[tuple[str, list[Dataset]]] = []
        self._identity = index.get_case(case.case_id)

    def read(self, series: SeriesRow) -> list[Dataset]:
        """All instances of a series, pixel data included (remembered, under the series' role, for the report)."""
        out: list[Dataset] = []
        for p in self.index.instance_paths(series.series_uid, series.case_id or None):
            try:
                out.append(read_stored(p))  # the node's reader: the meta it wrote decides the transfer syntax
            except Exception as exc:
                raise AnalysisError(f"cannot read stored instance {p.name} of series "
                                    f"{series.series_description!r}: {exc}") from exc
        if not out:
            raise AnalysisError(f"series {series.series_description!r} has no readable instances")
        self._as_case_patient(series, out)
        self._read.append((self.case.roles.get(series.series_uid, "other"), out))
        return out

    def _as_case_patient(self, series: SeriesRow, datasets: list[Dataset]) -> None:
        case = self._identity
        if case is None or not case.patient_id or (series.patient_id, series.issuer_of_patient_id) == (
                case.patient_id, case.issuer_of_patient_id):
            return
        for ds in datasets:  # reassigned by the operator: the case's patient, not the one in the file
            ds.PatientID = case.patient_id
            ds.PatientName = case.patient_name
            if case.issuer_of_patient_id:
                ds.IssuerOfPatientID = case.issuer_of_patient_id
            elif "IssuerOfPatientID" in ds:
                del ds.IssuerOfPatientID
            for kw in ("PatientBirthDate", "PatientSex"):
                if kw in ds:
                    setattr(ds, kw, "")

    def release(self) -> dict[str, list[Dataset]]:
        """Drop the pixel data of everything read; returns role -> headers (the last series read of a role)."""
        headers: dict[str, list[Dataset]] = {}
        for role, datasets in self._read:
            for ds in datasets:
                for tag in _PIXEL_TAGS:
                    if tag in ds:
                        del ds[tag]
            headers[role] = datasets
        self._read.clear()
        return headers


class AnalysisRunner:
    def __init__(self, config: Config, index: Index, sink: OutputSink | None, registry: Registry | None = None,
                 report: ReportBuilder | None = build_report) -> None:
        self.config = config
        self.index = index
        self.sink = sink
        self.registry = config.workflows if registry is None else registry
        self.report = report
        #: called with a case id after each analysis (the node: Completion.evaluate_case, for what arrived meanwhile)
        self.on_finished: Callable[[str], Any] | None = None
        self._queue: queue.Queue[str | None] = queue.Queue()
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
            if self.on_finished is not None:
                try:
                    self.on_finished(case_id)
                except Exception:
                    logger.exception("evaluating case %s after its analysis failed", case_id)

    def _deliver(self, case_id: str, objects: Sequence[OutputObject]) -> int:
        if self.sink is not None:
            for obj in objects:
                self.sink.produce(case_id, obj)
        return len(objects) if self.sink is not None else 0

    def run_case(self, case_id: str) -> str | None:
        """Run every runnable workflow of a queued case. Returns the final state (None if it was not queued)."""
        if self.index.start_analysis(case_id) is None:
            return None
        series = self.index.series_of_case(case_id)
        analysis = self.config.analysis
        plan = plan_case(series, analysis.liver_roi_names, self.registry, self.config.classify.tracers)
        case = CaseSeries(case_id, tuple(series), plan.roles)
        logger.info("analysing case %s: workflows %s; series: %s", case_id, ", ".join(plan.runnable) or "none",
                    ", ".join(f"{s.modality} {s.series_description!r} ({plan.roles[s.series_uid]}, "
                              f"{s.n_instances} inst.)" for s in series))
        record = CaseRecord(workflows=list(plan.runnable), waiting={k: list(v) for k, v in plan.waiting.items()})
        results: dict[str, WorkflowResult[Any]] = {}
        sources: dict[str, list[Dataset]] = {}
        for wf in self.registry:
            if wf.name in plan.runnable:
                self._run_workflow(wf, case, record, results, sources)
        if results and self.report is not None:
            try:
                record.outputs += self._deliver(case_id, self.report(case_id, results, sources, self.registry))
            except Exception as exc:  # the analyses' own outputs are already queued; say what is missing
                logger.exception("case %s: report failed", case_id)
                record.errors["report"] = f"{type(exc).__name__}: {exc}"
        ok = not record.errors
        reason = "; ".join(f"{name}: {text}" for name, text in record.errors.items())
        state = self.index.finish_analysis(case_id, ok=ok, reason=reason, result=record.to_json(),
                                           inputs=self._inputs(case, record))
        logger.info("case %s analysed: %s (%d outputs)%s", case_id, state, record.outputs,
                    f"; {reason}" if reason else "")
        return state

    def _inputs(self, case: CaseSeries, record: CaseRecord) -> list[str]:
        """The series this analysis used: each workflow's selection; for one that recorded none, every series of
        the roles it needs or uses (a late instance of any of them re-runs the case)."""
        used: list[str] = []
        for wf in self.registry:
            if wf.name not in record.workflows:
                continue
            chosen = [i["series_uid"] for i in record.inputs.get(wf.name, [])]
            if not chosen:
                roles = {*wf.needs, *wf.uses}
                chosen = [s.series_uid for s in case.series if case.roles.get(s.series_uid) in roles]
            used += chosen
        return list(dict.fromkeys(used))

    def _run_workflow(self, wf: Workflow[Any, Any], case: CaseSeries, record: CaseRecord,
                      results: dict[str, WorkflowResult[Any]], sources: dict[str, list[Dataset]]) -> None:
        """Select, read, run one workflow; record its result or why it failed; release what it read."""
        settings = self.config.analysis.settings_for(wf)
        reader = CaseReader(self.index, case)
        t0 = time.perf_counter()
        try:
            selection = wf.select_inputs(case, settings)
            record.inputs[wf.name] = selection.describe()
            ctx = RunContext(case, selection, reader, self.config.analysis.common,
                             {d: results[d] for d in wf.depends_on if d in results})
            result = wf.run(ctx, settings)
            self._check(wf, result)
            measurements = encode(result.measurements)
            dumps(measurements)  # the case record must take it: fail this workflow now, not the whole record later
        except AnalysisError as exc:
            logger.error("case %s: %s analysis refused: %s", case.case_id, wf.name, exc)
            record.errors[wf.name] = str(exc)
            return
        except Exception as exc:
            logger.exception("case %s: %s analysis failed", case.case_id, wf.name)
            record.errors[wf.name] = f"internal error ({type(exc).__name__}: {itk_reason(exc)})"
            self.last_error = f"{case.case_id}/{wf.name}: {exc}"
            return
        finally:
            for role, headers in reader.release().items():
                sources[role] = headers
        results[wf.name] = result
        record.results[wf.name] = WorkflowRecord(measurements, list(result.warnings),
                                                 round(time.perf_counter() - t0, 2),
                                                 self._deliver(case.case_id, result.outputs))

    def _check(self, wf: Workflow[Any, Any], result: WorkflowResult[Any]) -> None:
        """The result is the typed result the workflow declares, with outputs routed by known kinds."""
        if not isinstance(result, WorkflowResult) or result.workflow != wf.name:
            raise TypeError(f"{wf.name} returned {type(result).__name__} "
                            f"{getattr(result, 'workflow', '?')!r}, not its WorkflowResult")
        if not isinstance(result.measurements, wf.measurements_type):
            raise TypeError(f"{wf.name} measurements are a {type(result.measurements).__name__}, "
                            f"not {wf.measurements_type.__name__}")
        unknown = sorted({o.kind for o in result.outputs} - set(self.registry.output_kinds))
        if unknown:
            raise TypeError(f"{wf.name} produced outputs of undeclared kind(s) {unknown} (declare them in "
                            "output_kinds)")
