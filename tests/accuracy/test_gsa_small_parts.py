"""The GSA small-part rule (node.gsa.targets) on a clinical planning-CT grid: the full-size phantom.

The rule moves FLS/ITV parts below MIN_PART_CM3 (3D) and contours below MIN_CONTOUR_MM2 (per slice) to the
neighbouring structure, so that no one-voxel slivers reach the planning system. On a clinical grid (0.98 mm
pixels, 2.5 mm slices) it must change no structure by 1 % or more, and the structures read back from the
written RTSTRUCT must hold no part below the documented sizes.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from test_gsa_phantom import ANALYSIS, load, written_masks

from node.gsa.pipeline import run_gsa
from node.gsa.targets import MIN_CONTOUR_MM2, MIN_PART_CM3
from node.phantom import write_phantom

pytestmark = pytest.mark.slow
IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
IN_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    phantom = load(write_phantom(tmp_path_factory.mktemp("gsa-full"), size="full", seed=0))
    result = run_gsa(phantom["planning"], phantom["nm"], phantom["spect_ct"], phantom["rtss"], ANALYSIS)
    return phantom, result


def smallest_parts(mask: np.ndarray, spacing_zyx: tuple[float, float, float]) -> tuple[float, float]:
    """(smallest 3D part in cm3, smallest in-plane part in mm2) of a mask."""
    sizes3d = np.bincount(ndimage.label(mask)[0].ravel())[1:]
    sizes2d = np.bincount(ndimage.label(mask, structure=IN_PLANE)[0].ravel())[1:]
    return (float(sizes3d.min()) * float(np.prod(spacing_zyx)) / 1000.0,
            float(sizes2d.min()) * spacing_zyx[1] * spacing_zyx[2])


def test_small_part_rule_changes_no_structure_by_1_percent(full):
    _, result = full
    tidy = result.measurements.small_parts
    assert tidy is not None and tidy.min_part_cm3 == MIN_PART_CM3 and tidy.min_contour_mm2 == MIN_CONTOUR_MM2
    for change in (tidy.itv_change_fraction, tidy.fls_change_fraction, tidy.ptv_change_fraction):
        assert abs(change) < 0.01, tidy


def test_written_structures_hold_no_part_below_the_documented_sizes(full):
    phantom, result = full
    masks = written_masks(result, phantom)
    spacing = tuple(float(s) for s in result.measurements.planning_ct.voxel_mm_zyx)
    for roi in ("FLS", "ITV"):
        part_cm3, contour_mm2 = smallest_parts(masks[roi], spacing)  # type: ignore[arg-type]
        assert part_cm3 >= MIN_PART_CM3 and contour_mm2 >= MIN_CONTOUR_MM2, roi
