"""The measurements of a case, gathered from the analyses' records into report groups.

Each analysis keeps its figures in `AnalysisResult.measurements` (JSON); this module reads them (tolerating
absent keys: a figure that is missing is simply not reported) into neutral groups of numeric items with a
UCUM unit and a method, one group per region or topic, with the images the figures were measured on.
The SR writer and the summary page both work from these groups.
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from pydicom import Dataset

from node.results import AnalysisResult

__all__ = ["Item", "Group", "collect_groups", "referenced", "workflow_of", "PERFUSION_UNITS"]

#: Units of the perfusion parameters (as the Parametric Maps declare them).
PERFUSION_UNITS = {"ALP": "mL/min/(100.mL)", "PVP": "mL/min/(100.mL)", "TLP": "mL/min/(100.mL)", "HPI": "%",
                   "DV": "%", "MTT": "s"}
_PERFUSION_CONCEPT = {"MTT": "mtt"}
_MAP_METHOD = {"maxslope": "max-slope", "max-slope": "max-slope", "discm": "discm"}
_LIVER_NAME = re.compile(r"liver|leber|foie|higado", re.IGNORECASE)
_TUMOUR_NAME = re.compile(r"tum|lesion|gtv|hcc|met|nodul|^t\d+$|^h\d+$", re.IGNORECASE)
TISSUE_G_PER_ML = 1.03


@dataclass(frozen=True)
class Item:
    """One numeric measurement: concept key (codes.CONCEPTS), value, UCUM unit, method key (codes.METHODS)."""

    concept: str
    value: float
    unit: str
    method: str
    label: str  # for people: e.g. "T/N", "ALP mean (max slope)"
    derivation: str | None = None  # "mean" or "sd"
    uncertainty: float | None = None  # 1-SD of the value from image noise (same unit)
    not_measurable: str | None = None  # why the value cannot be trusted (then it carries a qualifier)


@dataclass
class Group:
    """Measurements of one region or topic (one TID 1501 group)."""

    workflow: str  # "perfusion", "gsa" or "maa"
    identifier: str  # tracking identifier, unique in the report
    site: str | None  # finding site key (codes._SITES)
    finding: str | None  # finding type key (e.g. "tumour")
    items: list[Item] = field(default_factory=list)
    sources: list[Dataset] = field(default_factory=list)
    parameters: list[str] = field(default_factory=list)  # method details (algorithm parameters)

    def add(self, concept: str, value: Any, unit: str, method: str, label: str, derivation: str | None = None,
            scale: float = 1.0, uncertainty: float | None = None, not_measurable: str | None = None) -> None:
        """Append an item when `value` is a finite number (None and NaN are skipped)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            return
        sd = float(uncertainty) * scale if isinstance(uncertainty, (int, float)) and math.isfinite(uncertainty) \
            else None
        self.items.append(Item(concept, float(value) * scale, unit, method, label, derivation, sd, not_measurable))


def workflow_of(key: str, result: AnalysisResult) -> str | None:
    """'perfusion', 'gsa' or 'maa' from the results key or the analysis name."""
    for text in (key, result.name):
        t = str(text).lower()
        if "perfusion" in t:
            return "perfusion"
        if "gsa" in t:
            return "gsa"
        if "maa" in t:
            return "maa"
    return None


def _params(prefix: str, values: Mapping[str, Any]) -> list[str]:
    out = []
    for k, v in values.items():
        if isinstance(v, (dict, list)):
            continue
        out.append(f"{prefix}{k} = {v}")
    return out


def _nearest_position(datasets: Sequence[Dataset], centre: Sequence[float] | None) -> list[Dataset]:
    """All instances (every time point) at the slice position nearest `centre` (the curve's source images)."""
    usable = [ds for ds in datasets if "ImagePositionPatient" in ds and "ImageOrientationPatient" in ds]
    if not usable or centre is None:
        return []
    iop = np.asarray(usable[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    level = float(np.asarray(centre, dtype=float) @ normal)
    pos = np.array([float(np.asarray(ds.ImagePositionPatient, dtype=float) @ normal) for ds in usable])
    best = pos[np.argmin(np.abs(pos - level))]
    return [ds for ds, p in zip(usable, pos) if abs(p - best) < 1e-3]


def _perfusion(result: AnalysisResult, sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
    m = result.measurements
    ct = list(sources.get("ct-perfusion", []))
    maps = [o.dataset for o in result.outputs if o.kind == "parametric-map"]
    methods = m.get("methods", {}) or {}
    method_params = [p for name, params in methods.items() for p in _params(f"{name}: ", params or {})]
    tolerance = m.get("perfusion_tolerance")
    if tolerance is not None:
        method_params.append(f"uncertainty = 1 SD of image noise (and model misfit); not measurable when the 95 % "
                             f"interval spans more than {100 * float(tolerance):.0f} % of the value")
    groups = []
    for name, roi in (m.get("inputs", {}) or {}).items():
        g = Group("perfusion", f"CT perfusion input {name.replace('_', ' ')}", name if name in
                  ("aorta", "portal_vein", "spleen") else None, None,
                  sources=_nearest_position(ct, roi.get("centre_mm")),
                  parameters=[f"ROI source = {roi.get('source', '')}", f"ROI centre (mm) = {roi.get('centre_mm')}"])
        g.add("peak_enhancement", roi.get("peak_enhancement_hu"), "[hnsf'U]", "curve-peak", "peak enhancement")
        g.add("time_to_peak", roi.get("peak_time_s"), "s", "curve-peak", "time to peak")
        g.add("volume", roi.get("volume_ml"), "mL", "region-volume", "ROI volume")
        if name == "spleen":
            g.add("t_spl", m.get("t_spl_s"), "s", "curve-peak", "phase split t_spl")
        groups.append(g)
    for roi, entry in (m.get("regional_statistics", {}) or {}).items():
        site = "liver" if _LIVER_NAME.search(roi) else None
        g = Group("perfusion", f"CT perfusion ROI {roi}", site or "liver",
                  "tumour" if _TUMOUR_NAME.search(roi) else None, sources=maps, parameters=list(method_params))
        g.add("volume", entry.get("volume_ml"), "mL", "region-volume", "contoured volume")
        g.add("analysed_volume", entry.get("analysed_volume_ml"), "mL", "region-volume", "analysed volume")
        qualified = entry.get("values", {}) or {}
        for method in ("max-slope", "discm"):
            for param, stats in (entry.get(method, {}) or {}).items():
                unit = PERFUSION_UNITS.get(param)
                if unit is None or not isinstance(stats, Mapping):
                    continue
                concept = _PERFUSION_CONCEPT.get(param, param)
                # the region value (the ROI mean curve's) with its 1-SD noise, flagged where it is not measurable
                v = (qualified.get(method) or {}).get(param) or {}
                flag = None if v.get("measurable", True) else str(v.get("reason") or "not measurable")
                g.add(concept, v.get("value"), unit, method, f"{param} (ROI curve, {method})",
                      uncertainty=v.get("sd"), not_measurable=flag)
                if flag:
                    g.parameters.append(f"{param} ({method}) not measurable: {flag}")
                g.add(concept, stats.get("mean"), unit, method, f"{param} mean ({method})", "mean",
                      not_measurable=flag)
                g.add(concept, stats.get("sd"), unit, method, f"{param} SD ({method})", "sd")
        groups.append(g)
    return groups


def _gsa(result: AnalysisResult, sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
    m = result.measurements
    nm = list(sources.get("spect-gsa", []))[:1]
    params = [f"FLS threshold = {m.get('fls_threshold_fraction')} x liver maximum",
              f"PTV margin (mm) = {m.get('ptv_margin_mm')}", f"liver source = {m.get('liver_source')}",
              f"method = {m.get('method', '')}"]
    methods = {"FLS": "fls-threshold", "ITV": "itv", "PTV": "ptv"}
    groups = []
    for name, volume in (m.get("volumes_cm3", {}) or {}).items():
        g = Group("gsa", f"GSA {name}", "liver", None, sources=nm, parameters=params)
        g.add("volume", volume, "cm3", methods.get(name, "liver-contour"), f"{name} volume")
        groups.append(g)
    return groups


def _maa(result: AnalysisResult, sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
    m = result.measurements
    nm = list(sources.get("spect-maa", []))[:1]
    up = m.get("uptake", {}) or {}
    plan = m.get("partition_model", {}) or {}
    shunt = m.get("lung_shunt", {}) or {}
    corr = m.get("correlation") or {}
    uptake_params = [f"method = {up.get('method', '')}", f"spill margin (mm) = {up.get('spill_margin_mm')}",
                     f"regions = {(m.get('regions') or {}).get('liver_source')} / "
                     f"{(m.get('regions') or {}).get('tumour_source')}"]
    plan_params = [f"model = {plan.get('model', '')}", f"normal liver limit (Gy) = {plan.get('normal_liver_limit_gy')}",
                   f"lung limit (Gy) = {plan.get('lung_limit_gy')}", f"limited by = {plan.get('limited_by')}",
                   f"lung mass = {plan.get('lung_mass_source')}",
                   f"densities (g/mL) = {plan.get('densities_g_per_ml')}"]
    rows = {r.get("tumour"): r for r in corr.get("rows", []) or []}
    groups = []
    for name, t in (up.get("tumours", {}) or {}).items():
        g = Group("maa", f"MAA tumour {name}", "liver", "tumour", sources=nm, parameters=uptake_params + plan_params)
        g.add("tn_ratio", t.get("tn_ratio"), "{ratio}", "tn-gtm", "T/N")
        g.add("tn_ratio_uncorrected", t.get("tn_ratio_uncorrected"), "{ratio}", "tn-plain", "T/N uncorrected")
        g.add("volume", t.get("volume_ml"), "mL", "region-volume", "volume")
        g.add("mass", t.get("volume_ml"), "g", "mass-density", "mass", scale=TISSUE_G_PER_ML)
        g.add("absorbed_dose", (plan.get("tumour_doses_gy") or {}).get(name), "Gy", "partition-model", "dose")
        for map_method, values in ((rows.get(name) or {}).get("perfusion") or {}).items():
            method = _MAP_METHOD.get(str(map_method).lower(), "max-slope")
            for param in ("ALP", "PVP", "HPI"):
                g.add(param, values.get(param), PERFUSION_UNITS[param], method, f"{param} mean ({method})", "mean")
        groups.append(g)
    g = Group("maa", "MAA normal liver", "liver", None, sources=nm, parameters=uptake_params + plan_params)
    g.add("volume", up.get("normal_liver_ml"), "mL", "region-volume", "volume")
    g.add("mass", plan.get("normal_liver_mass_kg"), "g", "mass-density", "mass", scale=1000.0)
    g.add("absorbed_dose", plan.get("normal_liver_dose_gy"), "Gy", "partition-model", "dose")
    groups.append(g)
    g = Group("maa", "MAA whole liver", "liver", None, sources=nm, parameters=uptake_params)
    g.add("volume", up.get("liver_ml"), "mL", "region-volume", "volume")
    g.add("tn_ratio", up.get("overall_tn_ratio"), "{ratio}", "tn-gtm", "overall T/N")
    groups.append(g)
    lsf_method = "lsf-spect" if shunt.get("source") == "measured on SPECT" else "lsf-config"
    g = Group("maa", "MAA lungs", "lung", None, sources=nm,
              parameters=[f"LSF source = {shunt.get('source')}", f"reason = {shunt.get('reason')}",
                          f"method = {shunt.get('method', '')}"] + plan_params)
    g.add("lsf", shunt.get("lung_shunt_fraction"), "%", lsf_method, f"LSF ({shunt.get('source')})", scale=100.0)
    g.add("volume", shunt.get("lung_volume_ml"), "mL", "region-volume", "CT lung volume")
    g.add("mass", plan.get("lung_mass_kg"), "g", "mass-density", "mass", scale=1000.0)
    g.add("absorbed_dose", plan.get("lung_dose_gy"), "Gy", "partition-model", "dose")
    groups.append(g)
    g = Group("maa", "Y-90 activity, partition model", "liver", None, sources=nm, parameters=plan_params)
    g.add("activity", plan.get("activity_gbq"), "GBq", "partition-model",
          f"activity (limited by {plan.get('limited_by')})")
    g.add("activity_normal_limit", plan.get("activity_normal_liver_limit_gbq"), "GBq", "partition-model",
          "activity at normal-liver limit")
    g.add("activity_lung_limit", plan.get("activity_lung_limit_gbq"), "GBq", "partition-model",
          "activity at lung limit")
    groups.append(g)
    pearson = corr.get("pearson_r_tn_vs_alp") or {}
    if pearson:
        g = Group("maa", "MAA T/N vs tumour ALP", "liver", "tumour", sources=nm,
                  parameters=[f"{k}: n = {v.get('n')}" for k, v in pearson.items()])
        for map_method, v in pearson.items():
            g.add("pearson_r", v.get("r"), "1", "pearson", f"r T/N vs ALP ({map_method})")
        groups.append(g)
    return groups


_EXTRACTORS = {"perfusion": _perfusion, "gsa": _gsa, "maa": _maa}
_ORDER = ("maa", "perfusion", "gsa")


def collect_groups(results: Mapping[str, AnalysisResult], sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
    """Report groups of every recognised result (MAA, perfusion, GSA order); empty groups dropped."""
    by_workflow: dict[str, list[AnalysisResult]] = defaultdict(list)
    for key, result in results.items():
        wf = workflow_of(key, result)
        if wf is not None:
            by_workflow[wf].append(result)
    groups: list[Group] = []
    for wf in _ORDER:
        for result in by_workflow.get(wf, []):
            groups += [g for g in _EXTRACTORS[wf](result, sources) if g.items]
    return groups


def referenced(groups: Iterable[Group]) -> list[Dataset]:
    """Every source dataset of the groups, once."""
    seen, out = set(), []
    for g in groups:
        for ds in g.sources:
            uid = str(ds.SOPInstanceUID)
            if uid not in seen:
                seen.add(uid)
                out.append(ds)
    return out
