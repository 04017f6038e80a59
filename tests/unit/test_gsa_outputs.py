"""node.gsa.outputs: display orientation of the fusion planes and the rendered montage."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from node.gsa.outputs import Contour, GsaFigures, render_page
from node.imaging.layers import Layer, lps_view
from node.imaging.pages import UPTAKE_CMAP, Identity

ORIENTATIONS = {
    "head-first axial": (1, 0, 0, 0, 1, 0, 0, 0, 1),
    "feet-first axial": (-1, 0, 0, 0, 1, 0, 0, 0, -1),
    "coronal stack": (1, 0, 0, 0, 0, -1, 0, 1, 0),
    "flipped rows, sagittal stack": (0, 0, 1, 0, -1, 0, -1, 0, 0),
}


@pytest.mark.parametrize("name", list(ORIENTATIONS))
def test_lps_view_orders_voxels_superior_posterior_left(name):
    image = sitk.Image((5, 6, 7), sitk.sitkFloat32)
    image.SetSpacing((1.0, 2.0, 3.0))
    image.SetDirection(ORIENTATIONS[name])
    size = image.GetSize()
    # physical coordinates of every voxel, by SimpleITK (independent of lps_view)
    coords = np.zeros((size[2], size[1], size[0], 3))
    for k in range(size[2]):
        for j in range(size[1]):
            for i in range(size[0]):
                coords[k, j, i] = image.TransformIndexToPhysicalPoint((i, j, k))
    views = [lps_view(coords[..., a], ORIENTATIONS[name], image.GetSpacing()) for a in range(3)]
    (x, sp), (y, _), (z, _) = views
    assert (np.diff(z, axis=0) > 0).all() and (np.diff(y, axis=1) > 0).all() and (np.diff(x, axis=2) > 0).all()
    # spacing follows the axes: the step along each view axis in mm
    assert sp == pytest.approx((np.diff(z, axis=0).max(), np.diff(y, axis=1).max(), np.diff(x, axis=2).max()))


def test_render_page_draws_structures_uptake_and_its_colour_bar():
    shape = (20, 40, 40)
    ct = np.full(shape, 40.0, dtype=np.float32)
    spect = np.zeros(shape, dtype=np.float32)
    liver = np.zeros(shape, dtype=bool)
    liver[5:15, 10:30, 10:30] = True
    spect[liver] = 100.0
    fls = liver.copy()
    fls[:, :, 20:] = False
    ptv = np.zeros(shape, dtype=bool)
    ptv[4:16, 8:32, 18:32] = True
    colours = {"Liver": (255, 215, 0), "FLS": (0, 190, 140), "ITV": (240, 64, 40), "PTV": (255, 60, 255)}
    liver_c, fls_c, itv_c, ptv_c = (Contour(n, m, t, colours[n], "", volume_cm3=v) for n, m, t, v in (
        ("Liver", liver, "ORGAN", 12.0), ("FLS", fls, "AVOIDANCE", 6.0), ("ITV", liver & ~fls, "CTV", 6.0),
        ("PTV", ptv, "PTV", 9.0)))
    ct_layer = Layer(ct, (3.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    spect_layer = Layer(spect[:, ::2, ::2], (3.0, 4.0, 4.0), (0.0, 1.0, 1.0))  # coarser SPECT grid
    identity = Identity("DOE, Jane", "P1", "1950-01-01", "F", "2024-01-01", "", "GSA targets")
    figures = GsaFigures(0.6, 5.0, "RTSTRUCT 'Liver'", "moved 1 mm", "smoothed", None, ("check the liver",))
    for plane in ("axial", "coronal"):
        page = render_page(identity, plane, ct_layer, spect_layer, liver_c, fls_c, itv_c, ptv_c, 100.0, figures,
                           (1, 2))
        rgb = page.pixels
        assert page.identity == identity
        assert rgb.dtype == np.uint8 and rgb.shape == (1080, 1920, 3)
        panels = rgb[100:1040, :1420].astype(int)
        for name in ("Liver", "PTV"):  # outlines, drawn in the ROI's own colour
            close = np.abs(panels - np.asarray(colours[name])).sum(axis=2) < 40
            assert close.sum() > 20, f"{plane}: no pixels in the {name} colour"
        r, g = panels[..., 0], panels[..., 1]
        assert ((g - r) > 60).sum() > 200, "no FLS fill (green over the CT)"
        assert ((r - g) > 60).sum() > 200, "no ITV fill (red over the CT)"
        # uptake is drawn in the blue scale (over the CT) and the colour bar shows the scale up to its top colour
        blue = panels[..., 2].astype(int) - panels[..., 0].astype(int) > 60
        assert blue.sum() > 200
        top = np.asarray(UPTAKE_CMAP(1.0)[:3]) * 255
        near_top = np.abs(rgb[100:1040, 1420:].astype(int) - top).sum(axis=2) < 30
        assert near_top.sum() > 50


def test_structure_table_texts_stay_apart_with_typographic_signs():
    """Clinical volumes (four digits) beside the structure definitions: no two texts of the page touch (the FLS
    definition once ran into its volume: "max1233.6"), and the threshold reads "≥", not ">="."""
    shape = (12, 30, 30)
    liver = np.zeros(shape, dtype=bool)
    liver[3:9, 5:25, 5:25] = True
    fls = liver.copy()
    fls[:, :, 15:] = False
    ptv = liver.copy()
    colours = {"Liver": (255, 215, 0), "FLS": (0, 190, 140), "ITV": (240, 64, 40), "PTV": (255, 60, 255)}
    liver_c, fls_c, itv_c, ptv_c = (Contour(n, m, t, colours[n], "", volume_cm3=v) for n, m, t, v in (
        ("Liver", liver, "ORGAN", 2058.1), ("FLS", fls, "AVOIDANCE", 1233.6), ("ITV", liver & ~fls, "CTV", 824.6),
        ("PTV", ptv, "PTV", 1440.6)))
    layer = Layer(np.where(liver, 100.0, 0.0).astype(np.float32), (3.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    identity = Identity("DOE, Jane", "P1", "1950-01-01", "F", "2024-01-01", "", "GSA FLS>=60%max")
    figures = GsaFigures(0.6, 5.0, "RTSTRUCT 'Liver'", "moved 1 mm", "smoothed", None, ())
    page = render_page(identity, "axial", layer, layer, liver_c, fls_c, itv_c, ptv_c, 100.0, figures, (1, 1))
    assert page.overlaps == ()
    assert any("1233.6" == t for t in page.texts)
    assert any("\u2265 60 %" in t for t in page.texts) and not any(">=" in t for t in page.texts)
