"""The CT perfusion workflow's part of the case report: input curves and region statistics, and its summary.

Its coded concepts and methods are here too; the MAA workflow (which reports perfusion values per tumour)
imports them from this module.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

from node.perfusion.measurements import PerfusionMeasurements
from node.report.codes import AORTA, LIVER, MEAN_TRANSIT_TIME, PORTAL_VEIN, REGION_VOLUME, SPLEEN, TUMOUR, VOLUME
from node.report.groups import Coded, Group, fmt, nearest_position, private
from node.workflow import WorkflowResult

__all__ = ["PROCEDURE", "PARAMETER_CONCEPTS", "PERFUSION_UNITS", "MAX_SLOPE", "DISCM", "METHOD_CODES",
           "report_groups", "summary_section"]

PROCEDURE = private("LN-P-CTP", "Liver CT perfusion")

#: Units of the perfusion parameters (as the Parametric Maps declare them).
PERFUSION_UNITS = {"ALP": "mL/min/(100.mL)", "PVP": "mL/min/(100.mL)", "TLP": "mL/min/(100.mL)", "HPI": "%",
                   "DV": "%", "MTT": "s"}
PARAMETER_CONCEPTS: dict[str, Coded] = {
    "ALP": private("LN-ALP", "Arterial liver perfusion"),
    "PVP": private("LN-PVP", "Portal venous perfusion"),
    "TLP": private("LN-TLP", "Total liver perfusion"),
    "HPI": private("LN-HPI", "Hepatic perfusion index"),
    "DV": private("LN-DV", "Distribution volume"),
    "MTT": MEAN_TRANSIT_TIME,
}
MAX_SLOPE = private("LN-M-MAXSL", "Dual-input maximum slope (Blomley, direct)")
DISCM = private("LN-M-DISCM", "Dual-input single-compartment model (Materne)")
#: Method names as the perfusion records and Parametric Maps spell them -> method code.
METHOD_CODES: dict[str, Coded] = {"max-slope": MAX_SLOPE, "maxslope": MAX_SLOPE, "discm": DISCM}

ANALYSED_VOLUME = private("LN-VOLA", "Analysed volume")
PEAK_ENHANCEMENT = private("LN-PEAK", "Peak contrast enhancement")
TIME_TO_PEAK = private("LN-TTP", "Time to peak enhancement")
T_SPL = private("LN-TSPL", "Arterial/portal phase split time")
CURVE_PEAK = private("LN-M-PEAK", "Peak of the ROI mean time-attenuation curve")

_INPUT_SITES = {"aorta": AORTA, "portal_vein": PORTAL_VEIN, "spleen": SPLEEN}
_TUMOUR_NAME = re.compile(r"tum|lesion|gtv|hcc|met|nodul|^t\d+$|^h\d+$", re.IGNORECASE)
INPUT_PREFIX, ROI_PREFIX = "CT perfusion input ", "CT perfusion ROI "


def _params(prefix: str, values: Mapping[str, Any]) -> list[str]:
    return [f"{prefix}{k} = {v}" for k, v in values.items() if not isinstance(v, dict | list)]


def report_groups(result: WorkflowResult[PerfusionMeasurements],
                  sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
    m = result.measurements
    ct = list(sources.get("ct-perfusion", []))
    maps = [o.dataset for o in result.outputs if o.kind == "parametric-map"]
    method_params = [p for name, params in m.methods.items() for p in _params(f"{name}: ", params)]
    method_params.append(f"uncertainty = 1 SD of image noise (and model misfit); not measurable when the 95 % "
                         f"interval spans more than {100 * m.tolerance:.0f} % of the value")
    groups = []
    for name, roi in m.inputs.items():
        g = Group("perfusion", f"{INPUT_PREFIX}{name.replace('_', ' ')}", _INPUT_SITES.get(name), None,
                  sources=nearest_position(ct, roi.centre_mm),
                  parameters=[f"ROI source = {roi.source}", f"ROI centre (mm) = {roi.centre_mm}"])
        g.add(PEAK_ENHANCEMENT, roi.peak_enhancement_hu, "[hnsf'U]", CURVE_PEAK, "peak enhancement")
        g.add(TIME_TO_PEAK, roi.peak_time_s, "s", CURVE_PEAK, "time to peak")
        g.add(VOLUME, roi.volume_ml, "mL", REGION_VOLUME, "ROI volume")
        if name == "spleen":
            g.add(T_SPL, m.t_spl_s, "s", CURVE_PEAK, "phase split t_spl")
        groups.append(g)
    for roi_name, stats in m.regional_statistics.items():
        g = Group("perfusion", f"{ROI_PREFIX}{roi_name}", LIVER,
                  TUMOUR if _TUMOUR_NAME.search(roi_name) else None, sources=maps, parameters=list(method_params))
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
                    g.add(concept, v.value, unit, code, f"{param} (ROI curve, {method})", uncertainty=v.sd,
                          not_measurable=flag)
                if flag:
                    g.parameters.append(f"{param} ({method}) not measurable: {flag}")
                g.add(concept, value.mean, unit, code, f"{param} mean ({method})", "mean", not_measurable=flag)
                g.add(concept, value.sd, unit, code, f"{param} SD ({method})", "sd")
        groups.append(g)
    return groups


def summary_section(groups: Sequence[Group]) -> list[str]:
    out = ["CT perfusion", ""]
    inputs = [g for g in groups if g.identifier.startswith(INPUT_PREFIX)]
    if inputs:
        out.append(f"{'input':<16}{'peak HU':>9}{'t peak s':>9}{'vol mL':>9}")
        for g in inputs:
            out.append(f"{g.identifier[len(INPUT_PREFIX):][:16]:<16}{fmt(g.get(PEAK_ENHANCEMENT), 9)}"
                       f"{fmt(g.get(TIME_TO_PEAK), 9)}{fmt(g.get(VOLUME), 9)}")
        t_spl = next((g.get(T_SPL) for g in inputs if g.get(T_SPL) is not None), None)
        if t_spl is not None:
            out.append(f"arterial/portal split t_spl = {fmt(t_spl, 0)} s")
    rois = [g for g in groups if g.identifier.startswith(ROI_PREFIX)]
    if rois:
        out += ["", f"{'ROI':<14}{'method':<10}" + "".join(f"{p:>13}" for p in ("ALP", "PVP", "TLP", "HPI %")),
                "  value of the ROI's mean curve +- 1 SD of image noise; ALP/PVP/TLP in mL/min/100 mL;",
                "  n.m. = not measurable at this noise or acquisition (reason in the SR)"]
        for g in rois:
            for method in ("max-slope", "discm"):
                cells = []
                for p in ("ALP", "PVP", "TLP", "HPI"):
                    item = g.item(PARAMETER_CONCEPTS[p], METHOD_CODES[method])
                    if item is None:
                        cells.append("-".rjust(13))
                    elif item.not_measurable:
                        cells.append("n.m.".rjust(13))
                    else:
                        sd = "" if item.uncertainty is None else f"+-{fmt(item.uncertainty, 0)}"
                        cells.append(f"{fmt(item.value, 0)}{sd}".rjust(13))
                if any(c.strip() != "-" for c in cells):
                    out.append(f"{g.identifier[len(ROI_PREFIX):][:14]:<14}{method:<10}" + "".join(cells))
    return out
