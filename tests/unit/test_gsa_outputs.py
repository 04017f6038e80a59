"""node.gsa.outputs: display orientation of the fusion planes and the rendered montage."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from node.gsa.outputs import Contour, Layer, lps_view, render_fusion

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


def test_render_fusion_draws_the_contours():
    shape = (20, 40, 40)
    ct = np.full(shape, 40.0, dtype=np.float32)
    spect = np.zeros(shape, dtype=np.float32)
    liver = np.zeros(shape, dtype=bool)
    liver[5:15, 10:30, 10:30] = True
    spect[liver] = 100.0
    fls = liver.copy()
    fls[:, :, 20:] = False
    contours = [Contour("Liver", liver, "ORGAN", (255, 215, 0), ""), Contour("FLS", fls, "AVOIDANCE", (0, 200, 0), ""),
                Contour("ITV", liver & ~fls, "CTV", (230, 30, 30), "")]
    ct_layer = Layer(ct, (3.0, 2.0, 2.0), (0.0, 0.0, 0.0))
    spect_layer = Layer(spect[:, ::2, ::2], (3.0, 4.0, 4.0), (0.0, 1.0, 1.0))  # coarser SPECT grid
    for plane, panels in (("axial", 3), ("coronal", 2)):
        rgb = render_fusion(ct_layer, spect_layer, contours, plane, 100.0, ["caption"])
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3
        assert rgb.shape[1] == 500 * panels
        panels_only = rgb[int(0.2 * rgb.shape[0]):int(0.9 * rgb.shape[0])]  # not the legend or caption
        for colour in ((255, 215, 0), (0, 200, 0), (230, 30, 30)):
            close = np.abs(panels_only.astype(int) - np.asarray(colour)).sum(axis=2) < 30
            assert close.sum() > 20, f"{plane}: no pixels in contour colour {colour}"
