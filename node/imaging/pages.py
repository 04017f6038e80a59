"""The one look of every page the node renders (Secondary Captures): a dark 1920 x 1080 page with a header
naming the patient, study and series, a footer with the DERIVED / not-for-diagnosis line, and shared helpers
for image panels (orientation letters, contours with labels, colour bars, tables).

Why these choices:

* 1920 x 1080 px (16:9): a PACS viewer fits a page to its viewport; at this size the page maps about 1:1 on
  a full-HD screen, so the fonts below (>= 15 px body text) stay legible, and no page is wider than a screen.
* Dark background (black, like the images around it in a reading room); text light grey, key results larger.
* Every page burns in the patient's name, ID, birth date and the study date and series: a page shown on its
  own (exported, printed, screenshotted) still says whose it is. :class:`Page` records that it carries
  identifying text, and :func:`node.imaging.capture.secondary_capture` sets BurnedInAnnotation YES for it
  and refuses a page whose identity differs from the dataset's.
* Uptake (SPECT) is shown in one blue-white colour scale on every page (:data:`UPTAKE_CMAP`), so that the
  contour colours (yellow liver, green functional liver / lungs, red targets / tumours, magenta PTV) never
  meet the same hue in the image.
"""
from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # headless node: never pick an interactive backend
import numpy as np  # noqa: E402
from matplotlib import patheffects  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.cm import ScalarMappable  # noqa: E402
from matplotlib.colorbar import Colorbar  # noqa: E402
from matplotlib.colors import Colormap, LinearSegmentedColormap, Normalize  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from pydicom import Dataset  # noqa: E402

from node import __version__  # noqa: E402
from node.derived import NOT_FOR_DIAGNOSIS  # noqa: E402

__all__ = [
    "PAGE_PX", "DPI", "BACKGROUND", "TEXT", "DIM", "ACCENT", "WARN", "FONT_PX", "UPTAKE_CMAP", "CT_WINDOW",
    "Identity", "Page", "PageFrame", "new_page", "pt", "halo", "orientation_labels", "colour_bar", "text_block",
    "table", "Cell", "format_date", "format_name", "rgb01", "hex_colour", "typographic",
    "LABEL_GID",
]

#: Page size in pixels (width, height) and the figure resolution used to reach it.
PAGE_PX = (1920, 1080)
DPI = 100
BACKGROUND = "#000000"
PANEL = "#0d0f12"
TEXT = "#e8e8e8"
DIM = "#a0a4aa"
ACCENT = "#ffd54f"  # headings, the key result
WARN = "#ff8a65"  # flags: not measurable, review
#: Font sizes in pixels on the 1920 x 1080 page (body text >= 15 px stays legible when a viewer fits the page).
FONT_PX = {"title": 28, "subtitle": 18, "heading": 20, "body": 16, "small": 15, "key": 22, "label": 17}
#: Abdominal soft-tissue CT window (level 40 HU, width 400 HU), used on every page that shows CT.
CT_WINDOW = (-160.0, 240.0)
#: Uptake (SPECT) colour scale: dark blue -> light blue (lightness increases monotonically), no yellow, green,
#: red or magenta, which are the contour colours.
UPTAKE_CMAP: Colormap = LinearSegmentedColormap.from_list(
    "uptake", ["#0a1a5c", "#1f4fbf", "#3d8bf2", "#8cc8ff", "#e6f4ff"])

_HEADER_PX = 96
_FOOTER_PX = 40


#: ASCII stand-ins and the typographic forms every page prints (one place: PageFrame.text and the summary's text
#: apply it, so a ">=" or "cm3" written anywhere in the code reaches the reader as "≥" or "cm³").
_TYPOGRAPHY = [(re.compile(r">="), "\u2265"), (re.compile(r"<="), "\u2264"), (re.compile(r"\+-|\+/-"), "\u00b1"),
               (re.compile(r"(?<![\w-])->(?!>)"), "\u2192"), (re.compile(r"\b(c?m|mm)3\b"), "\\1\u00b3"),
               (re.compile(r"\b(c?m|mm)2\b"), "\\1\u00b2"),
               # a multiplication between numbers or symbols ("4.42x4.42", "49.67 x A x LSF"), never the word-like
               # x of "at least x % of the region"
               (re.compile(r"(?<=\d)x(?=\d)"), "\u00d7"), (re.compile(r"(?<=[\w)]) x (?=[\dA-Z(])"), " \u00d7 ")]


def typographic(text: str) -> str:
    """`text` with the typographic forms of ASCII stand-ins: >= → ≥, <= → ≤, +- → ±, -> → →, cm3 → cm³,
    mm2 → mm², 4x4 and A x B → ×."""
    for pattern, replacement in _TYPOGRAPHY:
        text = pattern.sub(replacement, text)
    return text


def pt(px: float) -> float:
    """Matplotlib points for a size in page pixels."""
    return px * 72.0 / DPI


def rgb01(color: Sequence[int]) -> tuple[float, float, float]:
    """An 8-bit RGB colour as matplotlib's 0..1 floats."""
    r, g, b = (float(v) / 255.0 for v in color)
    return (r, g, b)


def hex_colour(color: Sequence[int]) -> str:
    """An 8-bit RGB colour as "#rrggbb"."""
    return "#" + "".join(f"{int(v):02x}" for v in color)


def halo(width_px: float = 3.0) -> list[patheffects.AbstractPathEffect]:
    """A black outline for text and lines drawn over images, so they read on any background."""
    return [patheffects.withStroke(linewidth=pt(width_px), foreground="black")]


def format_date(value: object) -> str:
    """DICOM DA (YYYYMMDD) as ISO 8601 (YYYY-MM-DD); other text unchanged; "" when empty."""
    text = str(value or "").strip()
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def format_name(value: object) -> str:
    """A DICOM person name (Family^Given^Middle^Prefix^Suffix) as "FAMILY, Given Middle"."""
    parts = [p.strip() for p in str(value or "").split("=")[0].split("^")]
    while parts and not parts[-1]:
        parts.pop()
    if not parts:
        return "(no name)"
    family, rest = parts[0], " ".join(p for p in parts[1:3] if p)
    return f"{family}, {rest}" if rest else family


@dataclass(frozen=True)
class Identity:
    """Who and what a page shows: burned into the page header, and checked against the capture's dataset."""

    patient_name: str
    patient_id: str
    birth_date: str
    sex: str
    study_date: str
    study_description: str
    series: str  # the page's own series, in words

    @classmethod
    def of(cls, ds: Dataset, series: str) -> Identity:
        """The identity of dataset `ds` (the capture's reference: same patient and study)."""
        return cls(patient_name=format_name(ds.get("PatientName", "")), patient_id=str(ds.get("PatientID", "")),
                   birth_date=format_date(ds.get("PatientBirthDate", "")), sex=str(ds.get("PatientSex", "") or ""),
                   study_date=format_date(ds.get("StudyDate", "")),
                   study_description=str(ds.get("StudyDescription", "") or ""), series=series)

    def matches(self, ds: Dataset) -> bool:
        """True when `ds` is this patient (PatientID and name as burned in)."""
        return (str(ds.get("PatientID", "")) == self.patient_id
                and format_name(ds.get("PatientName", "")) == self.patient_name)


@dataclass(frozen=True)
class Page:
    """A rendered page: RGB pixels and the identity burned into them (None: no identifying text)."""

    pixels: np.ndarray  # (H, W, 3) uint8
    identity: Identity | None
    #: every text of the page (header, tables, notes; not the labels inside image panels), as drawn
    texts: tuple[str, ...] = ()
    #: pairs of those texts whose boxes overlap on the page (a layout fault: none on a good page)
    overlaps: tuple[tuple[str, str], ...] = ()


@dataclass
class PageFrame:
    """A page being drawn: the figure, and the content area between header and footer (figure fractions)."""

    figure: Figure
    identity: Identity
    content: tuple[float, float, float, float]  # left, bottom, width, height

    def axes(self, left_px: float, top_px: float, width_px: float, height_px: float) -> Axes:
        """Axes at a pixel rectangle of the page (origin top left, like the image)."""
        w, h = PAGE_PX
        ax = self.figure.add_axes((left_px / w, 1.0 - (top_px + height_px) / h, width_px / w, height_px / h))
        ax.set_facecolor(BACKGROUND)
        return ax

    def text(self, x_px: float, y_px: float, text: str, size: str = "body", color: str = TEXT,
             weight: str = "normal", ha: str = "left", va: str = "top") -> None:
        """Text at a pixel position of the page (origin top left)."""
        w, h = PAGE_PX
        self.figure.text(x_px / w, 1.0 - y_px / h, typographic(text), color=color, fontsize=pt(FONT_PX[size]),
                         weight=weight, ha=ha, va=va)

    def render(self) -> Page:
        from node.imaging.capture import figure_rgb

        pixels = figure_rgb(self.figure)
        if pixels.shape[:2] != (PAGE_PX[1], PAGE_PX[0]):  # figure size x DPI is exact; a guard against drift
            raise RuntimeError(f"page rendered at {pixels.shape[1]}x{pixels.shape[0]}, not {PAGE_PX}")
        # the page's own texts, and the region labels drawn over images (gid LABEL_GID): none may touch another
        labels = [t for ax in self.figure.axes for t in ax.texts if t.get_gid() == LABEL_GID]
        texts = [t for t in [*self.figure.texts, *labels] if t.get_text().strip()]
        return Page(pixels, self.identity, tuple(t.get_text() for t in texts), _overlaps(texts))


#: The gid of a region label drawn over an image (a lesion's name and value): checked for collisions like the
#: page's own texts.
LABEL_GID = "region-label"
#: Two texts on one line closer than this (px) read as one word ("max1233.6"): a layout fault.
MIN_GAP_PX = 10.0


def _overlaps(texts: Sequence[Text]) -> tuple[tuple[str, str], ...]:
    """Pairs of texts whose drawn boxes overlap, or sit on one line less than MIN_GAP_PX apart (after the figure
    was drawn)."""
    boxes = [t.get_window_extent() for t in texts]
    out = []
    for i, a in enumerate(boxes):
        for j in range(i + 1, len(boxes)):
            b = boxes[j]
            if min(a.x1, b.x1) - max(a.x0, b.x0) > -MIN_GAP_PX and min(a.y1, b.y1) - max(a.y0, b.y0) > 1.0:
                out.append((texts[i].get_text(), texts[j].get_text()))
    return tuple(out)


def new_page(identity: Identity, title: str, subtitle: str = "", footer: str = "",
             page_number: tuple[int, int] | None = None) -> PageFrame:
    """A blank page with its header (title, subtitle; patient, study, series) and footer (DERIVED line).

    The content area is everything between the header (96 px) and the footer (40 px).
    """
    w, h = PAGE_PX
    fig = Figure(figsize=(w / DPI, h / DPI), dpi=DPI, facecolor=BACKGROUND)
    frame = PageFrame(fig, identity, (0.0, _FOOTER_PX / h, 1.0, (h - _HEADER_PX - _FOOTER_PX) / h))
    frame.text(24, 14, title, size="title", color=TEXT, weight="bold")
    if subtitle:
        frame.text(24, 56, subtitle, size="subtitle", color=DIM)
    sex = f"   sex {identity.sex}" if identity.sex else ""
    frame.text(w - 24, 12, f"{identity.patient_name}   ID {identity.patient_id}", size="heading", color=TEXT,
               weight="bold", ha="right")
    frame.text(w - 24, 42, f"born {identity.birth_date or 'unknown'}{sex}   study {identity.study_date or 'undated'}"
               f"{'   ' + identity.study_description if identity.study_description else ''}", size="small",
               color=DIM, ha="right")
    frame.text(w - 24, 66, f"series: {identity.series}", size="small", color=DIM, ha="right")
    fig.add_artist(matplotlib.lines.Line2D([0.0, 1.0], [1.0 - (_HEADER_PX - 4) / h] * 2, color="#3a3f45",
                                           linewidth=1.0))
    made = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    frame.text(24, h - 30, f"{NOT_FOR_DIAGNOSIS.upper()}  |  liver-node {__version__}, {made}"
               + (f"  |  {footer}" if footer else ""), size="small", color=ACCENT)
    if page_number is not None:
        frame.text(w - 24, h - 30, f"page {page_number[0]} of {page_number[1]}", size="small", color=DIM, ha="right")
    return frame


def orientation_labels(ax: Axes, plane: str) -> None:
    """Patient-direction letters at the edges of an image panel: axial R/L, A/P; coronal R/L, S/I.

    Panels follow the radiological convention: patient right on the viewer's left, anterior (axial) or
    superior (coronal) at the top.
    """
    top, bottom = ("A", "P") if plane == "axial" else ("S", "I")
    for x, y, letter, ha, va in ((0.012, 0.5, "R", "left", "center"), (0.988, 0.5, "L", "right", "center"),
                                 (0.5, 0.985, top, "center", "top"), (0.5, 0.015, bottom, "center", "bottom")):
        ax.text(x, y, letter, ha=ha, va=va, color=TEXT, fontsize=pt(FONT_PX["label"]), weight="bold",
                transform=ax.transAxes, path_effects=halo())


def colour_bar(frame: PageFrame, rect_px: tuple[float, float, float, float], cmap: Colormap | str, vmin: float,
               vmax: float, label: str, ticks: Sequence[float] | None = None,
               marks: Sequence[tuple[float, str]] = ()) -> Colorbar:
    """A horizontal colour bar at a pixel rectangle (left, top, width, height) with its label above.

    `marks` are (value, text) drawn as white ticks across the bar (e.g. the FLS threshold).
    """
    left, top, width, height = rect_px
    ax = frame.axes(left, top, width, height)
    bar = frame.figure.colorbar(ScalarMappable(Normalize(vmin, vmax), cmap), cax=ax, orientation="horizontal",
                                ticks=ticks)
    bar.outline.set_edgecolor(DIM)
    ax.tick_params(colors=TEXT, labelsize=pt(FONT_PX["small"]), length=4)
    frame.text(left, top - 26, label, size="small", color=TEXT)
    for value, text in marks:
        ax.axvline(value, color="white", linewidth=2.0)
        ax.text(value, 1.15, text, transform=ax.get_xaxis_transform(), color=TEXT, ha="center", va="bottom",
                fontsize=pt(FONT_PX["small"]))
    return bar


def text_block(frame: PageFrame, x_px: float, y_px: float, lines: Sequence[tuple[str, str]], width_px: float,
               line_px: float = 24.0) -> float:
    """Lines of (style, text) from (x, y) down, wrapped to `width_px`; returns the y below the block.

    Styles: "heading", "body", "small", "key" (accent colour, larger), "warn" (flag colour), "flag" (small, flag
    colour), "dim".
    """
    y = y_px
    for style, text in lines:
        size, color, weight = {
            "heading": ("heading", ACCENT, "bold"), "body": ("body", TEXT, "normal"), "small": ("small", DIM, "normal"),
            "key": ("key", ACCENT, "bold"), "warn": ("body", WARN, "normal"), "dim": ("small", DIM, "normal"),
            "flag": ("small", WARN, "normal"),
        }[style]
        chars = max(20, int(width_px / (FONT_PX[size] * 0.55)))
        for piece in _wrap(text, chars):
            frame.text(x_px, y, piece, size=size, color=color, weight=weight)
            y += line_px * FONT_PX[size] / FONT_PX["body"]
        if style == "heading":
            y += 4
    return y


def _wrap(text: str, width: int) -> list[str]:
    out, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = "   " + word
        else:
            line = f"{line} {word}" if line else word
    return out + [line] if line or not out else out


Cell = str | tuple[str, str]


def table(frame: PageFrame, x_px: float, y_px: float, columns: Sequence[tuple[str, float, str]],
          rows: Sequence[Sequence[Cell]], row_colors: Sequence[str | None] | None = None, size: str = "body",
          row_px: float = 26.0, header: bool = True) -> float:
    """A table at (x, y): `columns` are (heading, width px, alignment "l"/"r"); returns the y below it.

    Cells are text, or (text, colour); a text starting with "!" is drawn in the flag colour without the "!".
    """
    y = y_px
    if header:
        cx = x_px
        for heading, width, align in columns:
            frame.text(cx + (width - 8 if align == "r" else 0), y, heading, size="small", color=DIM,
                       ha="right" if align == "r" else "left")
            cx += width
        y += row_px
        total = sum(c[1] for c in columns)
        w, h = PAGE_PX
        frame.figure.add_artist(matplotlib.lines.Line2D([x_px / w, (x_px + total) / w], [1 - (y - 4) / h] * 2,
                                                        color="#3a3f45", linewidth=1.0))
    for r, row in enumerate(rows):
        cx = x_px
        for (_, width, align), entry in zip(columns, row, strict=False):
            color = TEXT if row_colors is None or row_colors[r] is None else str(row_colors[r])
            cell = entry if isinstance(entry, str) else entry[0]
            if not isinstance(entry, str):
                color = entry[1]
            if cell.startswith("!"):
                cell, color = cell[1:], WARN
            frame.text(cx + (width - 8 if align == "r" else 0), y, cell, size=size, color=color,
                       ha="right" if align == "r" else "left")
            cx += width
        y += row_px
    return y
