"""The GSA plan evaluation: an RT Dose the TPS sends back in the planning CT's frame of reference of a GSA case
(with or without its RT Plan) -> FLV20Gy, F20Gy and the DVHs of the GSA-defined structures, in its own report."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

from node.configtable import ConfigTable
from node.gsa.reference import GsaResult
from node.gsa.workflow import GSA
from node.gsaplan import qa, report
from node.gsaplan.errors import PlanInputError
from node.gsaplan.measurements import GsaPlanMeasurements
from node.gsaplan.settings import GsaPlanSettings, parse_settings
from node.index import SeriesRow
from node.report.groups import Group
from node.report.summary import SummaryBlock
from node.selection import planning_problem
from node.seriescontent import dose_grid_problem
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

__all__ = ["GSAPLAN", "GsaPlanWorkflow", "is_plan_dose"]

#: Dose Summation Types of a whole plan's dose ("" when the header did not say: accepted, the evaluation notes it)
WHOLE_PLAN = ("PLAN", "MULTI_PLAN", "")
DOSE, PLAN = "plan dose", "RT plan"


def _planning_frames(ctx: RoleContext) -> dict[str, str]:
    """Frame of reference -> description of the case's planning CTs: CT volumes a plan can be made on
    (node.selection.planning_problem) outside every NM/PT frame of reference (those are SPECT/CT or PET/CT CTs, in
    which the node's own predicted Y-90 dose lies)."""
    nuclear = ctx.nuclear_frames_of_reference
    return {s.frame_of_reference_uid: s.series_description for s in ctx.series
            if s.modality == "CT" and s.frame_of_reference_uid and s.frame_of_reference_uid not in nuclear
            and planning_problem(s, ctx) is None}


def _plan_dose_problem(series: SeriesRow, ctx: RoleContext) -> str | None:
    """Why an RTDOSE series is not a plan dose returned by the TPS (None: it is one)."""
    if series.dose_summation_type not in WHOLE_PLAN:
        return (f"dose summation type {series.dose_summation_type}: a part of a plan, not the whole plan's dose "
                "(PLAN or MULTI_PLAN)")
    problem = dose_grid_problem(series.content)
    if problem is not None:
        return problem
    frame = series.frame_of_reference_uid
    if frame and frame in ctx.nuclear_frames_of_reference:
        emission = next(s for s in ctx.series if s.modality in ("NM", "PT") and s.frame_of_reference_uid == frame)
        return (f"in the frame of reference of {emission.modality} {emission.series_description!r}: a dose on a "
                "SPECT/CT or PET/CT (such as the node's own predicted Y-90 dose), not a plan on a planning CT")
    if frame not in _planning_frames(ctx):
        return ("no planning CT of the case shares its frame of reference (a contiguous axial ORIGINAL CT volume; "
                "see the CT series' role reasons)")
    return None


def is_plan_dose(series: SeriesRow, ctx: RoleContext) -> bool:
    return series.modality == "RTDOSE" and _plan_dose_problem(series, ctx) is None


def _why(series: SeriesRow, ctx: RoleContext) -> str:
    ct = _planning_frames(ctx).get(series.frame_of_reference_uid, "")
    return (f"RTDOSE of a whole plan (summation {series.dose_summation_type or 'not stated'}), a dose grid of "
            f"{series.content.describe_stack()}, in the frame of reference of the planning CT {ct!r}: a plan dose "
            "from the TPS")


def _why_not(series: SeriesRow, ctx: RoleContext) -> str | None:
    return _plan_dose_problem(series, ctx) if series.modality == "RTDOSE" else None


def _plan_problem(series: SeriesRow, ctx: RoleContext) -> str | None:
    """Why an RTPLAN series is not the plan a returned dose may belong to (None: it may be)."""
    frame = series.frame_of_reference_uid
    if frame and frame in ctx.nuclear_frames_of_reference:
        return ("in the frame of reference of an NM/PET series: a plan on a SPECT/CT or PET/CT (such as the node's "
                "own beamless Y-90 activity plan), not one on a planning CT")
    return None


def is_rt_plan(series: SeriesRow, ctx: RoleContext) -> bool:
    return series.modality == "RTPLAN" and _plan_problem(series, ctx) is None


def _why_plan(series: SeriesRow, ctx: RoleContext) -> str:
    frame = series.frame_of_reference_uid
    ct = _planning_frames(ctx).get(frame) if frame else None
    where = (f"in the frame of reference of the planning CT {ct!r}" if ct is not None
             else "without a frame of reference of a planning CT of the case" if frame
             else "without a frame of reference")
    return f"RTPLAN {where}: the plan a returned plan dose may belong to (used when the dose references it)"


def _why_not_plan(series: SeriesRow, ctx: RoleContext) -> str | None:
    return _plan_problem(series, ctx) if series.modality == "RTPLAN" else None


class GsaPlanWorkflow(Workflow[GsaPlanSettings, GsaPlanMeasurements]):
    name = "gsaplan"
    title = "Functional-liver plan dose"  # of the GSA-guided radiotherapy plan the TPS returns
    procedure = report.PROCEDURE
    needs = ("plan-dose", "spect-gsa", "spect-ct", "planning-ct")  # the returned dose, and the GSA targets' inputs
    uses = ("rt-plan",)
    depends_on = (GSA.name,)  # FLS, ITV, PTV, liver and the registered GSA on the planning CT
    role_rules = (
        RoleRule("plan-dose", "RTDOSE of a whole plan (summation PLAN / MULTI_PLAN) with a dose grid, in the frame of "
                 "reference of a planning CT of the case", is_plan_dose, priority=5, explain=_why, why_not=_why_not),
        RoleRule("rt-plan", "RTPLAN outside every NM/PET frame of reference (the plan a returned dose may belong to)",
                 is_rt_plan, priority=5, explain=_why_plan, why_not=_why_not_plan),
    )
    settings_type = GsaPlanSettings
    measurements_type = GsaPlanMeasurements
    report_rank = 40
    separate_report = True  # the returned plan: its own SR and page in the planning study

    def parse_settings(self, table: ConfigTable, common: CommonSettings) -> GsaPlanSettings:
        return parse_settings(table, common)

    def select_inputs(self, case: CaseSeries, settings: GsaPlanSettings) -> InputSelection:
        dose = newest(case, "plan-dose", DOSE)
        if dose is None:
            raise PlanInputError(f"no plan dose in case {case.case_id}")
        frame = dose.series.frame_of_reference_uid
        chosen = [dose]
        plans = [s for s in case.with_role("rt-plan") if s.frame_of_reference_uid in (frame, "")]
        if plans:
            chosen.append(ChosenSeries(PLAN, plans[0], "newest RT Plan in the dose's frame of reference (used when "
                                                      "the dose references it)"))
        return InputSelection(tuple(chosen))

    def run(self, ctx: RunContext, settings: GsaPlanSettings) -> WorkflowResult[GsaPlanMeasurements]:
        from node.gsaplan.pipeline import run_gsaplan

        gsa = ctx.result_of(GSA)
        if not isinstance(gsa, GsaResult) or gsa.reference is None:
            raise PlanInputError("the GSA targets of this case were not computed in this run: the plan dose cannot be "
                                 "read in the functional liver")
        plans = ctx.read_optional(PLAN)
        return run_gsaplan(ctx.read(DOSE)[0], plans[0] if plans else None, gsa.reference, settings)

    def report_groups(self, result: WorkflowResult[GsaPlanMeasurements],
                      sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
        return report.report_groups(result, sources)

    def summary_section(self, groups: Sequence[Group]) -> list[SummaryBlock]:
        return report.summary_section(groups)

    def phantom_checks(self, measurements: GsaPlanMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
        return qa.phantom_checks(measurements, truth)


#: The workflow object the registry lists.
GSAPLAN = GsaPlanWorkflow()
