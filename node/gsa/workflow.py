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
from node.report.summary import SummaryBlock
from node.selection import choose_liver_contour, choose_planning_ct, choose_spect_ct
from node.seriescontent import spect_problem
from node.workflow import (
    CaseSeries,
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


def _spect(series: SeriesRow) -> bool:
    return spect_problem(series.modality, series.sop_class_uid, series.content) is None


def is_gsa_code(series: SeriesRow, _ctx: RoleContext) -> bool:
    return series.modality == "NM" and series.radiopharmaceutical_code.strip() in GSA_CODES and _spect(series)


def names_gsa(series: SeriesRow, _ctx: RoleContext) -> bool:
    """The radiopharmaceutical's free text names GSA (used when no known code decides)."""
    text = series.radiopharmaceutical.upper().replace("-", " ")
    words = set(text.replace("^", " ").replace("(", " ").replace(")", " ").split())
    return series.modality == "NM" and ("GSA" in words or "GALACTOSYL" in text) and _spect(series)


def _why(series: SeriesRow, _ctx: RoleContext) -> str:
    what = series.radiopharmaceutical_code or series.radiopharmaceutical or "none"
    return f"reconstructed NM SPECT ({series.content.describe_stack()}) whose radiopharmaceutical ({what}) is 99mTc-GSA"


class GsaWorkflow(Workflow[GsaSettings, GsaMeasurements]):
    name = "gsa"
    title = "99mTc-GSA SPECT-guided liver radiotherapy targets"
    procedure = report.PROCEDURE
    needs = ("spect-gsa", "spect-ct", "planning-ct")
    uses = ("liver-rtstruct",)
    tracers = ("Tc-99m GSA",)
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
        spect_ct = choose_spect_ct(case, nm.series, SPECT_CT)
        if spect_ct is None:
            raise GsaInputError("the GSA SPECT has no SPECT/CT CT (an ORIGINAL axial CT sharing its frame of reference "
                                "and covering it); cannot register it")
        common = CommonSettings(settings.liver_roi_names)
        planning = choose_planning_ct(case, common, PLANNING_CT)
        if planning is None:
            raise GsaInputError("no planning CT in the case (a contiguous axial ORIGINAL CT volume; see the series' "
                                "role reasons)")
        chosen = [nm, spect_ct, planning]
        liver = choose_liver_contour(case, planning.series, LIVER, common)
        if liver is not None:
            chosen.append(liver)
        return InputSelection(tuple(chosen))

    def run(self, ctx: RunContext, settings: GsaSettings) -> WorkflowResult[GsaMeasurements]:
        from node.gsa.pipeline import run_gsa

        liver = ctx.read_optional(LIVER)
        return run_gsa(ctx.read(PLANNING_CT), ctx.read(SPECT)[0], ctx.read(SPECT_CT), liver[0] if liver else None,
                       settings)

    def report_groups(self, result: WorkflowResult[GsaMeasurements],
                      sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
        return report.report_groups(result, sources)

    def summary_section(self, groups: Sequence[Group]) -> Sequence[SummaryBlock]:
        return report.summary_section(groups)

    def phantom_checks(self, measurements: GsaMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
        return qa.phantom_checks(measurements, truth)


#: The workflow object the registry lists.
GSA = GsaWorkflow()
