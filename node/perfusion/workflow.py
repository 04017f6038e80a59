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

__all__ = ["PERFUSION", "PerfusionWorkflow", "PERFUSION_MIN_REPEATS"]

#: A CT series is a perfusion series when one slice position repeats at least this often (time points).
PERFUSION_MIN_REPEATS = 3

CT, REGIONS = "CT perfusion", "regions (RTSTRUCT)"


def is_perfusion_ct(series: SeriesRow, _ctx: RoleContext) -> bool:
    return series.modality == "CT" and series.max_position_repeats >= PERFUSION_MIN_REPEATS


class PerfusionWorkflow(Workflow[PerfusionSettings, PerfusionMeasurements]):
    name = "perfusion"
    title = "Liver CT perfusion"
    procedure = report.PROCEDURE
    needs = ("ct-perfusion",)
    uses = ("roi-rtstruct", "liver-rtstruct")
    role_rules = (RoleRule("ct-perfusion", f"CT whose slice positions repeat >= {PERFUSION_MIN_REPEATS} times "
                                           "(a time series)", is_perfusion_ct,
                           explain=lambda s, _ctx: f"CT with {s.max_position_repeats} acquisitions at the same table "
                                                   f"position (>= {PERFUSION_MIN_REPEATS}): a dynamic series"),)
    settings_type = PerfusionSettings
    measurements_type = PerfusionMeasurements
    legacy_keys = {"perfusion_methods": "methods", "perfusion_tolerance": "tolerance", "aorta": "aorta",
                   "portal_vein": "portal_vein", "spleen": "spleen"}
    report_rank = 20

    def parse_settings(self, table: ConfigTable, common: CommonSettings) -> PerfusionSettings:
        return parse_settings(table, common)

    def select_inputs(self, case: CaseSeries, settings: PerfusionSettings) -> InputSelection:
        ct = newest(case, "ct-perfusion", CT)
        if ct is None:
            raise PerfusionInputError(f"no ct-perfusion series in case {case.case_id}")
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

    def summary_section(self, groups: Sequence[Group]) -> list[str]:
        return report.summary_section(groups)

    def phantom_checks(self, measurements: PerfusionMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
        return qa.phantom_checks(measurements, truth)


#: The workflow object the registry lists.
PERFUSION = PerfusionWorkflow()
