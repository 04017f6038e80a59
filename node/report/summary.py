"""The case summary as pages a person reads on any PACS viewer: monospaced tables rendered to RGB.

The content is the same report groups the SR holds, pivoted into tables (tumours, perfusion ROIs, inputs,
volumes) plus the analyses' warnings. Long cases continue on further pages of the same series.
"""
from __future__ import annotations

import datetime as _dt
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from node.derived import NOT_FOR_DIAGNOSIS
from node.report.capture import figure_rgb
from node.report.items import Group

__all__ = ["summary_lines", "render_pages", "LINES_PER_PAGE"]

LINES_PER_PAGE = 64
_PAGE_INCHES = (8.27, 11.69)  # A4 portrait
_DPI = 110


def _fmt(v: float | None, width: int = 8) -> str:
    if v is None:
        return "-".rjust(width)
    a = abs(v)
    text = f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}"
    return text.rjust(width)


def _get(g: Group, concept: str, method: str | None = None, derivation: str | None = None) -> float | None:
    for i in g.items:
        if i.concept == concept and (method is None or i.method == method) and \
                (derivation is None or i.derivation == derivation):
            return i.value
    return None


def _maa(groups: list[Group]) -> list[str]:
    out = ["99mTc-MAA SPECT: uptake, lung shunt, partition model (Y-90)", ""]
    tumours = [g for g in groups if g.identifier.startswith("MAA tumour ")]
    if tumours:
        out.append(f"{'tumour':<10}{'vol mL':>8}{'T/N':>8}{'T/N raw':>8}{'dose Gy':>8}"
                   f"{'ALP':>8}{'PVP':>8}{'HPI %':>8}")
        for g in tumours:
            methods = [i.method for i in g.items if i.concept == "ALP"]
            method = "max-slope" if "max-slope" in methods else (methods[0] if methods else None)
            name = g.identifier[len("MAA tumour "):][:10]
            out.append(f"{name:<10}{_fmt(_get(g, 'volume'))}{_fmt(_get(g, 'tn_ratio'))}"
                       f"{_fmt(_get(g, 'tn_ratio_uncorrected'))}{_fmt(_get(g, 'absorbed_dose'))}"
                       f"{_fmt(_get(g, 'ALP', method))}{_fmt(_get(g, 'PVP', method))}{_fmt(_get(g, 'HPI', method))}")
        out.append("  (T/N partial-volume corrected, T/N raw = plain ratio of means; ALP/PVP in mL/min/100 mL from "
                   "the CT perfusion maps, max slope when available)")
    else:
        out.append("no tumour found")
    by_id = {g.identifier: g for g in groups}
    whole, normal = by_id.get("MAA whole liver"), by_id.get("MAA normal liver")
    lungs, act = by_id.get("MAA lungs"), by_id.get("Y-90 activity, partition model")
    out.append("")
    if whole:
        out.append(f"whole liver {_fmt(_get(whole, 'volume'), 0)} mL, overall T/N {_fmt(_get(whole, 'tn_ratio'), 0)}")
    if normal:
        out.append(f"normal liver {_fmt(_get(normal, 'volume'), 0)} mL, "
                   f"dose {_fmt(_get(normal, 'absorbed_dose'), 0)} Gy")
    if lungs:
        lsf = next((i for i in lungs.items if i.concept == "lsf"), None)
        out.append(f"lung shunt fraction {_fmt(lsf.value if lsf else None, 0)} %"
                   f" ({lsf.label[5:-1] if lsf else 'not available'})")
        out.append(f"lungs {_fmt(_get(lungs, 'mass'), 0)} g, dose {_fmt(_get(lungs, 'absorbed_dose'), 0)} Gy")
    if act and _get(act, "activity") is not None:
        label = next(i.label for i in act.items if i.concept == "activity")
        out.append(f"Y-90 ACTIVITY {_fmt(_get(act, 'activity'), 0)} GBq {label[len('activity '):]}")
        out.append(f"  at normal-liver limit {_fmt(_get(act, 'activity_normal_limit'), 0)} GBq, "
                   f"at lung limit {_fmt(_get(act, 'activity_lung_limit'), 0)} GBq")
    else:
        out.append("Y-90 activity: NOT COMPUTED (no lung shunt fraction)")
    corr = by_id.get("MAA T/N vs tumour ALP")
    if corr:
        out.append("; ".join(i.label + " = " + _fmt(i.value, 0) for i in corr.items))
    return out


def _perfusion(groups: list[Group]) -> list[str]:
    out = ["CT perfusion", ""]
    inputs = [g for g in groups if g.identifier.startswith("CT perfusion input ")]
    if inputs:
        out.append(f"{'input':<16}{'peak HU':>9}{'t peak s':>9}{'vol mL':>9}")
        for g in inputs:
            out.append(f"{g.identifier[len('CT perfusion input '):][:16]:<16}{_fmt(_get(g, 'peak_enhancement'), 9)}"
                       f"{_fmt(_get(g, 'time_to_peak'), 9)}{_fmt(_get(g, 'volume'), 9)}")
        t_spl = next((_get(g, "t_spl") for g in inputs if _get(g, "t_spl") is not None), None)
        if t_spl is not None:
            out.append(f"arterial/portal split t_spl = {_fmt(t_spl, 0)} s")
    rois = [g for g in groups if g.identifier.startswith("CT perfusion ROI ")]
    if rois:
        out += ["", f"{'ROI':<14}{'method':<10}" + "".join(f"{p:>13}" for p in ("ALP", "PVP", "TLP", "HPI %")),
                "  value of the ROI's mean curve +- 1 SD of image noise; ALP/PVP/TLP in mL/min/100 mL;",
                "  n.m. = not measurable at this noise or acquisition (reason in the SR)"]
        for g in rois:
            for method in ("max-slope", "discm"):
                cells = []
                for p in ("ALP", "PVP", "TLP", "HPI"):
                    item = next((i for i in g.items if i.concept == p and i.method == method and i.derivation is None),
                                None)
                    if item is None:
                        cells.append("-".rjust(13))
                    elif item.not_measurable:
                        cells.append("n.m.".rjust(13))
                    else:
                        sd = "" if item.uncertainty is None else f"+-{_fmt(item.uncertainty, 0)}"
                        cells.append(f"{_fmt(item.value, 0)}{sd}".rjust(13))
                if any(c.strip() != "-" for c in cells):
                    out.append(f"{g.identifier[len('CT perfusion ROI '):][:14]:<14}{method:<10}" + "".join(cells))
    return out


def _gsa(groups: list[Group]) -> list[str]:
    out = ["99mTc-GSA SPECT targets (planning CT)", ""]
    for g in groups:
        out.append(f"{g.identifier[len('GSA '):]:<8}{_fmt(_get(g, 'volume'), 9)} cm3")
    return out


def summary_lines(case_id: str, groups: Sequence[Group], warnings: Mapping[str, Sequence[str]]) -> list[str]:
    """The text of the summary (one string per line)."""
    lines = [f"liver-node case report   case {case_id}",
             f"created {_dt.datetime.now():%Y-%m-%d %H:%M}   {NOT_FOR_DIAGNOSIS}", "=" * 78]
    sections = {"maa": _maa, "perfusion": _perfusion, "gsa": _gsa}
    for wf, render in sections.items():
        mine = [g for g in groups if g.workflow == wf]
        if not mine and not warnings.get(wf):
            continue
        lines += [""] + (render(mine) if mine else [f"{wf}: no measurements"])
        for w in warnings.get(wf, []):
            lines.append(f"! {w}")
    lines += ["", "All values with methods and units: see the structured report (SR) of this case."]
    return lines


def _wrap(lines: Sequence[str], width: int = 96) -> list[str]:
    out = []
    for line in lines:
        while len(line) > width:
            cut = line.rfind(" ", 0, width)
            cut = cut if cut > 20 else width
            out.append(line[:cut])
            line = "    " + line[cut:].lstrip()
        out.append(line)
    return out


def render_pages(lines: Sequence[str]) -> list[np.ndarray]:
    """RGB pages (A4 portrait, white) of the monospaced lines, LINES_PER_PAGE per page, numbered."""
    wrapped = _wrap(lines)
    chunks = [wrapped[i:i + LINES_PER_PAGE] for i in range(0, len(wrapped), LINES_PER_PAGE)] or [[]]
    pages = []
    for n, chunk in enumerate(chunks, start=1):
        fig = Figure(figsize=_PAGE_INCHES, dpi=_DPI, facecolor="white")
        fig.text(0.05, 0.97, "\n".join(chunk), family="monospace", fontsize=8.2, va="top", ha="left")
        fig.text(0.95, 0.015, f"page {n}/{len(chunks)}", fontsize=8, ha="right", color="dimgray")
        pages.append(figure_rgb(fig))
    return pages
