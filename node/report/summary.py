"""The case summary as pages a person reads on any PACS viewer: the shared page look (node.imaging.pages) with
sections per workflow, each a few tables with units in their headers, values with their uncertainty (±) and
flags for values that are not measurable, and the analyses' warnings.

The content is the same report groups the SR holds, laid out by each workflow (``Workflow.summary_section``
returns blocks: :class:`Table`, :class:`Note` or plain strings); the case-wide "Liver volume" table (one row
per source of a liver contour) comes first. Sections flow down two columns; a long case continues on further
pages of the same series.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from matplotlib.lines import Line2D

from node.imaging.pages import (
    ACCENT,
    DIM,
    PAGE_PX,
    TEXT,
    WARN,
    Identity,
    Page,
    PageFrame,
    new_page,
    typographic,
)
from node.report import codes as C
from node.report.groups import Group, Item

__all__ = ["Column", "Table", "Note", "SummaryBlock", "Section", "render_pages", "render_pdf", "summary_lines",
           "number", "with_spread",
           "value_text", "liver_volumes", "CM3", "PLUS_MINUS", "NOT_MEASURABLE_TEXT"]

CM3 = "cm\u00b3"
PLUS_MINUS = "\u00b1"
#: What a table shows for a value flagged not measurable (the reason is in the notes and the SR).
NOT_MEASURABLE_TEXT = "n.m."


@dataclass(frozen=True)
class Column:
    """A table column: heading, unit (shown under it), alignment ("l"/"r"), relative width."""

    heading: str
    unit: str = ""
    align: str = "r"
    width: float = 1.0


@dataclass(frozen=True)
class Table:
    """Rows of text cells (a cell starting with "!" is a flag: drawn in the flag colour)."""

    columns: tuple[Column, ...]
    rows: tuple[tuple[str, ...], ...]
    title: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Note:
    """A line of text: `key` results are large, `flag` ones in the flag colour."""

    text: str
    flag: bool = False
    key: bool = False


SummaryBlock = str | Table | Note


@dataclass
class Section:
    """One workflow's part of the summary."""

    title: str
    blocks: list[SummaryBlock] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def number(value: float | None, unit: str, decimals: int | None = None) -> str:
    """A value at its unit's precision (node.report.codes.DECIMALS); "-" when not measured."""
    if value is None or not math.isfinite(value):
        return "-"
    return f"{C.rounded(value, unit, decimals):.{C.decimals_of(unit, decimals)}f}"


def value_text(item: Item | None, sd: Item | None = None) -> str:
    """An item as "12.3 ± 0.4" (its uncertainty, else the SD item given), "!n.m." when not measurable, "-"
    when absent."""
    if item is None:
        return "-"
    if item.not_measurable:
        return "!" + NOT_MEASURABLE_TEXT
    spread = item.uncertainty if item.uncertainty is not None else (sd.value if sd is not None else None)
    return with_spread(item.value, spread, item.unit, item.decimals)


def with_spread(value: float | None, spread: float | None, unit: str, decimals: int | None = None) -> str:
    """ "12.3 ± 0.4" at the unit's precision (the one format of a value and its SD on every page and in the
    summary); a spread that rounds to zero at that precision is said as "± <0.1", never "± 0"; no spread
    (not measured): the value alone."""
    text = number(value, unit, decimals)
    if spread is None or not math.isfinite(spread) or text == "-":
        return text
    places = C.decimals_of(unit, decimals)
    if C.rounded(abs(spread), unit, decimals) == 0.0:
        return f"{text} {PLUS_MINUS} <{10.0 ** -places:.{places}f}"
    return f"{text} {PLUS_MINUS} {number(abs(spread), unit, decimals)}"


def liver_volumes(groups: Sequence[Group]) -> Table | None:
    """The one liver volume of the case summary, in cm³, and which source it is: the planning CT's contour
    first, else a received (delineated) one, else the first analysis's own; the other analyses' contours are
    named, without a second number for the same organ (each analysis's own contour is in the SR)."""
    found = []
    for g in groups:
        item = g.item(C.VOLUME)
        if g.region == "Liver" and item is not None:
            found.append((g.region_source or g.identifier, item.value))  # mL and cm3 are the same volume
    if not found:
        return None
    # the planning CT's delineated liver (also the GSA structures' Liver), else any received contour, else the first
    source, cm3 = min(found, key=lambda f: (not f[0].startswith("planning CT"), "RTSTRUCT" not in f[0]))
    others = sorted({s for s, _ in found if s != source})
    notes = (f"The other analyses use their own liver contour ({'; '.join(others)}): its volume is in the SR.",) \
        if others else ()
    return Table((Column("region", align="l", width=1.0), Column("volume", CM3),
                  Column("source of the contour", align="l", width=3.4)),
                 (("Liver", number(cm3, "cm3"), source),), title="Liver volume", notes=notes)


# ------------------------------------------------------------------------------------------------ layout
_TOP, _BOTTOM = 112.0, PAGE_PX[1] - 56.0
_COLUMNS_X = (28.0, 988.0)
_COLUMN_W = 904.0
_ROW = 27.0
_LINE = 24.0


@dataclass
class _Placed:
    block: SummaryBlock | tuple[str, str]  # a block, or ("heading"/"warning", text)
    x: float
    y: float
    page: int


def _wrap(text: str, width_px: float, size_px: float) -> list[str]:
    chars = max(20, int(width_px / (size_px * 0.56)))
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > chars:
            out.append(line)
            line = "  " + word
        else:
            line = f"{line} {word}" if line else word
    return out + [line] if line else out


def _height(block: SummaryBlock | tuple[str, str]) -> float:
    if isinstance(block, tuple):
        kind, text = block
        return 40.0 if kind == "heading" else _LINE * len(_wrap("! " + text, _COLUMN_W, 16)) + 4
    if isinstance(block, Table):
        title = 28.0 if block.title else 0.0
        units = 20.0 if any(c.unit for c in block.columns) else 0.0
        notes = sum(_LINE * len(_wrap(n, _COLUMN_W, 15)) for n in block.notes)
        return title + _ROW + units + 6 + _ROW * len(block.rows) + notes + 14
    note = block if isinstance(block, Note) else Note(block)
    size = 22 if note.key else 16
    return (_LINE * size / 16) * len(_wrap(note.text, _COLUMN_W, size)) + 6


def _layout(sections: Sequence[Section]) -> list[_Placed]:
    placed: list[_Placed] = []
    page, column, y = 0, 0, _TOP

    title = ""

    def place(item: SummaryBlock | tuple[str, str], keep_with: float = 0.0) -> None:
        nonlocal page, column, y
        h = _height(item)
        if y + h + keep_with > _BOTTOM and y > _TOP:
            column += 1
            if column == len(_COLUMNS_X):
                page, column = page + 1, 0
            y = _TOP
            if not (isinstance(item, tuple) and item[0] == "heading"):  # a section going on: say whose it is
                continued: tuple[str, str] = ("heading", f"{title} (continued)")
                placed.append(_Placed(continued, _COLUMNS_X[column], y, page))
                y += _height(continued)
        placed.append(_Placed(item, _COLUMNS_X[column], y, page))
        y += h

    for section in sections:
        title = section.title
        first = section.blocks[0] if section.blocks else None
        place(("heading", section.title), keep_with=_height(first) if first is not None else 0.0)
        for block in section.blocks:
            place(block)
        for warning in section.warnings:
            place(("warning", warning))
        y += 12
    return placed


def _draw_table(frame: PageFrame, table: Table, x: float, y: float) -> None:
    if table.title:
        frame.text(x, y, table.title, size="body", color=TEXT, weight="bold")
        y += 28
    total = sum(c.width for c in table.columns)
    widths = [_COLUMN_W * c.width / total for c in table.columns]
    cx = x
    for col, w in zip(table.columns, widths, strict=True):
        right = col.align == "r"
        frame.text(cx + w - 10 if right else cx, y, col.heading, size="small", color=DIM,
                   ha="right" if right else "left")
        if col.unit:
            frame.text(cx + w - 10 if right else cx, y + 20, col.unit, size="small", color=DIM,
                       ha="right" if right else "left")
        cx += w
    y += _ROW + (20 if any(c.unit for c in table.columns) else 0)
    frame.figure.add_artist(_line(x, x + _COLUMN_W, y - 3))
    for row in table.rows:
        cx = x
        for col, w, cell in zip(table.columns, widths, row, strict=False):
            colour = TEXT
            if cell.startswith("!"):
                cell, colour = cell[1:], WARN
            right = col.align == "r"
            frame.text(cx + w - 10 if right else cx, y, cell, size="body", color=colour,
                       ha="right" if right else "left")
            cx += w
        y += _ROW
    for note in table.notes:
        for piece in _wrap(note, _COLUMN_W, 15):
            frame.text(x, y + 2, piece, size="small", color=DIM)
            y += _LINE


def _line(x0: float, x1: float, y: float) -> Line2D:
    w, h = PAGE_PX
    return Line2D([x0 / w, x1 / w], [1 - y / h, 1 - y / h], color="#3a3f45", linewidth=1.0)


def _draw(frame: PageFrame, p: _Placed) -> None:
    block = p.block
    if isinstance(block, tuple):
        kind, text = block
        if kind == "heading":
            frame.text(p.x, p.y, text, size="heading", color=ACCENT, weight="bold")
        else:
            for n, piece in enumerate(_wrap("! " + text, _COLUMN_W, 16)):
                frame.text(p.x, p.y + n * _LINE, piece, size="body", color=WARN)
        return
    if isinstance(block, Table):
        _draw_table(frame, block, p.x, p.y)
        return
    note = block if isinstance(block, Note) else Note(block)
    size = 22 if note.key else 16
    colour = WARN if note.flag else (ACCENT if note.key else TEXT)
    for n, piece in enumerate(_wrap(note.text, _COLUMN_W, size)):
        frame.text(p.x, p.y + n * _LINE * size / 16, piece, size="key" if note.key else "body", color=colour,
                   weight="bold" if note.key else "normal")


def _frames(identity: Identity, sections: Sequence[Section], title: str, subtitle: str) -> list[PageFrame]:
    placed = _layout(sections)
    n_pages = max((p.page for p in placed), default=0) + 1
    frames = []
    for number_ in range(n_pages):
        frame = new_page(identity, title, subtitle, page_number=(number_ + 1, n_pages),
                         footer="all values with methods and codes: the structured report (SR) of this case")
        for p in placed:
            if p.page == number_:
                _draw(frame, p)
        frames.append(frame)
    return frames


def render_pages(identity: Identity, sections: Sequence[Section], title: str = "Case summary",
                 subtitle: str = "") -> list[Page]:
    """The summary pages (1920 x 1080, the shared look): sections flow down two columns, then onto new pages."""
    return [frame.render() for frame in _frames(identity, sections, title, subtitle)]


def render_pdf(identity: Identity, sections: Sequence[Section], title: str = "Case summary",
               subtitle: str = "") -> bytes:
    """The same pages as one PDF document, drawn as vectors with embedded TrueType fonts (text stays text)."""
    import io

    import matplotlib
    from matplotlib.backends.backend_pdf import PdfPages

    buffer = io.BytesIO()
    with matplotlib.rc_context({"pdf.fonttype": 42}), PdfPages(buffer, metadata={
            "Title": f"{title}, {identity.patient_name} ({identity.patient_id})", "Creator": "liver-node",
            "Subject": "DERIVED, not for primary diagnosis"}) as pdf:
        for frame in _frames(identity, sections, title, subtitle):
            pdf.savefig(frame.figure, facecolor=frame.figure.get_facecolor())
    return buffer.getvalue()


def summary_lines(case_id: str, sections: Sequence[Section]) -> list[str]:
    """The summary as plain text lines (for logs, tests and the PDF's text layer): what the pages show."""
    lines = [f"liver-node case summary, case {case_id}"]
    for section in sections:
        lines += ["", section.title]
        for block in section.blocks:
            if isinstance(block, Table):
                if block.title:
                    lines.append(block.title)
                lines.append(" | ".join(f"{c.heading} ({c.unit})" if c.unit else c.heading for c in block.columns))
                lines += [" | ".join(cell.lstrip("!") for cell in row) for row in block.rows]
                lines += list(block.notes)
            else:
                lines.append(block.text if isinstance(block, Note) else block)
        lines += [f"! {w}" for w in section.warnings]
    return [typographic(line) for line in lines]

