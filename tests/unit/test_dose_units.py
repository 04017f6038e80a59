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


def test_dvh_convention_on_hand_made_samples() -> None:
    doses = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 50.0, 60.0, 70.0, 80.0, 90.0])
    dvh = dvh_from_samples("x", doses, np.ones(10))
    assert dvh.mean_gy() == pytest.approx(50.0)
    assert dvh.d(50) == 50.0  # 5 voxels (50 %) receive >= 50 Gy ... the tie counts together
    assert dvh.d(70) == 40.0
    assert dvh.d(90) == 20.0
    assert dvh.d(100) == 10.0
    assert dvh.v(50.0) == pytest.approx(60.0)
    assert dvh.v(50.0001) == pytest.approx(40.0)
    assert dvh.v(0.0) == 100.0 and dvh.v(1000.0) == 0.0
    weighted = dvh_from_samples("w", np.array([10.0, 30.0]), np.array([3.0, 1.0]))
    assert weighted.mean_gy() == pytest.approx(15.0) and weighted.v(20) == pytest.approx(25.0)
    # fractional (partial-volume) masks count each voxel by its fraction
    dose = image(np.arange(8, dtype=np.float32).reshape(2, 2, 2))
    frac = np.array([[[1.0, 0.5], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.25]]])
    d = region_dvh("frac", dose, frac, dose)
    assert d.total == pytest.approx(1.75 * 0.064)
    assert d.mean_gy() == pytest.approx((0 * 1 + 1 * 0.5 + 7 * 0.25) / 1.75)


def _summary(nl_gy: float, tumour_gy: float, lung_gy: float):
    from node.dose.dvh import LungDose, NormalLiverDose, TumourDose, Y90DoseSummary, region_dose

    r = lambda name, v: region_dose(dvh_from_samples(name, np.full(10, v), np.ones(10)))  # noqa: E731
    return Y90DoseSummary(tumours=(TumourDose(r("T1", tumour_gy), 100.0, 100.0),),
                          normal_liver=NormalLiverDose(r("non-tumoural liver", nl_gy), 0.0, 0.0),
                          whole_liver=r("whole liver", nl_gy), lungs=LungDose(None, 0.1, 1.0, lung_gy))


def test_safety_flags_follow_the_limits_and_say_they_are_not_prescriptions() -> None:
    resin = DoseLimits.eanm("resin")
    assert check_y90_safety(_summary(35.0, 150.0, 10.0), resin) == ()
    flags = check_y90_safety(_summary(35.0, 150.0, 10.0), resin, TreatmentContext(bilobar=True))
    assert [f.quantity for f in flags] == ["non-tumoural liver mean dose"] and flags[0].limit_gy == 30.0
    flags = check_y90_safety(_summary(20.0, 110.0, 31.0), resin, TreatmentContext(prior_lung_dose_gy=25.0))
    kinds = {(f.severity, f.quantity) for f in flags}
    assert ("note", "tumour T1 mean dose") in kinds
    assert ("warning", "lung mean dose (this session)") in kinds
    assert ("warning", "lung mean dose (cumulative)") in kinds
    assert all("not a prescription" in f.message for f in flags)
    glass = DoseLimits.eanm(SphereType.GLASS)
    assert [f.limit_gy for f in check_y90_safety(_summary(20.0, 150.0, 1.0), glass)] == [205.0]
    site = resin.with_changes(tumour_min_gy=90.0, tumour_goal_gy=100.0)
    assert check_y90_safety(_summary(20.0, 110.0, 1.0), site) == ()
    with pytest.raises(ValueError, match="tumour_goal_gy"):
        resin.with_changes(tumour_goal_gy=50.0)
    with pytest.raises(ValueError, match="lung_session_max_gy"):
        resin.with_changes(lung_session_max_gy=-1.0)


def test_a_limit_is_crossed_when_the_dose_stated_to_0_1_gy_exceeds_it() -> None:
    """The node plans to exactly the limit: a dose stated as 40.0 Gy is within resin's 40 Gy, 40.1 Gy is not."""
    resin = DoseLimits.eanm("resin")
    for nl, flagged in ((40.0, False), (40.04, False), (39.96, False), (40.06, True), (40.1, True)):
        flags = check_y90_safety(_summary(nl, 150.0, 1.0), resin)
        assert [f.quantity for f in flags] == (["non-tumoural liver mean dose"] if flagged else []), nl
        assert all("exceeds" in f.message for f in flags)
    for lung, flagged in ((30.04, False), (30.06, True)):
        flags = check_y90_safety(_summary(20.0, 150.0, lung), resin)
        assert [f.quantity for f in flags] == (["lung mean dose (this session)"] if flagged else []), lung
    assert check_y90_safety(_summary(20.0, 99.96, 1.0), resin)[0].severity == "note"  # 100.0 Gy: the minimum met


def test_limits_of_a_treatment() -> None:
    resin, glass = DoseLimits.eanm("resin"), DoseLimits.eanm("glass")
    assert resin.normal_liver_limit(TreatmentContext()) == 40.0
    assert resin.normal_liver_limit(TreatmentContext(bilobar=True)) == 30.0
    assert resin.normal_liver_limit(TreatmentContext(compromised_liver=True)) == 30.0
    assert glass.normal_liver_limit(TreatmentContext(compromised_liver=True)) == 70.0
    assert resin.lung_limit(TreatmentContext()) == 30.0
    assert resin.lung_limit(TreatmentContext(prior_lung_dose_gy=35.0)) == 15.0  # 50 cumulative - 35 before
    assert resin.lung_limit(TreatmentContext(prior_lung_dose_gy=55.0)) == -5.0  # used up: nothing may shunt


def _blob(shape=(40, 40, 40), spacing=2.0) -> np.ndarray:
    z, y, x = (np.indices(shape) * spacing)
    r = np.sqrt((x - 40) ** 2 + (y - 40) ** 2 + (z - 40) ** 2)
    return (100.0 * np.exp(-(r / 20.0) ** 2)).astype(np.float32)


@pytest.mark.parametrize("shift_mm,passes", [(0.0, True), (2.0, True), (2.8, True), (4.5, False)])
def test_gamma_index_of_shifted_distributions(shift_mm: float, passes: bool) -> None:
    ref = image(_blob(), (2.0, 2.0, 2.0))
    ev = image(_blob(), (2.0, 2.0, 2.0), (shift_mm, 0.0, 0.0))
    g = gamma_index(ref, ev, cutoff_percent=10.0)
    # a pure shift s has gamma <= s / DTA everywhere (the evaluated grid is interpolated)
    assert np.nanmax(g.gamma) <= shift_mm / 3.0 + 0.02
    assert (g.pass_rate == 1.0) == passes


def test_gamma_index_dose_criterion_in_a_flat_region() -> None:
    flat = np.full((20, 20, 20), 50.0, np.float32)
    ref = image(flat, (2.0, 2.0, 2.0))
    inner = np.zeros(flat.shape, bool)
    inner[5:15, 5:15, 5:15] = True
    assert gamma_index(ref, image(flat * 1.029, (2.0, 2.0, 2.0)), mask=inner).pass_rate == 1.0
    g = gamma_index(ref, image(flat * 1.04, (2.0, 2.0, 2.0)), mask=inner)
    assert g.pass_rate == 0.0
    assert np.nanmin(g.gamma) == pytest.approx(4.0 / 3.0, rel=1e-6)  # 4 % of 50 Gy over 3 % of 50 Gy


def test_the_post_therapy_page_states_each_safety_flag_once() -> None:
    """The page listed an under-dose twice: as the flag and as the workflow warning that repeats it."""
    from node.dose.safety import SafetyFlag
    from node.y90post.pipeline import flag_warning, page_notes_of

    flag = SafetyFlag("note", "tumour T1 D70", 80.0, 100.0, "tumour T1 D70 80.0 Gy is below 100 Gy")
    mismatch = "Y-90 tumour T1: delivered mean dose 80.0 Gy is 0.70 x the predicted 114.3 Gy"
    notes = page_notes_of([flag], [mismatch, flag_warning(flag), "not in the field of view: Lungs"])
    assert notes == [flag.message, mismatch, "not in the field of view: Lungs"]
    assert len(page_notes_of([], [f"w{i}" for i in range(20)])) == 8


def test_voxel_maximum_activity_scales_the_plan_to_the_binding_limit() -> None:
    from node.dose.safety import DoseLimits, TreatmentContext, voxel_activity_limit

    resin = DoseLimits.eanm("resin")
    nl = voxel_activity_limit(2.0, 50.0, 10.0, resin, TreatmentContext())
    assert nl is not None and nl.activity_gbq == pytest.approx(1.6) and nl.limited_by == "normal liver"
    lungs = voxel_activity_limit(2.0, 20.0, 40.0, resin, TreatmentContext())  # lungs 30 Gy per session
    assert lungs is not None and lungs.activity_gbq == pytest.approx(1.5) and lungs.limited_by == "lungs"
    used_up = voxel_activity_limit(2.0, 20.0, 5.0, resin, TreatmentContext(prior_lung_dose_gy=50.0))
    assert used_up is not None and used_up.activity_gbq == 0.0 and "0 Gy limit" in used_up.text
    compromised = voxel_activity_limit(2.0, 50.0, None, resin, TreatmentContext(compromised_liver=True))
    assert compromised is not None and compromised.activity_gbq == pytest.approx(1.2)  # 30 Gy
    assert voxel_activity_limit(2.0, 0.0, None, resin, TreatmentContext()) is None
