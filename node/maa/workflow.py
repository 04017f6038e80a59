"""The MAA workflow: 99mTc-MAA SPECT (+ its CT, regions, and this case's perfusion maps) -> Y-90 planning."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

from node.configtable import ConfigTable
from node.index import SeriesRow
from node.maa import qa, report
from node.maa.errors import MaaInputError
from node.maa.measurements import MaaMeasurements
from node.maa.settings import MaaSettings, parse_settings
from node.perfusion.reference import PerfusionResult
from node.perfusion.workflow import PERFUSION
from node.report.groups import Group
from node.report.summary import SummaryBlock
from node.selection import choose_spect_ct
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

__all__ = ["MAA", "MaaWorkflow"]

#: SNOMED CT codes of Tc-99m aggregated albumin and microaggregated albumin.
MAA_CODES = frozenset({"85693008", "81761004"})

SPECT, SPECT_CT, REGIONS = "MAA SPECT", "SPECT/CT CT", "regions (RTSTRUCT)"


def _spect(series: SeriesRow) -> bool:
    return spect_problem(series.modality, series.sop_class_uid, series.content) is None


def is_maa_code(series: SeriesRow, _ctx: RoleContext) -> bool:
    return series.modality == "NM" and series.radiopharmaceutical_code.strip() in MAA_CODES and _spect(series)


def names_maa(series: SeriesRow, _ctx: RoleContext) -> bool:
    """The radiopharmaceutical's free text names (macro/micro)aggregated albumin."""
    text = series.radiopharmaceutical.upper().replace("-", " ")
    words = set(text.replace("^", " ").replace("(", " ").replace(")", " ").split())
    return series.modality == "NM" and ("MAA" in words or "MACROAGGREGATED" in text or "MICROAGGREGATED" in text
                                        or "AGGREGATED ALBUMIN" in text) and _spect(series)


def _why(series: SeriesRow, _ctx: RoleContext) -> str:
    what = series.radiopharmaceutical_code or series.radiopharmaceutical or "none"
    return f"reconstructed NM SPECT ({series.content.describe_stack()}) whose radiopharmaceutical ({what}) is 99mTc-MAA"


class MaaWorkflow(Workflow[MaaSettings, MaaMeasurements]):
    name = "maa"
    title = "99mTc-MAA SPECT planning of Y-90 radioembolization"
    procedure = report.PROCEDURE
    needs = ("spect-maa",)
    uses = ("spect-ct", "roi-rtstruct", "liver-rtstruct")
    depends_on = (PERFUSION.name,)  # T/N next to the perfusion maps of the same case
    tracers = ("Tc-99m MAA",)
    role_rules = (
        RoleRule("spect-maa", "NM whose radiopharmaceutical code is 99mTc-MAA (SNOMED 85693008, 81761004)",
                 is_maa_code, priority=5, explain=_why),
        RoleRule("spect-maa", "NM whose radiopharmaceutical text names MAA / aggregated albumin", names_maa,
                 explain=_why),
    )
    output_kinds = ("rtdose",)  # the predicted Y-90 dose with its plan and regions, for a TPS
    settings_type = MaaSettings
    measurements_type = MaaMeasurements
    legacy_keys = {"normal_liver_dose_gy": "normal_liver_dose_gy", "lung_dose_limit_gy": "lung_dose_limit_gy",
                   "lung_shunt_fraction": "lung_shunt_fraction"}
    report_rank = 10

    def parse_settings(self, table: ConfigTable, common: CommonSettings) -> MaaSettings:
        return parse_settings(table, common)

    def select_inputs(self, case: CaseSeries, settings: MaaSettings) -> InputSelection:
        nm = newest(case, "spect-maa", SPECT)
        if nm is None:
            raise MaaInputError(f"no MAA SPECT in case {case.case_id}")
        same_frame = nm.series.frame_of_reference_uid
        chosen = [nm]
        ct = choose_spect_ct(case, nm.series, SPECT_CT)
        if ct is not None:
            chosen.append(ct)
        def on_spect(s: SeriesRow) -> bool:
            return s.referenced_frame_of_reference == same_frame

        rois = (newest(case, "roi-rtstruct", REGIONS, on_spect, "drawn on the SPECT/CT")
                or newest(case, "liver-rtstruct", REGIONS, on_spect, "drawn on the SPECT/CT"))
        if rois is not None:
            chosen.append(rois)
        return InputSelection(tuple(chosen))

    def run(self, ctx: RunContext, settings: MaaSettings) -> WorkflowResult[MaaMeasurements]:
        from node.maa.pipeline import run_maa

        perfusion = ctx.result_of(PERFUSION)
        reference = perfusion.reference if isinstance(perfusion, PerfusionResult) else None
        rtss = ctx.read_optional(REGIONS)
        return run_maa(ctx.read(SPECT)[0], ctx.read_optional(SPECT_CT), rtss[0] if rtss else None, reference,
                       settings)

    def report_groups(self, result: WorkflowResult[MaaMeasurements],
                      sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
        return report.report_groups(result, sources)

    def summary_section(self, groups: Sequence[Group]) -> Sequence[SummaryBlock]:
        return report.summary_section(groups)

    def phantom_checks(self, measurements: MaaMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
        return qa.phantom_checks(measurements, truth)


#: The workflow object the registry lists.
MAA = MaaWorkflow()
