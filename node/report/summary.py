"""The case summary as pages a person reads on any PACS viewer: monospaced tables rendered to RGB.

The content is the same report groups the SR holds, pivoted into tables by each workflow
(``Workflow.summary_section``), plus the analyses' warnings. Long cases continue on further pages of the same
series.
"""
from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

from node.derived import NOT_FOR_DIAGNOSIS
from node.imaging.capture import figure_rgb

__all__ = ["summary_lines", "render_pages", "LINES_PER_PAGE"]

LINES_PER_PAGE = 64
_PAGE_INCHES = (8.27, 11.69)  # A4 portrait
_DPI = 110


def summary_lines(case_id: str, sections: Sequence[tuple[Sequence[str], Sequence[str]]]) -> list[str]:
    """The text of the summary (one string per line): each workflow's (section lines, warnings), in order."""
    lines = [f"liver-node case report   case {case_id}",
             f"created {_dt.datetime.now():%Y-%m-%d %H:%M}   {NOT_FOR_DIAGNOSIS}", "=" * 78]
    for section, warnings in sections:
        lines += [""] + list(section)
        lines += [f"! {w}" for w in warnings]
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
