"""Partition model against hand calculations of science.md section 3 (numbers worked out on paper)."""
from __future__ import annotations

import math

import pytest

from node.maa.partition import partition_plan


def test_normal_liver_limited_activity_matches_hand_calculation():
    # m_T = 100 mL x 1.03 g/mL = 0.103 kg; m_N = 1500 mL x 1.03 = 1.545 kg; T/N = 5; LSF = 0.10
    # A_N = 70 x (5 x 0.103 + 1.545) / (49.67 x 0.9) = 70 x 2.060 / 44.703 = 3.2257 GBq
    # m_lung = 3000 mL x 0.30 g/mL = 0.900 kg; A_lung = 30 x 0.9 / (49.67 x 0.1) = 5.4359 GBq -> A = A_N
    # D_T = 5 x 70 = 350 Gy; D_lung = 49.67 x 3.2257 x 0.1 / 0.9 = 17.802 Gy
    plan = partition_plan({"T": 5.0}, {"T": 100.0}, 1500.0, 0.10, 70.0, 30.0, lung_ml=3000.0)
    assert plan.limited_by == "normal liver"
    assert plan.activity_gbq == pytest.approx(3.2257, abs=5e-4)
    assert plan.activity_lung_limit_gbq == pytest.approx(5.4359, abs=5e-4)
    assert plan.normal_liver_dose_gy == pytest.approx(70.0, abs=1e-6)
    assert plan.tumour_doses_gy["T"] == pytest.approx(350.0, abs=1e-4)
    assert plan.lung_dose_gy == pytest.approx(17.802, abs=2e-3)
    assert plan.lung_mass_kg == pytest.approx(0.9)


def test_lung_limited_activity_matches_hand_calculation():
    # Same liver, LSF = 0.20, lungs not imaged -> standard 1 kg
    # A_N = 70 x 2.060 / (49.67 x 0.8) = 144.2 / 39.736 = 3.6290 GBq
    # A_lung = 30 x 1.0 / (49.67 x 0.2) = 3.0199 GBq -> lung limited
    # D_N = 49.67 x 3.0199 x 0.8 / 2.060 = 58.25 Gy; D_T = 5 x 58.25 = 291.3 Gy; D_lung = 30 Gy
    plan = partition_plan({"T": 5.0}, {"T": 100.0}, 1500.0, 0.20, 70.0, 30.0, lung_ml=None)
    assert plan.limited_by == "lung"
    assert plan.activity_gbq == pytest.approx(3.0199, abs=5e-4)
    assert plan.activity_normal_liver_limit_gbq == pytest.approx(3.6290, abs=5e-4)
    assert plan.normal_liver_dose_gy == pytest.approx(58.25, abs=0.01)
    assert plan.tumour_dose_gy == pytest.approx(291.3, abs=0.1)
    assert plan.lung_dose_gy == pytest.approx(30.0, abs=1e-6)
    assert plan.lung_mass_source.startswith("standard 1 kg")


def test_two_tumours_weighted_by_mass_and_ratio():
    # sum T/N_i m_i = (8 x 20 + 2 x 50) mL x 1.03e-3 = 0.2678 kg; m_N = 1000 x 1.03e-3 = 1.03 kg; LSF 0.05
    # A = 120 x (0.2678 + 1.03) / (49.67 x 0.95) = 155.736 / 47.1865 = 3.3004 GBq; overall T/N = 260/70 = 3.714
    plan = partition_plan({"a": 8.0, "b": 2.0}, {"a": 20.0, "b": 50.0}, 1000.0, 0.05, 120.0, 50.0, lung_ml=4000.0)
    assert plan.activity_gbq == pytest.approx(3.3004, abs=5e-4)
    assert plan.tumour_dose_gy == pytest.approx(260 / 70 * 120.0, rel=1e-6)
    assert plan.tumour_doses_gy == pytest.approx({"a": 960.0, "b": 240.0})


def test_no_shunt_means_no_lung_limit():
    plan = partition_plan({}, {}, 1000.0, 0.0, 70.0, 30.0)
    assert plan.activity_lung_limit_gbq is None and plan.limited_by == "normal liver"
    assert plan.activity_gbq == pytest.approx(70.0 * 1.03 / 49.67, rel=1e-9)
    assert plan.lung_dose_gy == 0.0 and plan.tumour_dose_gy is None
    assert math.isfinite(plan.normal_liver_dose_gy)


def test_a_given_lung_mass_replaces_the_volume_convention():
    # the lung-limited case above with the CT lung mass 0.378 kg (instead of 3000 mL x 0.30 g/mL = 0.9 kg):
    # A_lung = 30 x 0.378 / (49.67 x 0.2) = 1.14156 GBq -> lung limited; D_lung = 30 Gy exactly
    ct = (0.378, "SPECT/CT CT lungs through the density calibration")
    plan = partition_plan({"T": 5.0}, {"T": 100.0}, 1500.0, 0.20, 70.0, 30.0, lung_ml=3000.0, lung_mass=ct)
    assert plan.lung_mass_kg == 0.378 and plan.lung_mass_source == ct[1]
    assert plan.lung_density_g_per_ml is None  # no density convention used
    assert plan.limited_by == "lung" and plan.activity_gbq == pytest.approx(1.14156, abs=5e-5)
    assert plan.lung_dose_gy == pytest.approx(30.0, abs=1e-9)
    fallback = partition_plan({"T": 5.0}, {"T": 100.0}, 1500.0, 0.20, 70.0, 30.0, lung_ml=3000.0)
    assert fallback.lung_mass_kg == pytest.approx(0.9) and "volume convention" in fallback.lung_mass_source
    assert fallback.lung_density_g_per_ml == 0.30
    with pytest.raises(ValueError, match="lung mass"):
        partition_plan({}, {}, 1500.0, 0.1, 40.0, 30.0, lung_mass=(0.0, "empty"))
