"""build_report: the case report objects (SR + summary pages), routed as "report"."""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
from pydicom import Dataset

from node.derived import NOT_FOR_DIAGNOSIS
from node.imaging.capture import secondary_capture
from node.imaging.pages import Identity
from node.registry import DEFAULT_REGISTRY, Registry
from node.report.errors import ReportError
from node.report.groups import Group, referenced
from node.report.pdf import encapsulated_pdf
from node.report.sr import build_sr
from node.report.summary import Section, SummaryBlock, Table, liver_volumes, render_pages, render_pdf, summary_lines
from node.workflow import OutputObject, Workflow, WorkflowResult

logger = logging.getLogger(__name__)

__all__ = ["ReportError", "build_report", "collect_groups", "summary_text", "SUMMARY_SERIES_NUMBER",
           "PDF_SERIES_NUMBER"]

SUMMARY_SERIES_NUMBER = 9701
PDF_SERIES_NUMBER = 9702


def _reporting(results: Mapping[str, WorkflowResult[Any]], registry: Registry
               ) -> list[tuple[Workflow[Any, Any], WorkflowResult[Any]]]:
    """(workflow, result) of every registered workflow with a result, in report order (rank, then run order)."""
    found = [(wf, results[wf.name]) for wf in registry if wf.name in results]
    unknown = sorted(set(results) - {wf.name for wf, _ in found})
    if unknown:
        logger.warning("results of unregistered workflow(s) %s are not reported", ", ".join(unknown))
    return sorted(found, key=lambda pair: pair[0].report_rank)


def collect_groups(results: Mapping[str, WorkflowResult[Any]], sources: Mapping[str, Sequence[Dataset]],
                   registry: Registry = DEFAULT_REGISTRY) -> list[Group]:
    """Report groups of every result (in report order); groups without a measurement are dropped."""
    groups: list[Group] = []
    for wf, result in _reporting(results, registry):
        groups += [g for g in wf.report_groups(result, sources) if g.items]
    return groups


def _primary(reporting: Sequence[tuple[Workflow[Any, Any], WorkflowResult[Any]]],
             sources: Mapping[str, Sequence[Dataset]]) -> Dataset:
    """The dataset whose patient and study the report joins: the key input of the first reporting workflow."""
    for wf, _ in reporting:
        for role in wf.needs:
            if sources.get(role):
                return sources[role][0]
    for datasets in sources.values():
        if datasets:
            return datasets[0]
    for _, result in reporting:
        for obj in result.outputs:
            return obj.dataset
    raise ReportError("no source dataset or output identifies the patient and study of the case report")


def summary_sections(reporting: Sequence[tuple[Workflow[Any, Any], WorkflowResult[Any]]],
                     groups: Sequence[Group]) -> list[Section]:
    """The summary's sections: the case-wide liver volumes, then each reporting workflow's tables and warnings."""
    sections = []
    volumes = liver_volumes(groups)
    if volumes is not None:
        sections.append(Section("Liver", [volumes]))
    for wf, result in reporting:
        mine = [g for g in groups if g.workflow == wf.name]
        if mine or result.warnings:
            blocks: list[SummaryBlock] = list(wf.summary_section(mine)) if mine else ["no measurements"]
            # a warning a table already states in its notes (why a value is n.m.) is said once, by the table
            stated = {note for b in blocks if isinstance(b, Table) for note in b.notes}
            sections.append(Section(wf.title, blocks, [w for w in result.warnings if w not in stated]))
    return sections


def summary_text(case_id: str, results: Mapping[str, WorkflowResult[Any]],
                 sources: Mapping[str, Sequence[Dataset]], registry: Registry = DEFAULT_REGISTRY) -> list[str]:
    """What the case's summary page(s) show, as text lines."""
    reporting = _reporting(results, registry)
    return summary_lines(case_id, summary_sections(reporting, collect_groups(results, sources, registry)))


def build_report(case_id: str, results: Mapping[str, WorkflowResult[Any]],
                 sources: Mapping[str, Sequence[Dataset]], registry: Registry = DEFAULT_REGISTRY
                 ) -> list[OutputObject]:
    """The SR (TID 1500) with every measurement of the case and its summary page(s) as Secondary Captures, and
    one more SR with its page(s) per workflow that reports on its own (``Workflow.separate_report``: a later
    visit, in the study of its key input).

    `results`: workflow name -> result; `sources`: role -> input datasets (headers suffice). A report without a
    measurement is not made (TID 1500 needs at least one group).
    """
    reporting = _reporting(results, registry)
    together = [(wf, r) for wf, r in reporting if not wf.separate_report]
    out = _report(case_id, together, sources, "Case measurements", "Case summary", "case")
    for wf, result in reporting:
        if wf.separate_report:
            out += _report(case_id, [(wf, result)], sources, wf.title, wf.title, wf.name)
    return out


def _report(case_id: str, reporting: Sequence[tuple[Workflow[Any, Any], WorkflowResult[Any]]],
            sources: Mapping[str, Sequence[Dataset]], sr_title: str, page_title: str, what: str
            ) -> list[OutputObject]:
    groups = [g for wf, result in reporting for g in wf.report_groups(result, sources) if g.items]
    if not groups:
        if reporting:
            logger.warning("case %s: no measurements in results %s: no report", case_id,
                           sorted(wf.name for wf, _ in reporting))
        return []
    primary = _primary(reporting, sources)
    refs = referenced(groups)
    evidence = [primary] + [ds for ds in refs if str(ds.SOPInstanceUID) != str(primary.SOPInstanceUID)]
    sr = build_sr(case_id, groups, evidence, sorted((wf for wf, _ in reporting), key=lambda wf: wf.name),
                  series_description=f"{sr_title} - {NOT_FOR_DIAGNOSIS}")
    description = f"{page_title} - {NOT_FOR_DIAGNOSIS}"
    sections = summary_sections(reporting, groups)
    names = ", ".join(wf.title for wf, _ in reporting)
    subtitle = "measured values with their units;  \u00b1 = 1 SD;  n.m. = not measurable (why: see notes)"
    identity = Identity.of(primary, description)
    pages = render_pages(identity, sections, page_title, subtitle)
    series_uid = hd.UID()
    text = "\n".join(summary_lines(case_id, sections))  # the pages' text, searchable (ImageComments)
    out = [OutputObject("report", sr, f"{what} measurements (SR TID 1500)")]
    for n, rgb in enumerate(pages, start=1):
        sc = secondary_capture(
            rgb, primary, refs, series_uid=series_uid, series_number=SUMMARY_SERIES_NUMBER, instance_number=n,
            series_description=description,
            comments=f"{NOT_FOR_DIAGNOSIS}. Case {case_id}: summary page {n} of {len(pages)} of the structured "
                     f"report {sr.SOPInstanceUID}. Text of the summary:\n{text}",
            derivation=f"summary of the {what} measurements ({names})", image_plane=False)
        out.append(OutputObject("report", sc, f"{what} summary page {n}/{len(pages)}"))
    pdf = render_pdf(identity, sections, page_title, subtitle)
    document = encapsulated_pdf(pdf, primary, [sr, *(o.dataset for o in out[1:])], title=page_title,
                                series_uid=hd.UID(), series_number=PDF_SERIES_NUMBER)
    out.append(OutputObject("report", document, f"{what} summary (PDF)"))
    logger.info("case %s: %s report with %d groups, %d summary page(s) and their PDF", case_id, what, len(groups),
                len(pages))
    return out
