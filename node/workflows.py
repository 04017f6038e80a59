"""Which inputs of a case feed which analysis: the glue between the index and the pipelines.

Each workflow picks its series by role, reads them (pixel data included) and calls a pure pipeline function.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

from pydicom import Dataset

from node.config import Config
from node.header import read_stored
from node.index import Index, SeriesRow
from node.results import AnalysisError, AnalysisResult, OutputObject

logger = logging.getLogger(__name__)


@dataclass
class CaseInputs:
    """The series of one case with their roles; reads datasets on demand."""

    case_id: str
    series: list[SeriesRow]
    roles: dict[str, str]
    index: Index
    results: dict[str, AnalysisResult] = field(default_factory=dict)
    #: role -> datasets a workflow used: the report references them and takes patient/study from them
    used: dict[str, list[Dataset]] = field(default_factory=dict)

    def with_role(self, role: str) -> list[SeriesRow]:
        """Series of a role, newest first."""
        return sorted((s for s in self.series if self.roles.get(s.series_uid) == role),
                      key=lambda s: s.last_received, reverse=True)

    def read(self, series: SeriesRow) -> list[Dataset]:
        """All instances of a series, pixel data included; remembered under the series' role for the report."""
        paths = self.index.instance_paths(series.series_uid)
        out = []
        for p in paths:
            try:
                out.append(read_stored(p))  # the node's reader: the meta it wrote decides the transfer syntax
            except Exception as exc:
                raise AnalysisError(f"cannot read stored instance {p.name} of series "
                                    f"{series.series_description!r}: {exc}") from exc
        if not out:
            raise AnalysisError(f"series {series.series_description!r} has no readable instances")
        self.used[self.roles.get(series.series_uid, "other")] = out
        return out


def _one(inputs: CaseInputs, role: str) -> SeriesRow:
    found = inputs.with_role(role)
    if not found:
        raise AnalysisError(f"no {role} series in case {inputs.case_id}")
    if len(found) > 1:
        logger.info("case %s: %d %s series, using the newest (%r)", inputs.case_id, len(found), role,
                    found[0].series_description)
    return found[0]


def run_perfusion_workflow(inputs: CaseInputs, config: Config) -> AnalysisResult:
    from node.perfusion.pipeline import run_perfusion

    ct = _one(inputs, "ct-perfusion")
    rois = [s for s in inputs.with_role("roi-rtstruct") + inputs.with_role("liver-rtstruct")
            if s.referenced_frame_of_reference == ct.frame_of_reference_uid]
    rtss = inputs.read(rois[0])[0] if rois else None
    return run_perfusion(inputs.read(ct), config.analysis, rtss)


def run_gsa_workflow(inputs: CaseInputs, config: Config) -> AnalysisResult:
    from node.gsa.pipeline import run_gsa

    nm = _one(inputs, "spect-gsa")
    spect_cts = [s for s in inputs.with_role("spect-ct") if s.frame_of_reference_uid == nm.frame_of_reference_uid]
    if not spect_cts:
        raise AnalysisError("the GSA SPECT has no SPECT/CT sharing its frame of reference; cannot register it")
    livers = inputs.with_role("liver-rtstruct")
    plannings = inputs.with_role("planning-ct")
    # Prefer the planning CT a received liver contour was drawn on.
    liver_fors = {s.referenced_frame_of_reference for s in livers}
    plannings.sort(key=lambda s: s.frame_of_reference_uid not in liver_fors)
    if not plannings:
        raise AnalysisError("no planning CT in the case")
    planning = plannings[0]
    liver = next((s for s in livers if s.referenced_frame_of_reference == planning.frame_of_reference_uid), None)
    return run_gsa(inputs.read(planning), inputs.read(nm)[0], inputs.read(spect_cts[0]),
                   inputs.read(liver)[0] if liver else None, config.analysis)


def run_maa_workflow(inputs: CaseInputs, config: Config) -> AnalysisResult:
    """MAA uptake, shunt, partition model; correlated with this case's perfusion maps when it has them."""
    from node.maa.pipeline import run_maa

    nm = _one(inputs, "spect-maa")
    spect_cts = [s for s in inputs.with_role("spect-ct") if s.frame_of_reference_uid == nm.frame_of_reference_uid]
    rois = [s for s in inputs.with_role("roi-rtstruct") + inputs.with_role("liver-rtstruct")
            if s.referenced_frame_of_reference == nm.frame_of_reference_uid]
    perfusion = inputs.results.get("perfusion")
    maps = [o.dataset for o in perfusion.outputs if o.kind == "parametric-map"] if perfusion else []
    perfusion_ct = inputs.used.get("ct-perfusion") if perfusion else None
    return run_maa(inputs.read(nm)[0], inputs.read(spect_cts[0]) if spect_cts else None,
                   inputs.read(rois[0])[0] if rois else None, perfusion_ct, maps, config.analysis)


def build_case_report(inputs: CaseInputs) -> list[OutputObject]:
    """The case's SR and summary page over every workflow that succeeded."""
    from node.report.build import build_report

    return build_report(inputs.case_id, inputs.results, inputs.used)


# Order matters: MAA correlates with the perfusion maps computed before it.
WORKFLOWS: dict[str, Callable[[CaseInputs, Config], AnalysisResult]] = {
    "perfusion": run_perfusion_workflow,
    "gsa": run_gsa_workflow,
    "maa": run_maa_workflow,
}
