"""The DVH page: cumulative dose-volume histograms and their figures on one page a person reads on any viewer.

Used by the three dose outputs (the Y-90 dose predicted from the MAA, predicted vs delivered after therapy, the
functional-liver dose of a GSA-guided plan); each encodes the RGB page as a Secondary Capture through
node/imaging/capture.py. Curves are drawn from every voxel's dose (node.dose.dvh convention), not from bins.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from node.derived import NOT_FOR_DIAGNOSIS
from node.dose.dvh import Dvh
from node.imaging.capture import figure_rgb

__all__ = ["Curve", "Limit", "render_dvh_page", "PALETTE"]

_PAGE_INCHES = (11.69, 8.27)  # A4 landscape
_DPI = 100
#: Distinguishable on white and in grey print (tab10 without the pale ones).
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")


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


def render_dvh_page(title: str, subtitle: str, curves: Sequence[Curve], header: Sequence[str],
                    rows: Sequence[Sequence[str]], notes: Sequence[str], limits: Sequence[Limit] = (),
                    y_label: str = "volume receiving at least the dose (%)") -> np.ndarray:
    """The page as an (H, W, 3) uint8 RGB array: the DVH plot on the left, the table of figures on the right,
    notes (method, activity, warnings) below. Empty DVHs are left out of the plot."""
    fig = Figure(figsize=_PAGE_INCHES, dpi=_DPI, facecolor="white")
    fig.text(0.03, 0.965, title, fontsize=14, weight="bold", va="top")
    fig.text(0.03, 0.925, f"{subtitle}   {NOT_FOR_DIAGNOSIS}", fontsize=9, va="top", color="dimgray")
    ax = fig.add_axes((0.06, 0.36, 0.45, 0.53))
    shown = [c for c in curves if not c.dvh.empty]
    top = max((c.dvh.max_gy() for c in shown), default=1.0)
    for c in shown:
        x, y = _points(c.dvh, top)
        ax.plot(x, y, c.style, color=c.color, linewidth=1.6, label=c.label)
    for limit in limits:
        ax.axvline(limit.dose_gy, color="black", linewidth=0.8, linestyle=":")
        ax.text(limit.dose_gy, 2.0, f" {limit.label}", rotation=90, fontsize=7, va="bottom", ha="right",
                color="dimgray")
    ax.set_xlim(0.0, max(top * 1.02, max((lim.dose_gy for lim in limits), default=0.0) * 1.05, 1.0))
    ax.set_ylim(0.0, 100.0)
    ax.set_xlabel("absorbed dose (Gy)")
    ax.set_ylabel(y_label)
    ax.grid(True, linewidth=0.4, alpha=0.6)
    if shown:
        ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
    table = [list(header)] + [list(r) for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    lines = ["  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(row, widths,
                                                                                                 strict=True)))
             for row in table]
    lines.insert(1, "-" * len(lines[0]))
    fig.text(0.55, 0.89, "\n".join(lines), family="monospace", fontsize=8.0, va="top")
    wrapped: list[str] = []
    for note in notes:
        while len(note) > 170:
            cut = note.rfind(" ", 0, 170)
            cut = cut if cut > 40 else 170
            wrapped.append(note[:cut])
            note = "    " + note[cut:].lstrip()
        wrapped.append(note)
    fig.text(0.03, 0.28, "\n".join(wrapped[:22]), fontsize=7.5, va="top", family="monospace")
    return figure_rgb(fig)
