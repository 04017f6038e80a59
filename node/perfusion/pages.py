"""The perfusion pages in the shared look (node.imaging.pages): colour maps over the CT, and the curves.

Map pages show each quantity of one method on one slice: colour only inside the liver (the received liver
contour, else the node's own liver mask) and only where a value was computed, over the CT in an abdominal
window, with a perceptually uniform colour scale whose range is fixed per quantity and the same for both
methods (:data:`SCALES`), a colour bar under every panel, the lesions of the perfusion RTSTRUCT outlined and
labelled with their value, orientation letters, and beside the panels the region values and why this slice
was chosen. The curve page plots the input curves, the liver and every lesion curve, the legend outside the
data, the arterial/portal split marked.

The renderers take plain arrays already on the display grid (rows = anterior to posterior, columns = patient
right to left, the radiological convention), so they know nothing of volumes or DICOM.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import ListedColormap
from matplotlib.transforms import Transform

from node.imaging.pages import (
    BACKGROUND,
    CT_WINDOW,
    DIM,
    FONT_PX,
    LABEL_GID,
    PAGE_PX,
    TEXT,
    Cell,
    Identity,
    Page,
    PageFrame,
    colour_bar,
    halo,
    new_page,
    orientation_labels,
    pt,
    table,
    text_block,
)
from node.report.summary import NOT_MEASURABLE_TEXT

__all__ = ["Scale", "SCALES", "MapSlice", "PanelGeometry", "render_map_page", "render_curve_page", "QUANTITY_WORDS",
           "LESION_COLOUR", "NOT_MEASURABLE_FILL"]


@dataclass(frozen=True)
class Scale:
    """How one quantity is shown: colour map (perceptually uniform), a fixed range in its unit, tick step."""

    cmap: str
    lo: float
    hi: float
    unit: str
    step: float

    @property
    def ticks(self) -> list[float]:
        return [float(v) for v in np.arange(self.lo, self.hi + 0.5 * self.step, self.step)]


#: One scale per quantity, the same for both methods (a lesion has the same colour on both methods' pages
#: when it has the same value). Ranges span normal liver to hypervascular tumours (mL/min/100 mL, %, s).
#: Every map is perceptually uniform and chromatic over the values it shows, so it never reads as the grey CT
#: beneath (cividis, tried for DV, runs through a near-grey middle where liver DV lies).
SCALES: dict[str, Scale] = {
    "ALP": Scale("viridis", 0.0, 100.0, "mL/min/100 mL", 20.0),
    "PVP": Scale("viridis", 0.0, 150.0, "mL/min/100 mL", 50.0),
    "TLP": Scale("viridis", 0.0, 200.0, "mL/min/100 mL", 50.0),
    "HPI": Scale("plasma", 0.0, 100.0, "%", 20.0),
    "DV": Scale("inferno", 0.0, 100.0, "%", 20.0),
    "MTT": Scale("magma", 0.0, 40.0, "s", 10.0),
}
QUANTITY_WORDS = {
    "ALP": "arterial liver perfusion", "PVP": "portal venous perfusion", "TLP": "total liver perfusion",
    "HPI": "hepatic perfusion index (arterial share)", "DV": "distribution volume", "MTT": "mean transit time",
}
#: Lesion outlines and labels: white with a black halo, readable on every colour scale.
LESION_COLOUR = "#ffffff"
#: A lesion whose value is not measurable (n.m.): grey, hatched, never in the quantity's colours.
NOT_MEASURABLE_FILL, NOT_MEASURABLE_HATCH = "#5a5a5a", "#b0b0b0"
_GRID_LEFT, _GRID_WIDTH, _GRID_TOP, _GRID_BOTTOM = 12.0, 1336.0, 102.0, 1036.0
_INFO_LEFT, _INFO_WIDTH = 1360.0, 540.0
_CAPTION_PX, _BAR_PX = 26.0, 64.0
_MAX_FLAGS = 4  # reasons listed beside the panels; the case summary and the SR list every one


@dataclass(frozen=True)
class MapSlice:
    """One slice on the display grid: CT (HU), maps (NaN where not computed), liver and lesion masks."""

    ct: np.ndarray
    maps: Mapping[str, np.ndarray]
    liver: np.ndarray
    lesions: Mapping[str, np.ndarray]
    pixel_mm: tuple[float, float]  # (row, column) spacing
    #: region -> quantity -> text of its value ("52 ± 3", "n.m."), as the report states it
    values: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    #: why the values shown as n.m. are not measurable ("Tumor 1 HPI: not measurable at this noise: ...")
    flags: Sequence[str] = ()


@dataclass(frozen=True)
class PanelGeometry:
    """Where a panel's image lies on the page: pixel box (left, top, right, bottom) and the transform of its
    data coordinates (column, row of the slice) to page pixels (origin bottom left, matplotlib's)."""

    quantity: str
    box: tuple[float, float, float, float]
    to_display: Transform
    bar: tuple[float, float, float, float]  # the quantity's colour bar (left, top, right, bottom)


def _zoom(liver: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.nonzero(liver)
    if rows.size == 0:
        return slice(0, liver.shape[0]), slice(0, liver.shape[1])
    return (slice(max(0, rows.min() - margin), min(liver.shape[0], rows.max() + margin + 1)),
            slice(max(0, cols.min() - margin), min(liver.shape[1], cols.max() + margin + 1)))


def _not_measurable(text: str | None) -> bool:
    return bool(text) and str(text).lstrip("!").startswith(NOT_MEASURABLE_TEXT)


def _label(ax: Axes, mask: np.ndarray, text: str, taken: list[tuple[float, float, float, float]]) -> None:
    """The lesion's label just above its contour, else just below, else shifted sideways: the first place whose
    box (page pixels, estimated from the text's length) meets no label already placed in `taken`."""
    rows, cols = np.nonzero(mask)
    ax.apply_aspect()  # transData as drawn
    size = FONT_PX["small"]
    w, h = 0.62 * size * len(text) + 6.0, size + 6.0
    top, bottom = int(rows.min()), int(rows.max())
    candidates = []
    for dx in (0.0, 0.6, -0.6, 1.2, -1.2):
        candidates.append((float(cols[rows == top].mean()), top - 1.0, "bottom", dx))
        candidates.append((float(cols[rows == bottom].mean()), bottom + 1.0, "top", dx))
    chosen = candidates[0]
    for c, r, va, dx in candidates:
        x, y = ax.transData.transform((c, r))
        x += dx * w
        box = (x - w / 2, y if va == "bottom" else y - h, x + w / 2, y + h if va == "bottom" else y)
        if not any(box[0] < t[2] and t[0] < box[2] and box[1] < t[3] and t[1] < box[3] for t in taken):
            chosen = (c, r, va, dx)
            taken.append(box)
            break
    else:
        taken.append((0.0, 0.0, 0.0, 0.0))
    c, r, va, dx = chosen
    x, y = ax.transData.transform((c, r))
    c, r = ax.transData.inverted().transform((x + dx * w, y))
    ax.text(c, r, text, color=LESION_COLOUR, fontsize=pt(size), weight="bold", ha="center", va=va,
            path_effects=halo(3.0), clip_on=True, gid=LABEL_GID)


def _panel(frame: PageFrame, s: MapSlice, quantity: str | None, left: float, top: float, width: float,
           height: float, rows: slice, cols: slice, ct_time: str) -> tuple[Axes, tuple[float, float, float, float]]:
    """One image panel (a quantity in colour, or the CT alone when `quantity` is None)."""
    image_h = height - _CAPTION_PX - (_BAR_PX if quantity else 0.0)
    caption = (f"{quantity}: {QUANTITY_WORDS.get(quantity, quantity)}" if quantity
               else f"CT, {ct_time}, regions outlined")
    frame.text(left + 4, top, caption, size="small", color=TEXT)
    ax = frame.axes(left, top + _CAPTION_PX, width, image_h)
    ax.imshow(s.ct[rows, cols], cmap="gray", vmin=CT_WINDOW[0], vmax=CT_WINDOW[1], interpolation="nearest",
              aspect=s.pixel_mm[0] / s.pixel_mm[1])
    aspect = s.pixel_mm[0] / s.pixel_mm[1]
    unmeasured = {name for name in s.lesions if quantity and _not_measurable(s.values.get(name, {}).get(quantity))}
    if quantity is not None:
        scale = SCALES[quantity]
        values = s.maps[quantity][rows, cols]
        shown = s.liver[rows, cols] & np.isfinite(values)
        for name in unmeasured:  # no colour where the region's value is not measurable: no colour suggests one
            shown = shown & ~s.lesions[name][rows, cols]
        ax.imshow(np.ma.masked_where(~shown, values), cmap=scale.cmap, vmin=scale.lo, vmax=scale.hi,
                  interpolation="nearest", aspect=aspect, alpha=0.9)
    taken: list[tuple[float, float, float, float]] = []
    for name, mask in s.lesions.items():
        m = mask[rows, cols]
        if not m.any():
            continue
        if name in unmeasured:  # grey, hatched: "n.m." on the label says why
            ax.imshow(np.ma.masked_where(~m, np.ones(m.shape)), cmap=ListedColormap([NOT_MEASURABLE_FILL]),
                      vmin=0.0, vmax=1.0, interpolation="nearest", aspect=aspect)
            with matplotlib.rc_context({"hatch.color": NOT_MEASURABLE_HATCH, "hatch.linewidth": pt(2.0)}):
                ax.contourf(m.astype(np.float32), levels=[0.5, 1.5], colors="none", hatches=["//"])
        for colour, width_px in (("black", 4.0), (LESION_COLOUR, 1.8)):
            ax.contour(m.astype(np.float32), levels=[0.5], colors=[colour], linewidths=pt(width_px))
        value = s.values.get(name, {}).get(quantity, "") if quantity else ""
        _label(ax, m, f"{name} {value}".strip(), taken)
    ax.set_axis_off()
    orientation_labels(ax, "axial")
    bar = (left + 0.1 * width, top + height - _BAR_PX + 28, 0.8 * width, 16)
    if quantity is not None:
        scale = SCALES[quantity]
        colour_bar(frame, bar, scale.cmap, scale.lo, scale.hi, f"{quantity}, {scale.unit}", ticks=scale.ticks)
    return ax, (bar[0], bar[1], bar[0] + bar[2], bar[1] + bar[3])


def render_map_page(identity: Identity, method_title: str, method_words: str, quantities: Sequence[str],
                    s: MapSlice, where: str, why: str, page: tuple[int, int], ct_time: str,
                    liver_source: str, notes: Sequence[str] = ()) -> tuple[Page, list[PanelGeometry]]:
    """One map page: every quantity of one method on one slice (see module docstring).

    With four quantities the panels are 2 x 2; with more, 3 columns, the last cell holding the CT alone with
    the regions outlined (so no panel stays empty). Returns the page and where each panel's image lies.
    """
    quantities = [q for q in quantities if q in s.maps and q in SCALES]
    cells: list[str | None] = list(quantities)
    ncols = 2 if len(cells) <= 4 else 3
    if len(cells) % ncols:
        cells.append(None)  # the CT alone fills the grid
    nrows = -(-len(cells) // ncols)
    frame = new_page(identity, f"CT perfusion, {method_title}: {where}", why, page_number=page)
    rows, cols = _zoom(s.liver, 6)
    cell_w = _GRID_WIDTH / ncols
    cell_h = (_GRID_BOTTOM - _GRID_TOP) / nrows
    axes: list[tuple[str, Axes, tuple[float, float, float, float]]] = []
    for n, quantity in enumerate(cells):
        r, c = divmod(n, ncols)
        ax, bar = _panel(frame, s, quantity, _GRID_LEFT + c * cell_w + 6, _GRID_TOP + r * cell_h + 4, cell_w - 12,
                         cell_h - 12, rows, cols, ct_time)
        if quantity is not None:
            axes.append((quantity, ax, bar))
    _map_info(frame, quantities, s, method_words, liver_source, notes)
    rendered = frame.render()
    geometry = [PanelGeometry(q, _box(ax), _data_to_page(ax, rows, cols), bar) for q, ax, bar in axes]
    return rendered, geometry


def _box(ax: Axes) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = ax.get_window_extent().extents  # display pixels, origin bottom left
    h = PAGE_PX[1]
    return (float(x0), float(h - y1), float(x1), float(h - y0))


def _data_to_page(ax: Axes, rows: slice, cols: slice) -> Transform:
    """Slice (column, row) -> display pixels, through the zoom offset."""
    from matplotlib.transforms import Affine2D

    return Affine2D().translate(-float(cols.start), -float(rows.start)) + ax.transData


def _flagged(text: str) -> str:
    """A table cell: a value that is not measurable is drawn in the flag colour."""
    return "!" + text if _not_measurable(text) else text


def _map_info(frame: PageFrame, quantities: Sequence[str], s: MapSlice, method_words: str, liver_source: str,
              notes: Sequence[str]) -> None:
    x, w = _INFO_LEFT, _INFO_WIDTH
    y = text_block(frame, x, 110, [("heading", "Regions (value \u00b1 1 SD)")], w)
    shown = [q for q in quantities if q in ("ALP", "PVP", "TLP", "HPI")][:4]
    if s.values:
        columns = [("region", 112.0, "l")] + [(q, (w - 112.0) / max(1, len(shown)), "r") for q in shown]
        rows: list[list[Cell]] = [[name, *(_flagged(v.get(q, "-")) for q in shown)] for name, v in s.values.items()]
        y = table(frame, x, y + 2, columns, rows, size="small", row_px=24)
        y = text_block(frame, x, y + 2, [("dim", "Value of the region's mean curve \u00b1 1 SD of image noise; "
                                                 "ALP, PVP, TLP in mL/min/100 mL; HPI in %. n.m. = not "
                                                 "measurable:")], w)
        shown_flags = list(s.flags[:_MAX_FLAGS])
        if len(s.flags) > _MAX_FLAGS:
            shown_flags.append(f"and {len(s.flags) - _MAX_FLAGS} more (see the case summary and the SR)")
        y = text_block(frame, x, y, [("flag", f) for f in shown_flags], w)
    else:
        y = text_block(frame, x, y, [("dim", "No regions were received (perfusion RTSTRUCT).")], w)
    lines: list[tuple[str, str]] = [("heading", "Method"), ("body", method_words),
                                    ("heading", "Display"),
                                    ("body", f"Colour only inside the liver ({liver_source}) and where a value "
                                             "was computed; grey: the CT (window 400 / level 40 HU); grey "
                                             "hatched: a lesion whose value is not measurable (n.m.)."),
                                    ("body", "Each quantity has a fixed scale, the same for both methods.")]
    lines += [("small", n) for n in notes]
    text_block(frame, x, y + 12, lines, w)


def _style_axes(ax: Axes, ylabel: str) -> None:
    ax.set_facecolor(BACKGROUND)
    ax.set_ylabel(ylabel, color=TEXT, fontsize=pt(FONT_PX["body"]))
    ax.tick_params(colors=TEXT, labelsize=pt(FONT_PX["small"]))
    for spine in ax.spines.values():
        spine.set_color(DIM)
    ax.grid(color="#30343a", lw=0.8)


def render_curve_page(identity: Identity, times: np.ndarray, inputs: Mapping[str, np.ndarray],
                      tissue: Mapping[str, np.ndarray], t_split: float, page: tuple[int, int],
                      notes: Sequence[str] = ()) -> Page:
    """The time-attenuation curves: inputs (aorta, portal vein, spleen) above, the liver and each lesion below
    on their own scale (a tissue enhances ten times less than the aorta), the same time axis."""
    frame = new_page(identity, "CT perfusion: time-attenuation curves",
                     "mean enhancement over the baseline of each region: input curves above, liver and lesions below",
                     page_number=page)
    top = frame.axes(110, 120, 1240, 330)
    bottom = frame.axes(110, 490, 1240, 470)
    input_styles = {"aorta": ("#ff5252", "o"), "portal vein": ("#40c4ff", "s"), "spleen": ("#b388ff", "^")}
    tissue_colours = ["#ffd54f", "#69f0ae", "#ff80ab", "#ffffff", "#ffab40", "#ea80fc", "#c6ff00"]
    handles = []
    for name, curve in inputs.items():
        colour, marker = input_styles.get(name, ("#bdbdbd", "."))
        (line,) = top.plot(times, curve, color=colour, marker=marker, ms=6, lw=2.2, ls="--", label=name)
        handles.append(line)
    for n, (name, curve) in enumerate(tissue.items()):
        colour = tissue_colours[n % len(tissue_colours)]
        (line,) = bottom.plot(times, curve, color=colour, marker="o", ms=5, lw=2.4, label=name)
        handles.append(line)
    for ax in (top, bottom):
        ax.axvspan(float(times[0]), t_split, color="#ff5252", alpha=0.08)
        ax.axvline(t_split, color=TEXT, ls=":", lw=1.5)
        ax.set_xlim(float(times[0]) - 1.0, float(times[-1]) + 1.0)
    _style_axes(top, "inputs (HU)")
    _style_axes(bottom, "liver and lesions (HU)")
    top.tick_params(labelbottom=False)
    top.text(t_split, 1.02, f"split {t_split:.0f} s: arterial | portal", transform=top.get_xaxis_transform(),
             color=TEXT, ha="center", va="bottom", fontsize=pt(FONT_PX["small"]))
    bottom.set_xlabel("time from the first image (s)", color=TEXT, fontsize=pt(FONT_PX["body"]))
    legend = frame.figure.legend(handles=handles, loc="upper left", bbox_to_anchor=(1400 / PAGE_PX[0],
                                 1 - 120 / PAGE_PX[1]), frameon=False, labelcolor=TEXT, fontsize=pt(FONT_PX["body"]),
                                 title="curves", title_fontsize=pt(FONT_PX["small"]))
    legend.get_title().set_color(DIM)
    lines: list[tuple[str, str]] = [
        ("heading", "How to read"),
        ("body", "Above, dashed: the input curves (aorta, portal vein; the spleen's peak splits the arterial from "
                 "the portal phase). Below, solid: the liver and each lesion of the perfusion RTSTRUCT."),
        ("body", "The steepest rise of a tissue curve before the split, relative to the aortic peak, is its "
                 "arterial perfusion; after the split, relative to the portal peak, its portal perfusion."),
    ]
    lines += [("small", n) for n in notes]
    text_block(frame, 1400, 120 + 36 * (len(handles) + 2), lines, 480)
    return frame.render()
