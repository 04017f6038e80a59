"""build_report: the case report objects (SR + summary pages), routed as "report"."""
from __future__ import annotations

import logging
from typing import Mapping, Sequence

import highdicom as hd
from pydicom import Dataset

from node.derived import NOT_FOR_DIAGNOSIS
from node.report.capture import secondary_capture
from node.report.items import collect_groups, referenced, workflow_of
from node.report.sr import build_sr
from node.report.summary import render_pages, summary_lines
from node.results import AnalysisError, AnalysisResult, OutputObject

logger = logging.getLogger(__name__)

__all__ = ["ReportError", "build_report", "SUMMARY_SERIES_NUMBER"]

SUMMARY_SERIES_NUMBER = 9701
#: The study the report joins: the first role present (radioembolization planning first).
STUDY_PREFERENCE = ("spect-maa", "ct-perfusion", "spect-gsa", "planning-ct")


class ReportError(AnalysisError):
    """No report can be made (nothing identifies the patient and study)."""


def _primary(results: Mapping[str, AnalysisResult], sources: Mapping[str, Sequence[Dataset]]) -> Dataset:
    for role in STUDY_PREFERENCE:
        if sources.get(role):
            return sources[role][0]
    for datasets in sources.values():
        if datasets:
            return datasets[0]
    for result in results.values():
        for obj in result.outputs:
            return obj.dataset
    raise ReportError("no source dataset or output identifies the patient and study of the case report")


def build_report(case_id: str, results: Mapping[str, AnalysisResult],
                 sources: Mapping[str, Sequence[Dataset]]) -> list[OutputObject]:
    """The SR (TID 1500) with every measurement of the case and its summary page(s) as Secondary Captures.

    `results`: workflow name -> result (any subset of perfusion, gsa, maa); `sources`: role -> datasets used
    (headers suffice). Returns [] when no result holds a measurement (TID 1500 needs at least one group).
    """
    groups = collect_groups(results, sources)
    if not groups:
        if results:
            logger.warning("case %s: no measurements in results %s: no report", case_id, sorted(results))
        return []
    primary = _primary(results, sources)
    refs = referenced(groups)
    evidence = [primary] + [ds for ds in refs if str(ds.SOPInstanceUID) != str(primary.SOPInstanceUID)]
    workflows = sorted({wf for key, r in results.items() if (wf := workflow_of(key, r)) is not None})
    sr = build_sr(case_id, groups, evidence, workflows)
    warnings = {}
    for key, r in results.items():
        wf = workflow_of(key, r)
        if wf is not None:
            warnings.setdefault(wf, []).extend(str(w) for w in r.measurements.get("warnings", []) or [])
    pages = render_pages(summary_lines(case_id, groups, warnings))
    series_uid = hd.UID()
    out = [OutputObject("report", sr, "case measurements (SR TID 1500)")]
    for n, rgb in enumerate(pages, start=1):
        sc = secondary_capture(
            rgb, primary, refs, series_uid=series_uid, series_number=SUMMARY_SERIES_NUMBER, instance_number=n,
            series_description=f"Case summary - {NOT_FOR_DIAGNOSIS}",
            comments=f"{NOT_FOR_DIAGNOSIS}. Case {case_id}: summary page {n} of {len(pages)} of the structured "
                     f"report {sr.SOPInstanceUID}.",
            derivation="text summary of the case measurements (" + ", ".join(workflows) + ")", image_plane=False)
        out.append(OutputObject("report", sc, f"case summary page {n}/{len(pages)}"))
    logger.info("case %s: report with %d groups and %d summary page(s)", case_id, len(groups), len(pages))
    return out
