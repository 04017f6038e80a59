"""CTs smaller than the block the analyses average over (a short or thin real CT): a clear outcome, never
SimpleITK's "BinShrink: InputImage is too small!" (issue 13 audit M6)."""
from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from node.dose.density import DEFAULT_CALIBRATION, mass_on_grid
from node.maa.shunt import lung_shunt


def _image(shape_zyx: tuple[int, int, int], spacing_xyz: tuple[float, float, float], value: float) -> sitk.Image:
    img = sitk.GetImageFromArray(np.full(shape_zyx, value, dtype=np.float32))
    img.SetSpacing(spacing_xyz)
    return img


def test_a_ct_narrower_than_the_lung_block_gives_the_configured_shunt_with_a_reason() -> None:
    ct = _image((3, 2, 2), (0.5, 0.5, 0.5), -800.0)  # 1 mm wide: less than one 2 mm lung block
    nm = _image((8, 8, 8), (4.0, 4.0, 4.0), 0.0)
    liver = np.zeros((8, 8, 8))
    liver[2:6, 2:6, 2:6] = 1.0
    shunt = lung_shunt(np.zeros((8, 8, 8)), nm, liver, ct, configured=0.05)
    assert shunt.lsf == 0.05 and shunt.source == "configuration"
    assert shunt.reason and "BinShrink" not in shunt.reason


def test_a_ct_thinner_than_one_averaging_block_still_gives_its_density() -> None:
    ct = _image((2, 8, 8), (0.5, 0.5, 0.5), 0.0)  # two 0.5 mm slices of water; the blocks are 2 mm
    grid = _image((1, 1, 1), (10.0, 10.0, 10.0), 0.0)
    grid.SetOrigin((1.75, 1.75, 0.25))
    mass = mass_on_grid(ct, grid)
    water = float(DEFAULT_CALIBRATION.density(np.zeros(1))[0])
    assert np.isfinite(mass.density_g_per_ml).all()
    assert abs(float(mass.density_g_per_ml[0, 0, 0]) - water) < 1e-6
