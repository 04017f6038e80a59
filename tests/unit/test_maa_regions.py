"""Automatic MAA tumour regions on synthetic SPECT volumes (node.maa.regions)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from node.maa.regions import HOT_FACTOR, SEGMENT_FILTER_FWHM_MM, automatic_tumours, smooth


def test_adjacent_hot_tumours_blurred_into_one_area_are_found_apart() -> None:
    """Two hot spheres 12 mm apart (edge to edge), blurred like a SPECT: one connected hot area with two maxima
    -> two tumours, each with about its own volume; the Poisson noise of a uniform liver gives none."""
    spacing = (4.42, 4.42, 4.42)
    z, y, x = np.indices((40, 48, 48)) * 4.42
    liver = np.ones(z.shape, bool)
    activity = np.full(z.shape, 60.0)
    spheres = [((88.0, 106.0, 70.0), 15.0, 8.0), ((88.0, 106.0, 112.0), 15.0, 5.0)]  # centre, radius, T/N
    for centre, radius, ratio in spheres:
        inside = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius ** 2
        activity[inside] = 60.0 * ratio
    blurred = ndimage.gaussian_filter(activity, 13.0 / 2.3548 / 4.42)
    spect = np.random.default_rng(1).poisson(blurred).astype(np.float32)
    sm = smooth(spect, spacing, SEGMENT_FILTER_FWHM_MM)
    hot = sm >= HOT_FACTOR * np.median(sm)
    assert ndimage.label(hot)[1] == 1  # one area: connected components alone would see one tumour
    found, details = automatic_tumours(spect, liver, spacing, margin_mm=15.0)
    assert len(found) == 2 and details["seeds"] == 2
    true_ml = 4.0 / 3.0 * np.pi * 15.0 ** 3 / 1000.0
    for region in found.values():
        assert region.sum() * 4.42 ** 3 / 1000.0 == pytest.approx(true_ml, rel=0.35)
    flat = np.random.default_rng(2).poisson(np.full(z.shape, 60.0)).astype(np.float32)
    assert automatic_tumours(flat, liver, spacing, margin_mm=15.0)[0] == {}
