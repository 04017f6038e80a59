"""node.gsa.targets: FLS/ITV by threshold on known values, PTV margin against a brute-force distance."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from node.errors import AnalysisError
from node.gsa.targets import TargetError, compute_targets, expand_mm, volume_cm3


def centres_mm(shape, spacing):
    """Voxel centres (mm) of every voxel, shape (N, 3) in (z, y, x) order."""
    idx = np.indices(shape).reshape(3, -1).T
    return idx * np.asarray(spacing, dtype=float)


def brute_force_expand(mask, spacing, margin):
    """Truth: a voxel is in the expansion when some mask voxel centre lies within `margin` mm of its centre."""
    tree = cKDTree(centres_mm(mask.shape, spacing)[mask.ravel()])
    distance, _ = tree.query(centres_mm(mask.shape, spacing))
    return (distance <= margin + 1e-6).reshape(mask.shape)


def test_threshold_regions_by_construction():
    shape = (6, 8, 8)
    spect = np.zeros(shape, dtype=np.float32)
    liver = np.zeros(shape, dtype=bool)
    liver[1:5, 1:7, 1:7] = True
    spect[liver] = 30.0           # poorly functioning liver
    spect[2, 2:4, 2:4] = 100.0    # hottest liver voxels: the reference maximum
    spect[3, 4:6, 4:6] = 60.0     # exactly 60 % of the maximum: in the FLS (>=)
    spect[1, 5, 5] = 59.9         # just below: not in the FLS
    spect[0, 0, 0] = 1000.0       # outside the liver (e.g. bladder): must not set the reference
    t = compute_targets(spect, liver, (2.0, 1.0, 1.0), fls_threshold=0.6, ptv_margin_mm=0.0)
    expected_fls = np.zeros(shape, dtype=bool)
    expected_fls[2, 2:4, 2:4] = True
    expected_fls[3, 4:6, 4:6] = True
    np.testing.assert_array_equal(t.fls, expected_fls)
    np.testing.assert_array_equal(t.itv, liver & ~expected_fls)
    np.testing.assert_array_equal(t.ptv, t.itv)  # zero margin
    assert t.spect_max_in_liver == 100.0 and t.threshold_value == pytest.approx(60.0)


def test_reference_maximum_overrides_the_noisy_peak():
    spect = np.full((3, 3, 3), 50.0, dtype=np.float32)
    spect[1, 1, 1] = 120.0  # a noise spike
    liver = np.ones((3, 3, 3), dtype=bool)
    t = compute_targets(spect, liver, (1, 1, 1), fls_threshold=0.6, ptv_margin_mm=0.0, reference_max=100.0)
    assert t.threshold_value == pytest.approx(60.0)
    assert t.fls.sum() == 1  # only the spike reaches 60; 50 does not


@pytest.mark.parametrize("spacing, margin", [((2.5, 0.9, 1.3), 5.0), ((5.0, 3.2, 3.2), 5.0), ((1.0, 1.0, 1.0), 3.0)])
def test_ptv_is_the_physical_margin(spacing, margin):
    rng = np.random.default_rng(7)
    itv = np.zeros((14, 30, 26), dtype=bool)
    itv[4:9, 8:20, 6:15] = rng.random((5, 12, 9)) > 0.3  # irregular, with holes and islands
    itv[0, 0, 0] = True  # at the corner: the crop must not clip the grid edge
    ptv = expand_mm(itv, spacing, margin)
    np.testing.assert_array_equal(ptv, brute_force_expand(itv, spacing, margin))


def test_ptv_margin_on_a_single_voxel_counts_the_ellipsoid():
    itv = np.zeros((9, 21, 21), dtype=bool)
    itv[4, 10, 10] = True
    ptv = expand_mm(itv, (2.5, 1.0, 1.0), 5.0)
    # in-plane: 5 mm radius disc; through-plane: +-2 slices (5 mm exactly included)
    assert ptv[4].sum() == sum(1 for y in range(-5, 6) for x in range(-5, 6) if x * x + y * y <= 25)
    assert ptv[6, 10, 10] and not ptv[6, 10, 11] and not ptv[7].any() and not ptv[1].any()


def test_volume_cm3():
    assert volume_cm3(np.ones((10, 10, 10), dtype=bool), (1.0, 1.0, 1.0)) == pytest.approx(1.0)
    assert volume_cm3(np.ones((2, 10, 10), dtype=bool), (2.5, 2.0, 2.0)) == pytest.approx(2.0)


@pytest.mark.parametrize("case, match", [("empty-liver", "empty"), ("no-counts", "no counts"),
                                         ("uniform", "no ITV")])
def test_refusals(case, match):
    spect = np.zeros((4, 4, 4), dtype=np.float32)
    liver = np.zeros((4, 4, 4), dtype=bool)
    if case != "empty-liver":
        liver[1:3, 1:3, 1:3] = True
    if case == "uniform":
        spect[liver] = 10.0
    with pytest.raises(TargetError, match=match) as info:
        compute_targets(spect, liver, (1, 1, 1), fls_threshold=0.6, ptv_margin_mm=5.0)
    assert isinstance(info.value, AnalysisError)
