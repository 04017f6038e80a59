"""Dose building blocks against hand-written expectations: density calibration, mass on a grid, LDM energy
conservation, MAA scaling, partition model = voxel means for uniform compartments, decay correction, DVH
convention, safety flags, gamma index."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from pydicom import Dataset

from node.dose.activity import (
    Y90_HALF_LIFE_S,
    decay_factor,
    delivered_from_pet,
    pet_decay_info,
    predicted_from_maa,
    scaled_to_administered,
)
from node.dose.density import DEFAULT_CALIBRATION, DensityCalibration, mass_on_grid
from node.dose.dvh import Y90Structures, dvh_from_samples, region_dvh, summarize_y90
from node.dose.errors import DoseInputError
from node.dose.gamma import gamma_index
from node.dose.ldm import ldm_dose
from node.dose.safety import DoseLimits, SphereType, TreatmentContext, check_y90_safety
from node.maa.partition import partition_plan


def image(array: np.ndarray, spacing=(4.0, 4.0, 4.0), origin=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    if direction is not None:
        img.SetDirection(direction)
    return img


def test_default_calibration_points_and_validation() -> None:
    rho = DEFAULT_CALIBRATION.density(np.array([-2000.0, -1000.0, -850.0, 0.0, 55.0, 100.0, 850.0, 3000.0]))
    assert rho == pytest.approx([0.0012, 0.0012, 0.0012 + 0.15 * 0.9988, 1.0, 1.055, 1.1, 1.51, 1.92], abs=1e-4)
    with pytest.raises(ValueError, match="increase"):
        DensityCalibration(hu=(0.0, 0.0), density_g_per_ml=(1.0, 1.1))
    with pytest.raises(ValueError, match="positive"):
        DensityCalibration(hu=(-1000.0, 0.0), density_g_per_ml=(0.0, 1.0))
    with pytest.raises(ValueError, match="same number"):
        DensityCalibration(hu=(-1000.0, 0.0, 10.0), density_g_per_ml=(0.1, 1.0))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_mass_on_a_coarse_grid_keeps_the_ct_mass(seed: int) -> None:
    """A block of soft tissue and a slab of lung in air, seen through an emission grid of other voxels at a random
    offset: the voxel masses add up to the tissue's mass (partial voxels included)."""
    rng = np.random.default_rng(seed)
    hu = np.full((40, 60, 60), -1000.0, np.float32)  # 2 x 2 x 3 mm CT voxels
    hu[8:30, 10:50, 12:44] = 40.0  # 22 x 40 x 32 voxels of soft tissue
    hu[30:36, 10:50, 12:44] = -850.0  # lung above it
    ct = image(hu, (2.0, 2.0, 3.0))
    expected = (22 * 40 * 32 * 1.04 + 6 * 40 * 32 * DEFAULT_CALIBRATION.density(np.array([-850.0]))[0]
                + (hu.size - 28 * 40 * 32) * 0.0012) * 12.0 / 1e6
    spacing = float(rng.uniform(3.9, 4.9))
    n = int(np.ceil(130 / spacing))
    grid = image(np.zeros((n, n, n), np.float32), (spacing,) * 3, tuple(rng.uniform(-3.0, 0.0, 3)))
    mass = mass_on_grid(ct, grid)
    inside = np.isfinite(mass.mass_kg)
    assert inside.any() and (~inside).any()  # the emission grid reaches beyond the CT
    assert mass.mass_kg[inside].sum() == pytest.approx(expected, rel=0.01)


def test_ldm_conserves_energy_and_drops_activity_in_air() -> None:
    rng = np.random.default_rng(5)
    hu = np.full((10, 10, 10), 40.0, np.float32)
    hu[:, :, :4] = -1000.0  # air at one side
    ct = image(hu)
    gbq = rng.uniform(0, 1e-3, (10, 10, 10))
    gbq[:, :, 3:5] = 0.0  # the voxels at the air-tissue edge share both (the mass is averaged over the voxel)
    from node.dose.activity import ActivityMap

    act = ActivityMap(gbq=gbq, grid=ct, method="test")
    dose = ldm_dose(act, mass_on_grid(ct, ct))
    air = float(gbq[:, :, :3].sum())
    assert dose.dropped_gbq == pytest.approx(air, rel=1e-6)
    assert dose.energy_gy_kg() == pytest.approx(49.67 * (gbq.sum() - air), rel=1e-6)
    assert (dose.array[:, :, :3] == 0).all()
    voxel_kg = 1.04 * 0.064 / 1000.0
    assert dose.array[5, 5, 5] == pytest.approx(49.67 * gbq[5, 5, 5] / voxel_kg, rel=1e-5)


def test_maa_scaling_gives_liver_and_lungs_their_shares() -> None:
    counts = np.random.default_rng(1).poisson(20.0, (12, 12, 12)).astype(float)
    liver = np.zeros(counts.shape, bool)
    liver[2:8, 2:10, 2:10] = True
    lungs = np.zeros(counts.shape, bool)
    lungs[8:12] = True
    lungs[6:8] = True  # overlaps the liver: the liver wins
    act = predicted_from_maa(counts, image(counts), liver, lungs, 2.0, 0.1)
    assert act.gbq[liver].sum() == pytest.approx(1.8)
    assert act.gbq[lungs & ~liver].sum() == pytest.approx(0.2)
    assert act.total_gbq == pytest.approx(2.0)
    assert (act.gbq[~(liver | lungs)] == 0).all()
    no_lungs = predicted_from_maa(counts, image(counts), liver, None, 2.0, 0.1)
    assert no_lungs.total_gbq == pytest.approx(1.8)
    assert any("not in the dose map" in n for n in no_lungs.notes)
    with pytest.raises(DoseInputError, match="lung shunt"):
        predicted_from_maa(counts, image(counts), liver, lungs, 2.0, 1.0)
    with pytest.raises(DoseInputError, match="no MAA counts"):
        predicted_from_maa(np.zeros_like(counts), image(counts), liver, lungs, 2.0, 0.1)
    brems = scaled_to_administered(counts, image(counts), liver, 1.5, 0.9)
    assert brems.total_gbq == pytest.approx(1.35)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_partition_model_equals_voxel_means_for_uniform_compartments(seed: int) -> None:
    """Where the partition model's assumptions hold (uniform concentration in each compartment, the densities it
    assumes), its normal-liver, tumour and lung doses are the voxel means of the LDM dose."""
    rng = np.random.default_rng(seed)
    shape = (40, 48, 48)
    zz, yy, xx = np.indices(shape)
    liver = (((zz - 20) / 16.0) ** 2 + ((yy - 24) / 20.0) ** 2 + ((xx - 20) / 18.0) ** 2) <= 1.0
    tumours, tn = {}, {}
    for i in range(int(rng.integers(1, 4))):
        c = rng.integers([12, 14, 12], [28, 34, 28])
        r = float(rng.uniform(2.5, 5.0))
        tumours[f"T{i + 1}"] = (((zz - c[0]) ** 2 + (yy - c[1]) ** 2 + (xx - c[2]) ** 2) <= r * r) & liver
        tn[f"T{i + 1}"] = float(rng.uniform(2.0, 9.0))
    for name in list(tumours):  # keep tumours disjoint
        for other in tumours:
            if other < name:
                tumours[name] &= ~tumours[other]
    lungs = np.zeros(shape, bool)
    lungs[:, :, 40:] = True
    lsf = float(rng.uniform(0.02, 0.2))
    normal = liver.copy()
    for t in tumours.values():
        normal &= ~t
    # uniform concentrations: normal liver 1, tumours T/N; lungs at the level giving the LSF
    counts = normal.astype(float)
    for name, t in tumours.items():
        counts[t] = tn[name]
    counts[lungs] = lsf / (1 - lsf) * counts[liver].sum() / lungs.sum()
    # CT at the partition model's densities: liver and tumours 1.03 g/mL, lungs 0.30 g/mL
    calibration = DensityCalibration(hu=(-1000.0, -700.0, 30.0, 100.0), density_g_per_ml=(0.001, 0.30, 1.03, 1.1))
    hu = np.full(shape, 30.0, np.float32)
    hu[lungs] = -700.0
    spect = image(counts.astype(np.float32))
    ct = image(hu)
    vml = 0.064
    plan = partition_plan(tn, {n: float(t.sum()) * vml for n, t in tumours.items()}, float(normal.sum()) * vml,
                          lsf, normal_liver_limit_gy=float(rng.uniform(30, 80)), lung_limit_gy=1e6,
                          lung_ml=float(lungs.sum()) * vml)
    act = predicted_from_maa(counts, spect, liver, lungs, plan.activity_gbq, lsf)
    dose = ldm_dose(act, mass_on_grid(ct, spect, calibration))
    summary = summarize_y90(dose.dose, Y90Structures(spect, liver, tumours, lungs))
    assert summary.normal_liver.region.mean_gy == pytest.approx(plan.normal_liver_dose_gy, rel=1e-4)
    for t in summary.tumours:
        assert t.region.mean_gy == pytest.approx(plan.tumour_doses_gy[t.region.name], rel=1e-4)
    assert summary.lungs.region is not None
    assert summary.lungs.region.mean_gy == pytest.approx(plan.lung_dose_gy, rel=1e-4)


def _pet_header(correction: str = "START", half_life: float = Y90_HALF_LIFE_S, admin: str = "20240123103000",
                units: str = "BQML") -> Dataset:
    ds = Dataset()
    ds.Units = units
    ds.DecayCorrection = correction
    ds.SeriesDate, ds.SeriesTime = "20240124", "090000"
    ds.AcquisitionDate, ds.AcquisitionTime = "20240124", "090000"
    ds.ActualFrameDuration = 20 * 60 * 1000
    item = Dataset()
    item.RadionuclideHalfLife = f"{half_life:g}"
    if admin:
        item.RadiopharmaceuticalStartDateTime = admin
    ds.RadiopharmaceuticalInformationSequence = [item]
    return ds


def test_pet_decay_correction_to_the_administration() -> None:
    info = pet_decay_info(_pet_header())
    assert info.elapsed_h == pytest.approx(22.5)
    assert info.factor_to_administration == pytest.approx(2 ** (22.5 / 64.1), rel=1e-9)
    none = pet_decay_info(_pet_header("NONE"))
    assert none.elapsed_h == pytest.approx(22.5 + 10 / 60)  # mid-frame
    assert pet_decay_info(_pet_header("ADMIN")).factor_to_administration == 1.0
    tz = pet_decay_info(_pet_header(admin="20240123103000+0100"))
    assert tz.elapsed_h == pytest.approx(22.5)  # an offset on one side only: same local clock
    pet = image(np.full((4, 4, 4), 1.0e5, np.float32), (4.0, 4.0, 4.0))
    act = delivered_from_pet(pet, info)
    assert act.total_gbq == pytest.approx(64 * 1e5 * 0.064 * 1e-9 * 2 ** (22.5 / 64.1), rel=1e-9)
    with pytest.raises(DoseInputError, match="not Y-90"):
        pet_decay_info(_pet_header(half_life=6586.2))  # F-18
    with pytest.raises(DoseInputError, match="administered"):
        pet_decay_info(_pet_header(admin=""))
    with pytest.raises(DoseInputError, match="Bq/mL"):
        pet_decay_info(_pet_header(units="CNTS"))
    with pytest.raises(DoseInputError, match="before the administration"):
        pet_decay_info(_pet_header(admin="20240125103000"))
    assert decay_factor(Y90_HALF_LIFE_S) == pytest.approx(2.0)


def test_pet_times_are_read_by_the_nodes_one_date_time_parser() -> None:
    """ACR-NEMA colons are read, a start time falls back on the series date, an unreadable time is an input error."""
    colons = _pet_header(admin="")
    colons.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartTime = "10:30:00"
    colons.SeriesDate, colons.SeriesTime = "20240124", "12:00:00"
    assert pet_decay_info(colons).elapsed_h == pytest.approx(1.5)  # the start time on the series date
    partial = _pet_header(admin="202401231030")  # a DT down to the minute
    assert pet_decay_info(partial).elapsed_h == pytest.approx(22.5)
    bad = _pet_header()
    bad.SeriesTime = "99xx"
    with pytest.raises(DoseInputError, match="unreadable date or time"):
        pet_decay_info(bad)
