"""The GSA workflow's part of the case report: one group per structure (volume), and its summary section."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom import Dataset

from node.gsa.measurements import GsaMeasurements
from node.report.codes import LIVER, VOLUME
from node.report.groups import Coded, Group, private
from node.report.summary import CM3, Column, Note, SummaryBlock, Table, number
from node.workflow import WorkflowResult

__all__ = ["report_groups", "summary_section", "PROCEDURE", "GROUP_PREFIX"]

#: LOINC "SPECT Liver W Tc-99m IV" (99mTc-GSA is given intravenously): the imaging procedure reported.
PROCEDURE = Coded("24817-9", "LN", "SPECT Liver W Tc-99m IV")
GROUP_PREFIX = "GSA "
_METHODS = {
    "FLS": private("LN-M-FLS", "GSA SPECT >= threshold x liver maximum"),
    "ITV": private("LN-M-ITV", "Whole liver minus FLS"),
    "PTV": private("LN-M-PTV", "ITV grown by an isotropic margin"),
}
_LIVER_CONTOUR = private("LN-M-LIVER", "Whole liver contour")


def _liver_source(m: GsaMeasurements) -> str:
    if m.liver_derived:
        return "planning CT: derived from the GSA SPECT uptake"
    return f"planning CT: RTSTRUCT '{m.liver_roi_name}'"


def report_groups(result: WorkflowResult[GsaMeasurements], sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
    m = result.measurements
    nm = list(sources.get("spect-gsa", []))[:1]
    params = [f"FLS threshold = {m.fls_threshold_fraction} x liver maximum", f"PTV margin (mm) = {m.ptv_margin_mm}",
              f"liver source = {m.liver_source}", f"method = {m.method}"]
    if m.small_parts is not None:
        params.append(f"small parts: FLS/ITV parts < {m.small_parts.min_part_cm3:g} cm3 and contours < "
                      f"{m.small_parts.min_contour_mm2:g} mm2 per slice join the neighbouring structure "
                      f"(ITV {m.small_parts.itv_change_fraction:+.2%}, PTV {m.small_parts.ptv_change_fraction:+.2%})")
    groups = []
    for name, volume in m.volumes_cm3.items():
        region = m.liver_roi_name if name == "liver" else name
        g = Group("gsa", f"{region} (GSA, planning CT)", LIVER, None, sources=nm, parameters=params,
                  region="Liver" if name == "liver" else region,
                  region_source=_liver_source(m) if name == "liver" else "planning CT, GSA targets")
        g.add(VOLUME, volume, "cm3", _METHODS.get(name, _LIVER_CONTOUR), f"{name} volume")
        groups.append(g)
    return groups


def summary_section(groups: Sequence[Group]) -> list[SummaryBlock]:
    by_region = {g.region: g for g in groups}
    threshold = margin = ""
    for g in groups:
        for p in g.parameters:
            if p.startswith("FLS threshold = "):
                threshold = f"{100 * float(p.split('=')[1].split('x')[0]):g} %"
            elif p.startswith("PTV margin (mm) = "):
                margin = f"{float(p.split('=')[1]):g} mm"
    meaning = {"Liver": "whole liver", "FLS": f"functional liver: uptake >= {threshold or 'threshold'} of liver max",
               "ITV": "liver - FLS (to treat)", "PTV": f"ITV + {margin or 'margin'}"}
    rows = []
    for region in ("Liver", "FLS", "ITV", "PTV"):
        found = by_region.get(region)
        if found is not None:
            item = found.item(VOLUME)
            rows.append((region, meaning[region], number(item.value if item else None, "cm3")))
    blocks: list[SummaryBlock] = [Table((Column("structure", align="l"), Column("definition", align="l", width=3.2),
                                         Column("volume", CM3)), tuple(rows))]
    small = next((p for g in groups for p in g.parameters if p.startswith("small parts: ")), None)
    if small:
        blocks.append(Note(small[0].upper() + small[1:] + "."))
    blocks.append(Note("RTSTRUCT sent to the planning system, UNAPPROVED: review and approve it there."))
    return blocks
