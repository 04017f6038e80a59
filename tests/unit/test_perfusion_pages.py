"""node.perfusion.pages: colour only inside the liver and where a value exists, fixed scales with colour bars,
no empty panel, lesions outlined with their values."""
from __future__ import annotations

import matplotlib
import numpy as np
import pytest
from scipy import ndimage

from node.imaging.pages import PAGE_PX, WARN, Identity
from node.perfusion.outputs import region_text
from node.perfusion.pages import SCALES, MapSlice, render_curve_page, render_map_page
from node.perfusion.qualify import RegionValue

IDENTITY = Identity("DOE, Jane", "P-PAGES", "1950-01-01", "F", "2024-01-01", "CT perfusion", "Perfusion maps")


def _slice(nan_hole: bool = True) -> MapSlice:
    yy, xx = np.mgrid[0:96, 0:96]
    body = ((yy - 48) / 40.0) ** 2 + ((xx - 48) / 44.0) ** 2 <= 1
    liver = ((yy - 44) / 22.0) ** 2 + ((xx - 36) / 24.0) ** 2 <= 1
    ct = np.where(body, 40.0, -1000.0)  # uniform grey body: any colour comes from the overlay
    lesion = ((yy - 40) / 6.0) ** 2 + ((xx - 34) / 6.0) ** 2 <= 1
    maps = {q: np.full(body.shape, 0.8 * SCALES[q].hi) for q in ("ALP", "PVP", "TLP", "HPI", "DV", "MTT")}
    if nan_hole:
        for values in maps.values():
            values[50:58, 40:48] = np.nan  # inside the liver, not computed
    return MapSlice(ct, maps, liver, {"T1": lesion}, (3.0, 3.0), {"T1": {"ALP": "80 ± 2", "PVP": "n.m."}})


def _footprint(geometry, mask: np.ndarray) -> np.ndarray:
    """Page pixels (rows from the top) covered by the pixels of `mask`, as the panel draws them."""
    out = np.zeros((PAGE_PX[1], PAGE_PX[0]), dtype=bool)
    for r, c in np.argwhere(mask):
        corners = geometry.to_display.transform([[c - 0.5, r - 0.5], [c + 0.5, r + 0.5]])
        x0, x1 = sorted(corners[:, 0])
        y0, y1 = sorted(PAGE_PX[1] - corners[:, 1])
        out[int(np.floor(y0)) - 1:int(np.ceil(y1)) + 1, int(np.floor(x0)) - 1:int(np.ceil(x1)) + 1] = True
    return out


def _coloured(page) -> np.ndarray:
    """Page pixels whose colour is not a grey (CT, text and background are grey)."""
    rgb = page.pixels.astype(int)
    return (rgb.max(axis=2) - rgb.min(axis=2)) > 30


def _colour_in_panel(coloured: np.ndarray, g, computed: np.ndarray) -> tuple[int, int]:
    """Assert no coloured pixel of panel `g` lies outside the footprint of `computed` (lesion outlines and labels
    are drawn inside the liver); return (coloured pixels inside the footprint, footprint pixels in the panel)."""
    left, top, right, bottom = (int(v) for v in g.box)
    inside = np.zeros_like(coloured)
    inside[top:bottom, left:right] = True
    allowed = _footprint(g, computed)
    stray = coloured & inside & ~allowed
    assert not stray.any(), f"{g.quantity}: {int(stray.sum())} coloured pixels outside the liver"
    return int((coloured & inside & allowed).sum()), int(allowed[top:bottom, left:right].sum())


@pytest.mark.parametrize("quantities", [("ALP", "PVP", "TLP", "HPI"), ("ALP", "PVP", "HPI", "DV", "MTT")])
def test_colour_only_inside_the_liver_where_a_value_exists(quantities):
    s = _slice()
    page, geometry = render_map_page(IDENTITY, "test method", "words", quantities, s, "slice 1 of 1",
                                     "through T1", (1, 1), "time point 1", "test liver")
    assert page.pixels.shape == (PAGE_PX[1], PAGE_PX[0], 3) and page.identity == IDENTITY
    assert [g.quantity for g in geometry] == list(quantities)
    coloured = _coloured(page)
    computed = s.liver & np.isfinite(s.maps["ALP"])
    for g in geometry:
        shown, footprint = _colour_in_panel(coloured, g, computed)
        assert shown > 0.5 * footprint
        # the scale of the quantity is drawn as a colour bar under its panel
        b_left, b_top, b_right, b_bottom = (int(v) for v in g.bar)
        strip = page.pixels[b_top:b_bottom, b_left:b_right].reshape(-1, 3).astype(float)
        cmap = matplotlib.colormaps[SCALES[g.quantity].cmap]
        for t in (0.1, 0.5, 0.9):
            colour = np.asarray(cmap(t)[:3]) * 255
            assert (np.abs(strip - colour).sum(axis=1) < 20).any(), (g.quantity, t)


def test_no_empty_panel_and_the_same_scale_for_both_methods():
    s = _slice(nan_hole=False)
    _, four = render_map_page(IDENTITY, "max slope", "", ("ALP", "PVP", "TLP", "HPI"), s, "", "", (1, 1), "", "")
    _, five = render_map_page(IDENTITY, "DISCM", "", ("ALP", "PVP", "HPI", "DV", "MTT"), s, "", "", (1, 1), "", "")
    assert len(four) == 4 and len(five) == 5  # 2 x 2; 3 x 2 with the CT alone in the sixth cell
    assert {q: SCALES[q].hi for q in ("ALP", "PVP", "HPI")} == {"ALP": 100.0, "PVP": 150.0, "HPI": 100.0}


def test_curve_page_is_dark_with_the_legend_outside_the_data():
    t = np.arange(0.0, 45.0, 3.0)
    page = render_curve_page(IDENTITY, t, {"aorta": 250 * np.exp(-((t - 13) / 4) ** 2)},
                             {"liver": 0.7 * t, "T1": 50 * (1 - np.exp(-t / 8))}, 15.0, (1, 1))
    rgb = page.pixels
    assert rgb.shape == (PAGE_PX[1], PAGE_PX[0], 3)
    assert (rgb.mean(axis=2) < 30).mean() > 0.6  # dark page
    # the legend (right of the plot) shows each curve's colour; the plot area ends at x = 1350
    legend = rgb[100:500, 1380:1700].reshape(-1, 3).astype(int)
    for colour in ((0xff, 0x52, 0x52), (0xff, 0xd5, 0x4f), (0x69, 0xf0, 0xae)):
        assert (np.abs(legend - np.asarray(colour)).sum(axis=1) < 40).any(), colour


def test_a_lesion_whose_value_is_not_measurable_is_grey_and_hatched_not_coloured():
    """T1's PVP is n.m.: inside T1 the PVP panel shows grey (hatched), no colour of the scale; its ALP (a value)
    stays coloured; no two texts of the page touch."""
    s = _slice(nan_hole=False)
    page, geometry = render_map_page(IDENTITY, "maximum slope", "words", ("ALP", "PVP", "TLP", "HPI"), s, "", "",
                                     (1, 1), "", "")
    coloured = _coloured(page)
    inner = ndimage.binary_erosion(s.lesions["T1"], iterations=2)  # away from the outline
    by_quantity = {g.quantity: g for g in geometry}
    for quantity, expect_colour in (("PVP", False), ("ALP", True)):
        g = by_quantity[quantity]
        footprint = _footprint(g, inner)
        share = coloured[footprint].mean()
        assert (share > 0.9) if expect_colour else (share == 0.0), (quantity, share)
    pvp_inside = page.pixels[_footprint(by_quantity["PVP"], inner)].astype(int)
    assert len({tuple(v) for v in pvp_inside}) >= 2  # a hatch: two greys, not a flat fill
    assert page.overlaps == ()


def test_region_values_as_the_report_states_them_and_why_not_measurable():
    """A region's value on the pages is the report's: the value of its mean curve +- 1 SD of noise, or n.m.;
    the reasons of the n.m. values are listed beside the panels in the flag colour."""
    flow = "mL/min/(100.mL)"
    # the summary's format (the unit's precision), so a value reads the same on every page
    assert region_text(RegionValue(60.46, 1.2, 61.0, 9.0, measurable=True), flow) == "60.5 \u00b1 1.2"
    # an SD below the precision is said as such, never "± 0"
    assert region_text(RegionValue(10.83, 0.04, 10.8, 0.1, measurable=True), flow) == "10.8 \u00b1 <0.1"
    assert region_text(RegionValue(79.0, 6.0, 80.0, 5.0, measurable=False, reason="too noisy"), "%") == "n.m."
    assert region_text(RegionValue(None, None, None, None, measurable=False, reason="not computed"), "%") == "n.m."
    assert region_text(None, "%") == "-"
    warn = np.asarray(tuple(int(WARN[i:i + 2], 16) for i in (1, 3, 5)))

    def flag_pixels(flags: tuple[str, ...]) -> int:
        s = _slice(nan_hole=False)
        s = MapSlice(s.ct, s.maps, s.liver, s.lesions, s.pixel_mm, {"T1": {"ALP": "80 \u00b1 2", "PVP": "n.m."}},
                     flags)
        page, _ = render_map_page(IDENTITY, "max slope", "words", ("ALP", "PVP", "TLP", "HPI"), s, "", "", (1, 1),
                                  "", "")
        info = page.pixels[250:700, 1440:].reshape(-1, 3).astype(int)
        return int((np.abs(info - warn).sum(axis=1) < 30).sum())

    baseline = flag_pixels(())  # the table's own n.m. cell
    assert flag_pixels(("T1 PVP: not measurable at this noise: the 95 % interval, 9 mL/min/100 mL either side, "
                        "spans 30 % of the value (limit 15 %)",)) > baseline + 200


def test_phantom_map_pages_colour_only_inside_the_analysed_liver(tmp_path, monkeypatch):
    """The pages the pipeline itself renders for a phantom case (slices it chose, its liver estimate, its NaN maps):
    no colour outside the liver voxels holding a value, and colour over most of them."""
    import pydicom

    from node.perfusion import outputs
    from node.perfusion.pipeline import run_perfusion
    from node.perfusion.settings import PerfusionSettings
    from node.phantom import write_phantom

    rendered = []

    def recording(*args, **kwargs):
        page, geometry = render_map_page(*args, **kwargs)
        rendered.append((args[4], page, geometry))
        return page, geometry

    monkeypatch.setattr(outputs, "render_map_page", recording)
    out = write_phantom(tmp_path, "small", 2, ())
    datasets = [pydicom.dcmread(p) for p in sorted((out / "ct-perfusion").glob("*.dcm"))]
    run_perfusion(datasets, PerfusionSettings())
    assert len(rendered) >= 2  # both methods, slices through the lesions
    for s, page, geometry in rendered:
        assert page.overlaps == (), page.overlaps  # no text or lesion label runs into another
        coloured = _coloured(page)
        for g in geometry:
            computed = s.liver & np.isfinite(s.maps[g.quantity])
            shown, footprint = _colour_in_panel(coloured, g, computed)
            # colour over most of it, as far as the scale's colours are chromatic at these values (magma and
            # inferno start near black); most of the liver's values must be shown in colour at all
            scale = SCALES[g.quantity]
            rgb = matplotlib.colormaps[scale.cmap](
                np.clip((s.maps[g.quantity][computed] - scale.lo) / (scale.hi - scale.lo), 0, 1))[:, :3] * 255
            chromatic = float(((rgb.max(axis=1) - rgb.min(axis=1)) > 40).mean())
            assert chromatic > 0.5, (g.quantity, chromatic)
            assert shown > 0.5 * chromatic * footprint, (g.quantity, chromatic)


def test_lesion_labels_never_run_into_each_other():
    """Three lesions side by side, each labelled with its value: every label finds a place (above, below or
    sideways) where it meets no other label; the page's texts and labels do not touch."""
    s = _slice(nan_hole=False)
    yy, xx = np.mgrid[0:96, 0:96]
    lesions = {"T1": s.lesions["T1"], "T2": ((yy - 55) / 5.0) ** 2 + ((xx - 42) / 5.0) ** 2 <= 1,
               "T3": ((yy - 55) / 4.0) ** 2 + ((xx - 28) / 4.0) ** 2 <= 1}
    values = {"T1": {"ALP": "80.2 \u00b1 2.1"}, "T2": {"ALP": "19.8 \u00b1 0.5"}, "T3": {"ALP": "30.3 \u00b1 0.8"}}
    s = MapSlice(s.ct, s.maps, s.liver, lesions, s.pixel_mm, values)
    page, _ = render_map_page(IDENTITY, "maximum slope", "words", ("ALP", "PVP", "TLP", "HPI"), s, "", "", (1, 1),
                              "", "")
    assert {"T1 80.2 \u00b1 2.1", "T2 19.8 \u00b1 0.5", "T3 30.3 \u00b1 0.8"} <= set(page.texts)
    assert page.overlaps == ()
