"""node.imaging.registration on synthetic CTs: a known rigid transform is recovered; failures are refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from node.errors import AnalysisError, itk_reason
from node.imaging.registration import RegistrationError, register_rigid
from node.record import encode

# Synthetic abdomen in "body" coordinates (mm): (centre, semi-axes, HU). Asymmetric, with structure along z
# (lungs, vertebrae, kidneys, gas pockets) so that a rigid pose is well defined.
_BLOBS = [
    ((60, -10, 10), (55, 48, 75), 60.0),     # liver
    ((-60, 20, -30), (30, 35, 45), 45.0),    # spleen
    ((55, 55, -60), (22, 25, 40), 30.0),     # right kidney
    ((-55, 55, -70), (22, 25, 40), 30.0),    # left kidney
    ((-20, -40, -20), (15, 12, 15), -1000),  # bowel gas
    ((30, -55, -90), (10, 10, 12), -1000),   # bowel gas
    ((-70, -20, 50), (35, 40, 40), -800),    # left lung base
    ((65, -15, 120), (40, 45, 40), -800),    # right lung base
]


def body_image(size, spacing, origin) -> sitk.Image:
    """CT (HU) of the synthetic abdomen sampled on a grid given in body coordinates."""
    zi, yi, xi = np.indices(size[::-1], dtype=float)
    x, y, z = (origin[0] + xi * spacing[0], origin[1] + yi * spacing[1], origin[2] + zi * spacing[2])
    hu = np.full(x.shape, -1000.0, dtype=np.float32)
    body = (x / 150) ** 2 + (y / 105) ** 2 <= 1
    hu[body] = -80.0  # fat
    hu[body & ((x / 135) ** 2 + (y / 92) ** 2 <= 1)] = 40.0
    for (cx, cy, cz), (a, b, c), value in _BLOBS:
        hu[body & (((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1)] = value
    spine = (x ** 2 + (y - 65) ** 2 <= 16 ** 2) & (np.mod(z, 30.0) < 24.0)  # vertebrae with discs
    hu[spine] = 700.0
    hu += np.random.default_rng(0).normal(0, 8, hu.shape).astype(np.float32)  # type: ignore[attr-defined]
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    return image


def moving_scan(pose: sitk.Euler3DTransform, size, spacing, origin) -> sitk.Image:
    """The same body scanned where planning point p sits at pose(p): moving(pose(p)) = fixed(p)."""
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing(spacing)
    grid.SetOrigin(origin)
    reference = body_image((100, 72, 80), (3.2, 3.2, 4.0), (-160.0, -115.0, -170.0))
    return sitk.Resample(reference, grid, pose.GetInverse(), sitk.sitkLinear, -1000.0)


@pytest.fixture(scope="module")
def fixed() -> sitk.Image:
    return body_image((100, 72, 50), (3.2, 3.2, 4.0), (-160.0, -115.0, -120.0))


def truth_pose() -> sitk.Euler3DTransform:
    pose = sitk.Euler3DTransform()
    pose.SetRotation(*np.radians([2.5, -3.0, 4.0]))
    pose.SetTranslation((18.0, -12.0, 140.0))  # the SPECT/CT's table position differs by 14 cm
    return pose


def test_known_rigid_transform_recovered(fixed):
    truth = truth_pose()
    # Moving scan: coarser, shorter in z and shifted along it, so head/foot ends do not match the planning CT.
    moving = moving_scan(truth, (80, 60, 40), (4.0, 4.0, 4.0), (-150.0, -125.0, 20.0))
    reg = register_rigid(fixed, moving)
    m = reg.matrix()
    r_true = np.asarray(truth.GetMatrix()).reshape(3, 3)
    angle = np.degrees(np.arccos(np.clip((np.trace(m[:3, :3].T @ r_true) - 1) / 2, -1, 1)))
    assert angle < 0.5
    # points of the overlapping body region (planning z -100..+40 mm) map to within 1 mm of the truth
    pts = np.array([[x, y, z] for x in (-120, 0, 120) for y in (-80, 0, 80) for z in (-100, -30, 40)], float)
    mapped = pts @ m[:3, :3].T + m[:3, 3]
    expected = np.array([truth.TransformPoint(tuple(p)) for p in pts])
    assert np.linalg.norm(mapped - expected, axis=1).max() < 1.0
    # the matrix states the same mapping as the SimpleITK transform (fixed -> moving)
    assert np.allclose(mapped[0], reg.transform.TransformPoint(tuple(pts[0])), atol=1e-6)
    summary = json.loads(json.dumps(encode(reg.summary())))
    assert summary["body_dice"] > 0.9 and summary["iterations"] > 0 and summary["final_metric_mattes_mi"] < 0
    assert "planning-CT patient coordinates" in summary["matrix_direction"]
    true_angle = np.degrees(np.arccos((np.trace(r_true) - 1) / 2))
    assert summary["rotation_deg"] == pytest.approx(true_angle, abs=0.5)
    assert summary["translation_mm"] == pytest.approx(list(m[:3, 3]), abs=1e-3)


def test_no_patient_in_moving_ct_is_refused(fixed):
    air = sitk.Image((40, 40, 20), sitk.sitkFloat32) - 1000.0
    air.SetSpacing((5.0, 5.0, 5.0))
    with pytest.raises(RegistrationError, match="no patient body") as info:
        register_rigid(fixed, air)
    assert isinstance(info.value, AnalysisError)


def test_unrelated_moving_ct_is_refused(fixed):
    # A 9 cm water cube is not this patient: whatever the optimiser does, the body outlines cannot agree.
    cube = np.full((30, 30, 30), -1000.0, dtype=np.float32)
    cube[5:23, 5:23, 5:23] = 0.0
    phantom = sitk.GetImageFromArray(cube)
    phantom.SetSpacing((5.0, 5.0, 5.0))
    phantom.SetOrigin((-75.0, -75.0, -75.0))
    with pytest.raises(RegistrationError, match="implausible|overlap|failed"):
        register_rigid(fixed, phantom)


@pytest.mark.parametrize(("slices", "which"), [(3, "moving"), (1, "moving"), (2, "fixed")])
def test_a_ct_too_short_to_register_is_refused_in_words(fixed, slices: int, which: str):
    short = body_image((100, 72, slices), (3.2, 3.2, 4.0), (-160.0, -115.0, -20.0))
    pair = (fixed, short) if which == "moving" else (short, fixed)
    with pytest.raises(RegistrationError) as info:
        register_rigid(*pair, fixed_name="planning CT", moving_name="SPECT/CT's CT")
    name = "SPECT/CT's CT" if which == "moving" else "planning CT"
    message = str(info.value)
    assert message.startswith(f"the {name} is too small to register: {slices} slice")
    assert f"({slices * 4} mm) along the body (z); at least 16 mm is needed" in message
    assert "ITK" not in message and "BinShrink" not in message  # not SimpleITK's words


def test_a_ct_of_one_value_is_refused_as_such_not_as_not_overlapping(fixed):
    blank = sitk.Image((60, 60, 30), sitk.sitkFloat32)  # 0 HU everywhere: a body, but no anatomy
    blank.SetSpacing((3.0, 3.0, 4.0))
    blank.SetOrigin((-100.0, -100.0, -60.0))
    for pair, name in (((fixed, blank), "post-therapy CT"), ((blank, fixed), "MAA CT")):
        with pytest.raises(RegistrationError) as info:
            register_rigid(*pair, fixed_name="MAA CT", moving_name="post-therapy CT")
        assert str(info.value) == (f"the {name} holds the same value everywhere (0 HU): no anatomy to register on "
                                   "(a blank or synthetic image?)")


def test_simpleitk_errors_read_without_source_paths_or_addresses():
    tiny = sitk.Image((2, 2, 2), sitk.sitkFloat32)
    with pytest.raises(RuntimeError) as info:  # SimpleITK's own exception, as an analysis would meet it
        sitk.BinShrink(tiny, [4, 4, 4])
    assert ".hxx" in str(info.value) and "0x" in str(info.value)
    reason = itk_reason(info.value)
    assert reason.startswith("SimpleITK BinShrink: InputImage is too small!")
    assert ".hxx" not in reason and "0x" not in reason
    assert itk_reason(ValueError("first line\nsecond")) == "first line"
