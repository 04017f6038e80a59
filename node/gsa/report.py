"""The GSA workflow's part of the case report: one group per structure (volume), and its summary section."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom import Dataset

from node.gsa.measurements import GsaMeasurements
from node.report.codes import LIVER, VOLUME
from node.report.groups import Group, fmt, private
from node.workflow import WorkflowResult

__all__ = ["report_groups", "summary_section", "PROCEDURE", "GROUP_PREFIX"]

PROCEDURE = private("LN-P-GSA", "GSA SPECT functional liver targets for SBRT")
GROUP_PREFIX = "GSA "
_METHODS = {
    "FLS": private("LN-M-FLS", "GSA SPECT >= threshold x liver maximum"),
    "ITV": private("LN-M-ITV", "Whole liver minus FLS"),
    "PTV": private("LN-M-PTV", "ITV grown by an isotropic margin"),
}
_LIVER_CONTOUR = private("LN-M-LIVER", "Whole liver contour")


def report_groups(result: WorkflowResult[GsaMeasurements], sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
    m = result.measurements
    nm = list(sources.get("spect-gsa", []))[:1]
    params = [f"FLS threshold = {m.fls_threshold_fraction} x liver maximum", f"PTV margin (mm) = {m.ptv_margin_mm}",
              f"liver source = {m.liver_source}", f"method = {m.method}"]
    groups = []
    for name, volume in m.volumes_cm3.items():
        g = Group("gsa", f"{GROUP_PREFIX}{name}", LIVER, None, sources=nm, parameters=params)
        g.add(VOLUME, volume, "cm3", _METHODS.get(name, _LIVER_CONTOUR), f"{name} volume")
        groups.append(g)
    return groups


def summary_section(groups: Sequence[Group]) -> list[str]:
    out = ["99mTc-GSA SPECT targets (planning CT)", ""]
    for g in groups:
        out.append(f"{g.identifier[len(GROUP_PREFIX):]:<8}{fmt(g.get(VOLUME), 9)} cm3")
    return out
