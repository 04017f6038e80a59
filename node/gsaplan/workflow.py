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
    """Frame of reference -> description of the case's CTs outside every NM/PT frame (planning CTs)."""
    nuclear = ctx.nuclear_frames_of_reference
    return {s.frame_of_reference_uid: s.series_description for s in ctx.series
            if s.modality == "CT" and s.frame_of_reference_uid and s.frame_of_reference_uid not in nuclear}


def is_plan_dose(series: SeriesRow, ctx: RoleContext) -> bool:
    return (series.modality == "RTDOSE" and series.dose_summation_type in WHOLE_PLAN
            and series.frame_of_reference_uid in _planning_frames(ctx))


def _why(series: SeriesRow, ctx: RoleContext) -> str:
    ct = _planning_frames(ctx).get(series.frame_of_reference_uid, "")
    return (f"RTDOSE of a whole plan (summation {series.dose_summation_type or 'not stated'}) in the frame of "
            f"reference of the planning CT {ct!r}: a plan dose from the TPS")


class GsaPlanWorkflow(Workflow[GsaPlanSettings, GsaPlanMeasurements]):
    name = "gsaplan"
    title = "Functional-liver plan dose"  # of the GSA-guided radiotherapy plan the TPS returns
    procedure = report.PROCEDURE
    needs = ("plan-dose", "spect-gsa", "spect-ct", "planning-ct")  # the returned dose, and the GSA targets' inputs
    uses = ("rt-plan",)
    depends_on = (GSA.name,)  # FLS, ITV, PTV, liver and the registered GSA on the planning CT
    role_rules = (
        RoleRule("plan-dose", "RTDOSE of a whole plan (summation PLAN / MULTI_PLAN) in the frame of reference of a "
                 "planning CT of the case", is_plan_dose, priority=5, explain=_why),
        RoleRule("rt-plan", "RTPLAN (the plan a returned dose belongs to)", lambda s, ctx: s.modality == "RTPLAN",
                 priority=5),
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

    def summary_section(self, groups: Sequence[Group]) -> list[str]:
        return report.summary_section(groups)

    def phantom_checks(self, measurements: GsaPlanMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
        return qa.phantom_checks(measurements, truth)


#: The workflow object the registry lists.
GSAPLAN = GsaPlanWorkflow()
