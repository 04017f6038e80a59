"""The GSA workflow: 99mTc-GSA SPECT/CT + planning CT (+ liver contour) -> FLS/ITV/PTV RTSTRUCT for the TPS."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

from node.configtable import ConfigTable
from node.gsa import qa, report
from node.gsa.errors import GsaInputError
from node.gsa.measurements import GsaMeasurements
from node.gsa.settings import GsaSettings, parse_settings
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

__all__ = ["GSA", "GsaWorkflow", "is_gsa_code", "names_gsa"]

#: SNOMED CT code of Tc-99m galactosyl human serum albumin diethylenetriamine pentaacetic acid.
GSA_CODES = frozenset({"446534003"})

SPECT, SPECT_CT, PLANNING_CT, LIVER = "GSA SPECT", "SPECT/CT CT", "planning CT", "liver contour"


def is_gsa_code(series: SeriesRow, _ctx: RoleContext) -> bool:
    return series.modality == "NM" and series.radiopharmaceutical_code.strip() in GSA_CODES


def names_gsa(series: SeriesRow, _ctx: RoleContext) -> bool:
    """The radiopharmaceutical's free text names GSA (used when no known code decides)."""
    text = series.radiopharmaceutical.upper().replace("-", " ")
    words = set(text.replace("^", " ").replace("(", " ").replace(")", " ").split())
    return series.modality == "NM" and ("GSA" in words or "GALACTOSYL" in text)



def _why(series: SeriesRow, _ctx: RoleContext) -> str:
    what = series.radiopharmaceutical_code or series.radiopharmaceutical or "none"
    return f"NM whose radiopharmaceutical ({what}) is 99mTc-GSA"

class GsaWorkflow(Workflow[GsaSettings, GsaMeasurements]):
    name = "gsa"
    title = "99mTc-GSA SPECT-guided liver radiotherapy targets"
    procedure = report.PROCEDURE
    needs = ("spect-gsa", "spect-ct", "planning-ct")
    uses = ("liver-rtstruct",)
    role_rules = (
        RoleRule("spect-gsa", "NM whose radiopharmaceutical code is 99mTc-GSA (SNOMED 446534003)", is_gsa_code,
                 priority=5, explain=_why),
        RoleRule("spect-gsa", "NM whose radiopharmaceutical text names GSA / galactosyl albumin", names_gsa,
                 explain=_why),
    )
    settings_type = GsaSettings
    measurements_type = GsaMeasurements
    legacy_keys = {"fls_threshold": "fls_threshold", "ptv_margin_mm": "ptv_margin_mm"}
    report_rank = 30

    def parse_settings(self, table: ConfigTable, common: CommonSettings) -> GsaSettings:
        return parse_settings(table, common)

    def select_inputs(self, case: CaseSeries, settings: GsaSettings) -> InputSelection:
        nm = newest(case, "spect-gsa", SPECT)
        if nm is None:
            raise GsaInputError(f"no GSA SPECT in case {case.case_id}")
        spect_ct = newest(case, "spect-ct", SPECT_CT, lambda s: s.frame_of_reference_uid ==
                          nm.series.frame_of_reference_uid, "sharing the SPECT's frame of reference")
        if spect_ct is None:
            raise GsaInputError("the GSA SPECT has no SPECT/CT sharing its frame of reference; cannot register it")
        livers = case.with_role("liver-rtstruct")
        # Prefer the planning CT a received liver contour was drawn on.
        liver_fors = {s.referenced_frame_of_reference for s in livers}
        plannings = sorted(case.with_role("planning-ct"), key=lambda s: s.frame_of_reference_uid not in liver_fors)
        if not plannings:
            raise GsaInputError("no planning CT in the case")
        planning = plannings[0]
        why = ("the planning CT a received liver contour was drawn on" if planning.frame_of_reference_uid in
               liver_fors else f"newest of {len(plannings)} planning-ct series" if len(plannings) > 1
               else "the planning-ct series")
        chosen = [nm, spect_ct, ChosenSeries(PLANNING_CT, planning, why)]
        liver = next((s for s in livers if s.referenced_frame_of_reference == planning.frame_of_reference_uid), None)
        if liver is not None:
            chosen.append(ChosenSeries(LIVER, liver, "liver contour drawn on the planning CT"))
        return InputSelection(tuple(chosen))

    def run(self, ctx: RunContext, settings: GsaSettings) -> WorkflowResult[GsaMeasurements]:
        from node.gsa.pipeline import run_gsa

        liver = ctx.read_optional(LIVER)
        return run_gsa(ctx.read(PLANNING_CT), ctx.read(SPECT)[0], ctx.read(SPECT_CT), liver[0] if liver else None,
                       settings)

    def report_groups(self, result: WorkflowResult[GsaMeasurements],
                      sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
        return report.report_groups(result, sources)

    def summary_section(self, groups: Sequence[Group]) -> list[str]:
        return report.summary_section(groups)

    def phantom_checks(self, measurements: GsaMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
        return qa.phantom_checks(measurements, truth)


#: The workflow object the registry lists.
GSA = GsaWorkflow()
