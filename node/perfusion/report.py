"""The CT perfusion workflow's part of the case report: input curves and region statistics, and its summary.

Its own coded concepts are here; the perfusion parameters and methods are in node.report.codes, since the MAA
workflow reports perfusion values per tumour with the same codes.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

from node.perfusion.measurements import PerfusionMeasurements, flag_text
from node.perfusion.names import METHOD_LABEL, method_label
from node.report.codes import (
    AORTA,
    LIVER,
    METHOD_CODES,
    PARAMETER_CONCEPTS,
    PERFUSION_UNITS,
    PORTAL_VEIN,
    REGION_VOLUME,
    SPLEEN,
    TIME_TO_PEAK,
    TUMOUR,
    VOLUME,
)
from node.report.groups import Coded, Group, nearest_position, private
from node.report.summary import CM3, Column, Note, SummaryBlock, Table, number, value_text
from node.workflow import WorkflowResult

__all__ = ["PROCEDURE", "report_groups", "summary_section"]

#: LOINC "CT Liver W contrast IV": the imaging procedure reported (no LOINC code names liver CT perfusion).
PROCEDURE = Coded("24815-3", "LN", "CT Liver W contrast IV")

ANALYSED_VOLUME = private("LN-VOLA", "Analysed volume")
PEAK_ENHANCEMENT = private("LN-PEAK", "Peak contrast enhancement")
T_SPL = private("LN-TSPL", "Arterial/portal phase split time")
CURVE_PEAK = private("LN-M-PEAK", "Peak of the ROI mean time-attenuation curve")

_INPUT_SITES = {"aorta": AORTA, "portal_vein": PORTAL_VEIN, "spleen": SPLEEN}
_TUMOUR_NAME = re.compile(r"tum|lesion|gtv|hcc|met|nodul|^t\d+$|^h\d+$", re.IGNORECASE)
INPUT_SUFFIX, ROI_SUFFIX = " (CT perfusion input)", " (CT perfusion)"


def _params(prefix: str, values: Mapping[str, Any]) -> list[str]:
    return [f"{prefix}{k} = {v}" for k, v in values.items() if not isinstance(v, dict | list)]


def report_groups(result: WorkflowResult[PerfusionMeasurements],
                  sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
    m = result.measurements
    ct = list(sources.get("ct-perfusion", []))
    maps = [o.dataset for o in result.outputs if o.kind == "parametric-map"]
    method_params = [p for name, params in m.methods.items() for p in _params(f"{method_label(name)}: ", params)]
    method_params.append(f"uncertainty = 1 SD of image noise (and model misfit); not measurable when the 95 % "
                         f"interval spans more than {100 * m.tolerance:.0f} % of the value")
    groups = []
    for name, roi in m.inputs.items():
        label = name.replace("_", " ")
        g = Group("perfusion", f"{label}{INPUT_SUFFIX}", _INPUT_SITES.get(name), None,
                  sources=nearest_position(ct, roi.centre_mm),
                  parameters=[f"ROI source = {roi.source}", f"ROI centre (mm) = {roi.centre_mm}"],
                  region=label, region_source=f"perfusion CT: {roi.source}")
        g.add(PEAK_ENHANCEMENT, roi.peak_enhancement_hu, "[hnsf'U]", CURVE_PEAK, "peak enhancement")
        g.add(TIME_TO_PEAK, roi.peak_time_s, "s", CURVE_PEAK, "time to peak")
        g.add(VOLUME, roi.volume_ml, "mL", REGION_VOLUME, "ROI volume")
        if name == "spleen":
            g.add(T_SPL, m.t_spl_s, "s", CURVE_PEAK, "phase split t_spl")
        groups.append(g)
    for roi_name, stats in m.regional_statistics.items():
        g = Group("perfusion", f"{roi_name}{ROI_SUFFIX}", LIVER,
                  TUMOUR if _TUMOUR_NAME.search(roi_name) else None, sources=maps, parameters=list(method_params),
                  region=roi_name, region_source="perfusion CT: RTSTRUCT")
        g.add(VOLUME, stats.volume_ml, "mL", REGION_VOLUME, "contoured volume")
        g.add(ANALYSED_VOLUME, stats.analysed_volume_ml, "mL", REGION_VOLUME, "analysed volume")
        for method in ("max-slope", "discm"):
            for param, value in stats.maps.get(method, {}).items():
                concept, unit = PARAMETER_CONCEPTS.get(param), PERFUSION_UNITS.get(param)
                if concept is None or unit is None:
                    continue
                code = METHOD_CODES[method]
                # the region value (the ROI mean curve's) with its 1-SD noise, qualified where it is not measurable
                v = stats.values.get(method, {}).get(param)
                flag = None if v is None or v.measurable else (v.reason or "not measurable")
                if v is not None:
                    g.add(concept, v.value, unit, code, f"{param} (ROI curve, {METHOD_LABEL[method]})",
                          uncertainty=v.sd, not_measurable=flag)
                if flag:
                    g.parameters.append(flag_text(roi_name, param, method, flag))
                g.add(concept, value.mean, unit, code, f"{param} mean ({METHOD_LABEL[method]})", "mean",
                      not_measurable=flag)
                g.add(concept, value.sd, unit, code, f"{param} SD ({METHOD_LABEL[method]})", "sd")
        groups.append(g)
    return groups


def summary_section(groups: Sequence[Group]) -> list[SummaryBlock]:
    blocks: list[SummaryBlock] = []
    inputs = [g for g in groups if g.identifier.endswith(INPUT_SUFFIX)]
    if inputs:
        rows: list[tuple[str, ...]] = []
        for g in inputs:
            peak, ttp, vol = g.item(PEAK_ENHANCEMENT), g.item(TIME_TO_PEAK), g.item(VOLUME)
            rows.append((g.region, number(peak.value if peak else None, "[hnsf'U]", 0),
                         number(ttp.value if ttp else None, "s"), number(vol.value if vol else None, "cm3")))
        t_spl = next((i for g in inputs if (i := g.item(T_SPL)) is not None), None)
        blocks.append(Table((Column("input curve", align="l", width=1.4), Column("peak enhancement", "HU"),
                             Column("time to peak", "s"), Column("ROI volume", CM3)), tuple(rows),
                            title="Input curves",
                            notes=(f"Arterial and portal phases split at the spleen's peak, {number(t_spl.value, 's')} "
                                   "s.",) if t_spl else ()))
    rois = [g for g in groups if g.identifier.endswith(ROI_SUFFIX)]
    if rois:
        roi_rows: list[tuple[str, ...]] = []
        flagged: list[str] = []
        spreads: set[str] = set()
        for g in rois:
            for method in ("max-slope", "discm"):
                code = METHOD_CODES[method]
                cells = []
                for p in ("ALP", "PVP", "TLP", "HPI"):
                    concept = PARAMETER_CONCEPTS[p]
                    value = g.item(concept, code, None) or g.item(concept, code, "mean")
                    sd = g.item(concept, code, "sd") if value is not None and value.derivation == "mean" else None
                    cells.append(value_text(value, sd))
                    if value is not None:
                        spreads.add("noise" if value.derivation is None else "voxels")
                    if value is not None and value.not_measurable:
                        flagged.append(flag_text(g.region, p, method, value.not_measurable))
                if any(c != "-" for c in cells):
                    roi_rows.append((g.region, METHOD_LABEL[method], *cells))
        unit = "mL/min/100 mL"
        notes = []
        if "noise" in spreads:
            notes.append("Value of the region's mean curve \u00b1 1 SD from image noise; n.m. = not measurable "
                         "(reasons below and in the SR).")
        if "voxels" in spreads:
            notes.append("Mean of the map over the region \u00b1 SD over its voxels.")
        notes += flagged
        blocks.append(Table((Column("region", align="l", width=1.2), Column("method", align="l"),
                             Column("ALP", unit, width=1.3), Column("PVP", unit, width=1.3),
                             Column("TLP", unit, width=1.3), Column("HPI", "%", width=1.2)), tuple(roi_rows),
                            title="Regions of the perfusion RTSTRUCT",
                            notes=tuple(notes)))
    if not blocks:
        blocks.append(Note("No perfusion values."))
    return blocks
