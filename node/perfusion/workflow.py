"""The CT perfusion workflow: a dynamic CT series (+ an RTSTRUCT of its regions) -> perfusion maps and values."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

from node.configtable import ConfigTable
from node.index import SeriesRow
from node.perfusion import qa, report
from node.perfusion.errors import PerfusionInputError
from node.perfusion.measurements import PerfusionMeasurements
from node.perfusion.settings import PerfusionSettings, parse_settings
from node.report.groups import Group
from node.report.summary import SummaryBlock
from node.seriescontent import GAP_FACTOR, ct_image_problem
from node.workflow import (
    CaseSeries,
    ChosenSeries,
    CommonSettings,
    InputSelection,
    RoleContext,
    RoleRule,
    RunContext,
    TruthCheck,
    Workflow,
    WorkflowResult,
    newest,
)

__all__ = ["PERFUSION", "PerfusionWorkflow", "PERFUSION_MIN_TIME_POINTS", "PERFUSION_MIN_SPAN_S", "perfusion_problem"]

#: A perfusion series holds a bolus passage: at least this many time points at each of >= 2 slice positions over
#: at least this many seconds. A 3- or 4-phase diagnostic CT (3-4 time points minutes apart) and a single-level
#: test bolus (one position) are not perfusion series.
PERFUSION_MIN_TIME_POINTS = 8
PERFUSION_MIN_SPAN_S = 20.0
PERFUSION_MIN_POSITIONS = 2

CT, REGIONS = "CT perfusion", "regions (RTSTRUCT)"


def perfusion_problem(series: SeriesRow, _ctx: RoleContext | None = None) -> str | None:
    """Why a series is not a CT perfusion series (None: it is one)."""
    c = series.content
    problem = ct_image_problem(series.modality, c)
    if problem is not None:
        return problem
    if c.time_points < 2:
        return "one acquisition per slice position (no time series)"
    if c.time_points < PERFUSION_MIN_TIME_POINTS:
        return (f"{c.describe_time()} at each position: too few to hold a bolus passage "
                f"(>= {PERFUSION_MIN_TIME_POINTS} needed), as in a multi-phase diagnostic CT")
    if c.time_span_s is not None and c.time_span_s < PERFUSION_MIN_SPAN_S:
        return f"{c.describe_time()}: too short a time span to hold a bolus passage (>= {PERFUSION_MIN_SPAN_S:g} s)"
    if c.positions < PERFUSION_MIN_POSITIONS:
        return f"{c.describe_time()} at a single slice position: a test bolus, not a perfusion series"
    if c.gaps:
        return (f"gaps in the stack: {c.gaps} step(s) between slice positions longer than {GAP_FACTOR:g} x the "
                f"median {c.spacing_mm:.3g} mm (largest {c.largest_step_mm:.3g} mm)")
    return None


def is_perfusion_ct(series: SeriesRow, ctx: RoleContext) -> bool:
    return series.modality == "CT" and perfusion_problem(series, ctx) is None


def _why(series: SeriesRow, _ctx: RoleContext) -> str:
    c = series.content
    span = "" if c.time_span_s is not None else " (time from TemporalPositionIdentifier only: no acquisition times)"
    return (f"axial CT with {c.describe_time()} at each of {c.positions} slice positions: a dynamic (perfusion) "
            f"series{span}")


class PerfusionWorkflow(Workflow[PerfusionSettings, PerfusionMeasurements]):
    name = "perfusion"
    title = "Liver CT perfusion"
    procedure = report.PROCEDURE
    needs = ("ct-perfusion",)
    uses = ("roi-rtstruct", "liver-rtstruct")
    role_rules = (RoleRule("ct-perfusion", f"axial CT with >= {PERFUSION_MIN_TIME_POINTS} time points over "
                                           f">= {PERFUSION_MIN_SPAN_S:g} s at >= {PERFUSION_MIN_POSITIONS} slice "
                                           "positions (a bolus passage)", is_perfusion_ct, explain=_why,
                           why_not=lambda s, ctx: perfusion_problem(s, ctx) if s.modality == "CT" else None),)
    settings_type = PerfusionSettings
    measurements_type = PerfusionMeasurements
    legacy_keys = {"perfusion_methods": "methods", "perfusion_tolerance": "tolerance", "aorta": "aorta",
                   "portal_vein": "portal_vein", "spleen": "spleen"}
    report_rank = 20

    def parse_settings(self, table: ConfigTable, common: CommonSettings) -> PerfusionSettings:
        return parse_settings(table, common)

    def select_inputs(self, case: CaseSeries, settings: PerfusionSettings) -> InputSelection:
        candidates = case.with_role("ct-perfusion")
        if not candidates:
            raise PerfusionInputError(f"no ct-perfusion series in case {case.case_id}")
        # the most time points, then the widest coverage; arrival order only breaks a tie (with_role: newest first)
        best = max(candidates, key=lambda s: (s.content.time_points, s.content.positions, s.content.time_span_s or 0))
        why = f"{best.content.describe_time()} at {best.content.positions} slice positions"
        if len(candidates) > 1:
            why = f"the most time points and slice positions of {len(candidates)} ct-perfusion series: {why}"
        ct = ChosenSeries(CT, best, why)
        chosen = [ct]
        def same_frame(s: SeriesRow) -> bool:
            return s.referenced_frame_of_reference == ct.series.frame_of_reference_uid

        rois = (newest(case, "roi-rtstruct", REGIONS, same_frame, "drawn on the perfusion CT")
                or newest(case, "liver-rtstruct", REGIONS, same_frame, "drawn on the perfusion CT"))
        if rois is not None:
            chosen.append(rois)
        return InputSelection(tuple(chosen))

    def run(self, ctx: RunContext, settings: PerfusionSettings) -> WorkflowResult[PerfusionMeasurements]:
        from node.perfusion.pipeline import run_perfusion

        rtss = ctx.read_optional(REGIONS)
        return run_perfusion(ctx.read(CT), settings, rtss[0] if rtss else None)

    def report_groups(self, result: WorkflowResult[PerfusionMeasurements],
                      sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
        return report.report_groups(result, sources)

    def summary_section(self, groups: Sequence[Group]) -> Sequence[SummaryBlock]:
        return report.summary_section(groups)

    def phantom_checks(self, measurements: PerfusionMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
        return qa.phantom_checks(measurements, truth)


#: The workflow object the registry lists.
PERFUSION = PerfusionWorkflow()
