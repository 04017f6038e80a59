"""Series content from instance facts (node.seriescontent): the geometry and time facts roles are decided on."""
# mypy: disable-error-code="operator"
from __future__ import annotations

import math
from collections.abc import Sequence

import pytest

from node.seriescontent import (
    InstanceFacts,
    coverage,
    ct_image_problem,
    encode_frames,
    spect_problem,
    summarise,
    volume_problem,
)

CT, NM, SC = "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.20", "1.2.840.10008.5.1.4.1.1.7"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _ct(zs: list[float], times: Sequence[float | None] | None = None, orientation: tuple[float, ...] = AXIAL,
        image_type: str = "ORIGINAL\\PRIMARY\\AXIAL", sop: str = CT) -> list[InstanceFacts]:
    times = times or [None] * len(zs)
    return [InstanceFacts(sop, image_type, (0.0, 0.0, z), orientation, t, None, 1, "", "")
            for z, t in zip(zs, times, strict=True)]


def test_a_contiguous_axial_stack() -> None:
    c = summarise(_ct([5.0 * k for k in range(30)]))
    assert (c.positions, c.time_points, c.gaps, c.orientations) == (30, 1, 0, 1)
    assert c.spacing_mm == pytest.approx(5.0) and c.extent_mm == pytest.approx(145.0)
    assert c.z_range == pytest.approx((-2.5, 147.5)) and c.tilt_deg == pytest.approx(0.0)
    assert ct_image_problem("CT", c) is None and volume_problem(c) is None


def test_missing_slices_are_a_gap_and_order_does_not_matter() -> None:
    zs = [5.0 * k for k in range(30) if k not in (11, 12)]
    c = summarise(_ct(list(reversed(zs))))
    assert c.gaps == 1 and c.largest_step_mm == pytest.approx(15.0)
    assert "gaps in the stack" in volume_problem(c)


def test_repeated_positions_are_time_points_with_their_span() -> None:
    zs = [10.0 * k for k in range(4)] * 3
    times = [1000.0 + 120.0 * (i // 4) for i in range(12)]  # three phases two minutes apart
    c = summarise(_ct(zs, times))
    assert (c.positions, c.time_points) == (4, 3) and c.time_span_s == pytest.approx(240.0)
    assert "3 time points over 240 s" in volume_problem(c)


def test_orientation_tilt_and_several_planes() -> None:
    tilt = math.radians(20)
    tilted = (1.0, 0.0, 0.0, 0.0, math.cos(tilt), math.sin(tilt))
    # a gantry tilt whose slices were stacked along z (sheared): the CT reader refuses it, so no CT role either
    sheared = ct_image_problem("CT", summarise(_ct([0.0, 5.0, 10.0], orientation=tilted)))
    assert sheared is not None and sheared.startswith("not used:") and "gantry tilt" in sheared
    # slices 20 degrees from axial stacked along their own normal: a straight stack the reader takes
    normal = (0.0, -math.sin(tilt), math.cos(tilt))
    straight = [InstanceFacts(CT, "ORIGINAL\\PRIMARY\\AXIAL", (d * normal[0], d * normal[1], d * normal[2]), tilted,
                              None, None, 1, "", "") for d in (0.0, 5.0, 10.0)]
    assert ct_image_problem("CT", summarise(straight)) is None
    sagittal = summarise(_ct([0.0, 5.0], orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0)))
    assert "not axial" in ct_image_problem("CT", sagittal)
    three_planes = summarise(_ct([0.0]) + _ct([0.0], orientation=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0))
                             + _ct([0.0], orientation=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0)))
    assert "3 different orientations" in ct_image_problem("CT", three_planes)


@pytest.mark.parametrize(("image_type", "sop", "words"), [
    ("ORIGINAL\\PRIMARY\\LOCALIZER", CT, "a localizer"),
    ("DERIVED\\SECONDARY\\MPR", CT, "DERIVED"),
    ("ORIGINAL\\PRIMARY\\MIP", CT, "a mip"),
    ("DERIVED\\SECONDARY\\DOSE_INFO", SC, "Secondary Capture"),
])
def test_what_is_never_a_ct_input(image_type: str, sop: str, words: str) -> None:
    assert words in ct_image_problem("CT", summarise(_ct([0.0, 5.0], image_type=image_type, sop=sop)))


def test_an_nm_stack_from_its_frames_and_the_coverage_of_a_ct() -> None:
    frames = [(0.0, 0.0, 4.42 * k) for k in range(64)]
    nm = summarise([InstanceFacts(NM, "ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION", frames[0], AXIAL, 1000.0, None,
                                  64, "", encode_frames(frames, []))])
    assert (nm.frames, nm.positions, nm.time_points) == (64, 64, 1) and spect_problem("NM", NM, nm) is None
    ct_full = summarise(_ct([5.0 * k for k in range(58)]))
    ct_half = summarise(_ct([5.0 * k for k in range(29)]))
    assert coverage(ct_full, nm) == pytest.approx(1.0) and coverage(ct_half, nm) == pytest.approx(0.51, abs=0.01)
    planar = summarise([InstanceFacts(NM, "ORIGINAL\\PRIMARY\\WHOLE BODY\\EMISSION", None, None, None, None, 1, "",
                                      "")])
    assert "planar whole body" in spect_problem("NM", NM, planar)
    unplaced = summarise([InstanceFacts(NM, "DERIVED\\PRIMARY\\RECON TOMO\\EMISSION", None, None, None, None, 13,
                                        "", "")])
    assert "cannot be placed" in spect_problem("NM", NM, unplaced)


def test_unusable_instances_are_never_inputs() -> None:
    facts = _ct([0.0, 5.0])
    facts[1] = InstanceFacts(CT, "ORIGINAL\\PRIMARY\\AXIAL", (0.0, 0.0, 5.0), AXIAL, None, None, 1,
                             "no-pixel-data: CT Image Storage without pixel data", "")
    assert "accepted but not usable (no-pixel-data)" in ct_image_problem("CT", summarise(facts))
