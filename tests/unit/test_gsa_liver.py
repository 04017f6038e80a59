"""node.gsa.liver: ROI name matching and the SPECT-derived liver on a synthetic GSA SPECT."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from node.errors import AnalysisError
from node.gsa.liver import DERIVED_SOURCE, LiverError, find_liver, liver_from_spect
from node.gsa.settings import GsaSettings
from node.imaging.rois import match_liver_roi

NAMES = GsaSettings().liver_roi_names


def test_roi_name_matching_prefers_configured_order_then_ignores_case():
    assert match_liver_roi(["Body", "Leber", "Liver"], NAMES) == "Liver"
    assert match_liver_roi(["Body", "Leber"], NAMES) == "Leber"
    assert match_liver_roi(["BODY", " LEBER "], ("Leber",)) == " LEBER "
    assert match_liver_roi(["Body", "Liver_old_2019x"], NAMES) is None
    assert match_liver_roi([], NAMES) is None


def ellipsoid(shape, spacing, centre, axes):
    zi, yi, xi = np.indices(shape, dtype=float)
    p = [xi * spacing[0], yi * spacing[1], zi * spacing[2]]
    return sum(((p[i] - centre[i]) / axes[i]) ** 2 for i in range(3)) <= 1


def synthetic_spect():
    """Liver with a cold tumour inside, a separate weaker blob (kidney), low background,
    blurred to a 13 mm FWHM; plus the true liver on a finer "planning" grid (same frame, identity pose)."""
    shape, spacing = (40, 48, 48), (4.42, 4.42, 4.42)
    liver = ellipsoid(shape, spacing, (100, 100, 90), (70, 55, 45))
    tumour = ellipsoid(shape, spacing, (100, 100, 90), (20, 20, 15))  # cold, fully inside: a hole to fill
    kidney = ellipsoid(shape, spacing, (180, 180, 60), (15, 15, 25))  # separate component, weaker
    activity = 0.02 + 1.0 * (liver & ~tumour) + 0.45 * kidney
    blurred = ndimage.gaussian_filter(activity, sigma=13.0 / 2.355 / 4.42)
    spect = sitk.GetImageFromArray((400 * blurred / blurred.max()).astype(np.float32))
    spect.SetSpacing(spacing)
    planning = sitk.Image((120, 120, 60), sitk.sitkFloat32)
    planning.SetSpacing((2.0, 2.0, 3.0))
    truth = ellipsoid((60, 120, 120), (2.0, 2.0, 3.0), (100, 100, 90), (70, 55, 45))
    return spect, planning, truth


def test_spect_derived_liver_fills_the_cold_tumour_and_drops_other_uptake():
    spect, planning, truth = synthetic_spect()
    liver = liver_from_spect(spect, sitk.Transform(3, sitk.sitkIdentity), planning, note="test")
    mask = liver.mask
    assert liver.derived and liver.source == DERIVED_SOURCE and liver.note == "test"
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.9
    tumour = ellipsoid((60, 120, 120), (2.0, 2.0, 3.0), (100, 100, 90), (15, 15, 10))
    assert mask[tumour].all()  # the cold tumour is inside the derived liver
    kidney = ellipsoid((60, 120, 120), (2.0, 2.0, 3.0), (180, 180, 60), (10, 10, 15))
    assert not mask[kidney].any()
    assert ndimage.label(mask)[1] == 1


def test_without_rtstruct_the_liver_is_derived_and_the_reason_given():
    spect, planning, _ = synthetic_spect()
    liver = find_liver(None, [], planning, spect, sitk.Transform(3, sitk.sitkIdentity), NAMES)
    assert liver.derived and "no liver RTSTRUCT" in liver.note and liver.roi_name != "Liver"


def test_no_uptake_and_no_rtstruct_is_refused():
    spect, planning, _ = synthetic_spect()
    empty = sitk.Image(spect.GetSize(), sitk.sitkFloat32)
    empty.CopyInformation(spect)
    with pytest.raises(LiverError, match="no liver") as info:
        find_liver(None, [], planning, empty, sitk.Transform(3, sitk.sitkIdentity), NAMES)
    assert isinstance(info.value, AnalysisError)
