"""The DVH page: cumulative dose-volume histograms and their figures on one page a person reads on any viewer.

Used by the three dose outputs (the Y-90 dose predicted from the MAA, predicted vs delivered after therapy, the
functional-liver dose of a GSA-guided plan); each encodes the RGB page as a Secondary Capture through
node/imaging/capture.py. Curves are drawn from every voxel's dose (node.dose.dvh convention), not from bins.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from node.dose.dvh import Dvh
from node.imaging.pages import DIM, FONT_PX, PAGE_PX, PANEL, TEXT, Identity, Page, new_page, pt, table, text_block

__all__ = ["Curve", "Limit", "render_dvh_page", "PALETTE"]

#: Distinguishable on the pages' black background (tab10 without its dark blue, brown and grey).
PALETTE = ("#4fa3e0", "#ff6b6b", "#5cd65c", "#ffa94d", "#c29ff0", "#e377c2", "#17becf", "#d4d46a", "#bdbdbd")


@dataclass(frozen=True)
class Curve:
    """One DVH on the plot: `style` "-" (solid) or "--" (dashed, e.g. the predicted dose beside the delivered)."""

    label: str
    dvh: Dvh
    color: str
    style: str = "-"


@dataclass(frozen=True)
class Limit:
    """A vertical reference line (a dose limit or goal) with its label."""

    dose_gy: float
    label: str


def _points(dvh: Dvh, top: float) -> tuple[np.ndarray, np.ndarray]:
    step = max(top / 600.0, 1e-3)
    doses, volume = dvh.curve(step)
    return np.append(doses, doses[-1] + step), np.append(volume, 0.0)


def render_dvh_page(identity: Identity, title: str, subtitle: str, curves: Sequence[Curve], header: Sequence[str],
                    rows: Sequence[Sequence[str]], notes: Sequence[str], limits: Sequence[Limit] = (),
                    y_label: str = "volume receiving at least the dose (%)") -> Page:
    """The page in the shared page look (node.imaging.pages: header with the patient, DERIVED footer): the DVH
    plot on the left, the table of figures on the right, notes (method, activity, warnings; "! " = a flag) below.
    Empty DVHs are left out of the plot."""
    frame = new_page(identity, title, subtitle)
    ax = frame.axes(100, 130, 780, 520)
    ax.set_facecolor(PANEL)
    shown = [c for c in curves if not c.dvh.empty]
    top = max((c.dvh.max_gy() for c in shown), default=1.0)
    for c in shown:
        x, y = _points(c.dvh, top)
        ax.plot(x, y, c.style, color=c.color, linewidth=2.0, label=c.label)
    for limit in limits:
        ax.axvline(limit.dose_gy, color=DIM, linewidth=1.0, linestyle=":")
        ax.text(limit.dose_gy, 2.0, f" {limit.label}", rotation=90, fontsize=pt(FONT_PX["small"]), va="bottom",
                ha="right", color=DIM)
    ax.set_xlim(0.0, max(top * 1.02, max((lim.dose_gy for lim in limits), default=0.0) * 1.05, 1.0))
    ax.set_ylim(0.0, 100.0)
    ax.set_xlabel("absorbed dose (Gy)", color=TEXT, fontsize=pt(FONT_PX["body"]))
    ax.set_ylabel(y_label, color=TEXT, fontsize=pt(FONT_PX["body"]))
    ax.tick_params(colors=TEXT, labelsize=pt(FONT_PX["small"]))
    for spine in ax.spines.values():
        spine.set_edgecolor(DIM)
    ax.grid(True, linewidth=0.5, alpha=0.35, color=DIM)
    if shown:
        legend = ax.legend(fontsize=pt(FONT_PX["small"]), loc="upper right", framealpha=0.9, facecolor=PANEL,
                           edgecolor=DIM)
        for text in legend.get_texts():
            text.set_color(TEXT)
    cells = [list(header)] + [list(r) for r in rows]
    widths = [max(60.0, 10.0 * max(len(str(row[i])) for row in cells) + 24.0) for i in range(len(header))]
    scale = min(1.0, (PAGE_PX[0] - 960 - 24) / sum(widths))
    columns = [(str(h), w * scale, "l" if i == 0 else "r") for i, (h, w) in enumerate(zip(header, widths,
                                                                                          strict=True))]
    table(frame, 960, 130, columns, [[str(v) for v in r] for r in rows], row_px=28.0)
    text_block(frame, 24, 760, [("flag", n[2:]) if n.startswith("! ") else ("small", n) for n in notes[:12]],
               PAGE_PX[0] - 48, line_px=22.0)
    return frame.render()
