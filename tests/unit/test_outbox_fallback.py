"""Secondary Capture rendition of a Parametric Map: pixel truth, references, determinism, IOD validity."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.uid import ParametricMapStorage, SecondaryCaptureImageStorage

from node.pm_fallback import FallbackError, pm_to_secondary_capture
from testpeers.orthanc import dciodvfy_errors, make_ct_series, make_parametric_map


@pytest.fixture(scope="module")
def ct_pm():
    ct = make_ct_series(n_slices=5, rows=6, cols=7, seed=3)
    # Known values, distinct per frame and pixel; frame k lies at z = 2k mm (the CT slice order).
    values = (np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7) * 0.5).astype(np.float32)
    return ct, values, make_parametric_map(ct, values)


def test_pixels_are_the_windowed_real_world_values_tiled_in_slice_order(ct_pm) -> None:
    ct, values, pm = ct_pm
    sc = pm_to_secondary_capture(pm)
    # make_parametric_map sets a VOI window of centre 60, width 120: grey 0..255 spans 0..120 mL/min/100 mL.
    expected = np.rint(np.clip(values / 120.0, 0, 1) * 255).astype(np.uint8)
    img = sc.pixel_array
    assert (sc.Rows, sc.Columns) == (2 * 6, 3 * 7)  # 5 frames -> 2 rows x 3 columns of tiles
    for k in range(5):
        r, c = divmod(k, 3)
        np.testing.assert_array_equal(img[r * 6:(r + 1) * 6, c * 7:(c + 1) * 7], expected[k])
    assert not img[6:, 14:].any()  # the unused sixth tile is black
    assert "0..120 mL/min/(100.mL)" in sc.DerivationDescription


def test_window_falls_back_to_percentiles_and_non_finite_values_are_black(ct_pm) -> None:
    ct, _, _ = ct_pm
    values = np.tile(np.linspace(0, 100, 6 * 7, dtype=np.float32).reshape(6, 7), (5, 1, 1))
    values[0, 0, 0] = np.nan
    pm = make_parametric_map(ct, values)
    for group in pm.SharedFunctionalGroupsSequence:
        if "FrameVOILUTSequence" in group:
            del group.FrameVOILUTSequence
    for group in pm.PerFrameFunctionalGroupsSequence:
        if "FrameVOILUTSequence" in group:
            del group.FrameVOILUTSequence
    img = pm_to_secondary_capture(pm).pixel_array
    finite = values[np.isfinite(values)]
    lo, hi = np.percentile(finite, 1), np.percentile(finite, 99)
    tile = img[:6, :7].astype(float)
    assert tile[0, 0] == 0  # NaN
    truth = np.rint(np.clip((values[0] - lo) / (hi - lo), 0, 1) * 255)
    np.testing.assert_array_equal(tile.ravel()[1:], truth.ravel()[1:])


def test_is_a_valid_derived_sc_referencing_the_map_and_its_sources(ct_pm, tmp_path: Path) -> None:
    ct, _, pm = ct_pm
    sc = pm_to_secondary_capture(pm)
    assert sc.SOPClassUID == SecondaryCaptureImageStorage
    assert list(sc.ImageType)[:2] == ["DERIVED", "SECONDARY"]
    for kw in ("PatientID", "PatientName", "StudyInstanceUID", "AccessionNumber", "StudyID"):
        assert sc.get(kw) == ct[0].get(kw)
    refs = {(str(i.ReferencedSOPClassUID), str(i.ReferencedSOPInstanceUID)) for i in sc.SourceImageSequence}
    assert (ParametricMapStorage, pm.SOPInstanceUID) in refs
    assert {(str(c.SOPClassUID), str(c.SOPInstanceUID)) for c in ct} <= refs
    assert sc.SeriesInstanceUID != pm.SeriesInstanceUID
    assert "not for primary diagnosis" in sc.SeriesDescription
    assert pm.SOPInstanceUID in sc.DerivationDescription
    # The same map always gives the same instance: a repeated fallback does not duplicate it at the peer.
    again = pm_to_secondary_capture(pm)
    assert (again.SOPInstanceUID, again.SeriesInstanceUID) == (sc.SOPInstanceUID, sc.SeriesInstanceUID)
    path = tmp_path / "sc.dcm"
    sc.save_as(path, enforce_file_format=True)
    assert dciodvfy_errors(path) == []


def test_refuses_objects_that_are_not_parametric_maps(ct_pm) -> None:
    ct, _, _ = ct_pm
    with pytest.raises(FallbackError, match="not a Parametric Map"):
        pm_to_secondary_capture(ct[0])
