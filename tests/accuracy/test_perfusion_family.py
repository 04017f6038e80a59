"""CT perfusion on the phantom family (node.phantom.family): cases the method was not tuned on, drawn over the
clinical range, each with the truth computed from its own noiseless curves by code the node does not share.

A representative slice runs here (noiseless at 1.5, 3 and 4 s sampling with delays off the grid and an 8 mm
lesion; noisy cases at 10 and 20 HU over several seeds); bench/accuracy.py runs the wide sweep and prints the
bias/SD table. Criteria (issue 14):
* noiseless: the max-slope maps and region values within 2 % of the textbook value in every region; the
  model within 2 % of its parameters, or (where the sampled input cannot carry it) flagged as not measurable;
* noisy: where the region's noise floor (1 SD, from the truth) is <= 3 %, max slope within 5 % + 3 SD and the
  model within the OSIPI tolerance (5 mL/100 mL/min + 10 %); where the floor exceeds the node's limit (the 95 %
  interval wider than 15 %, i.e. 1 SD > 3.83 %, with 15 % margin for the node's own noise estimate), the value is
  flagged as not measurable; the node's 1-SD agrees with the truth's floor.
"""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from scipy.integrate import solve_ivp

from node.perfusion.measurements import PerfusionMeasurements
from node.perfusion.pipeline import run_perfusion
from node.perfusion.reference import PerfusionResult
from node.perfusion.settings import PerfusionSettings
from node.phantom.family import build, draw_case
from node.phantom.family.render import curves, region_kinetics
from testpeers.reference_models import dcmri_fit

from conftest import convention_max_slope

ROI = {"liver_parenchyma": "Normal liver"}
PARAMS = ("ALP", "PVP", "TLP", "HPI")
FLAG_SD = 0.15 / (2 * 1.959964)  # the node's limit on 1 SD (relative), default tolerance


def _roi(region: str) -> str:
    return ROI.get(region, region)


def _analyse(spec: Any, input_rois: bool = False) -> tuple[PerfusionResult, dict[str, Any]]:
    cts, rtss, truth = build(spec, input_rois)
    return run_perfusion(cts, PerfusionSettings(), rtss), truth


def _run(spec: Any, input_rois: bool = False) -> tuple[PerfusionMeasurements, dict[str, Any]]:
    result, truth = _analyse(spec, input_rois)
    return result.measurements, truth


# ------------------------------------------------------------------ the family's own truth
def test_family_curves_follow_the_model_and_the_truth_is_the_textbook_value() -> None:
    spec = draw_case(11, dt_s=2.3, noise_hu=15)
    c = curves(spec)
    t = c.fine_t
    ca, cpv = c.fine["aorta"], c.fine["portal_vein"]
    for name, k in region_kinetics(spec).items():
        # scipy's ODE solver driven by the generator's input curves, delays applied by interpolation
        sol = solve_ivp(lambda tt, y, k=k: [k.k1a * np.interp(tt - k.tau_a_s, t, ca, left=0)
                                            + k.k1p * np.interp(tt - k.tau_p_s, t, cpv, left=0) - k.k2 * y[0]],
                        (0.0, c.times[-1]), [0.0], t_eval=c.times, max_step=0.05, rtol=1e-8, atol=1e-8)
        assert np.max(np.abs(sol.y[0] - c.sampled[name])) < 0.02, name
    truth = build(spec)[2]
    for name, region in truth["regions"].items():
        alp, pvp, hpi = convention_max_slope(c.times, c.sampled[name], c.sampled["aorta"], c.sampled["portal_vein"],
                                             c.sampled["spleen"])
        assert region["max-slope"]["ALP"] == pytest.approx(alp, rel=1e-9)
        assert region["max-slope"]["PVP"] == pytest.approx(pvp, rel=1e-9)
        assert region["max-slope"]["HPI"] == pytest.approx(hpi, rel=1e-9)
        # the floor of a slope between samples dt apart: sqrt(2) sigma / dt / sqrt(N), scaled like ALP
        ms = region["max-slope"]
        slope_sd = math.sqrt(2) * spec.noise_hu / ms["arterial_dt_s"] / math.sqrt(region["voxels"])
        assert region["floor_sd"]["max-slope"]["ALP"] == pytest.approx(6000 * slope_sd / truth["aorta_peak_sample_hu"],
                                                                       rel=1e-6)
        assert 0 < region["floor_sd"]["discm"]["ALP"] < math.inf


def test_family_inputs_are_normalised_as_stated() -> None:
    """The aortic first pass is a gamma variate normalised to its peak: it reaches `peak_hu` exactly at arrival +
    rise, and nowhere more; the portal vein is the aorta through a unit-area kernel (no contrast created or lost:
    equal areas once both have returned to their plateau), of the stated mean transit."""
    from dataclasses import replace

    from node.phantom.family import kinetics as K

    spec = draw_case(12, noise_hu=0)
    t = K.fine_grid(300.0)
    for shape in K.FIRST_PASS_SHAPES:  # every first-pass shape: the same arrival, time to peak and peak
        p = replace(spec.inputs, recirculation_fraction=0.0, first_pass=shape)
        first = K.aorta(t, p)
        i = int(np.argmax(first))
        tabulated = shape != "gamma variate"  # the others are tabulated on a unit grid and interpolated
        assert first[i] == pytest.approx(p.peak_hu, rel=1e-5 if tabulated else 1e-6), shape
        assert t[i] == pytest.approx(p.arrival_s + p.rise_s, abs=(2 if tabulated else 1) * K.FINE_DT_S), shape
        assert np.all(first[t < p.arrival_s - 0.5] < 1e-3 * p.peak_hu), shape
    p = replace(spec.inputs, recirculation_fraction=0.0)
    first = K.aorta(t, p)
    portal = K.portal_vein(t, first, p)
    assert portal.sum() == pytest.approx(first.sum(), rel=1e-3)
    mean_delay = (t * portal).sum() / portal.sum() - (t * first).sum() / first.sum()
    assert mean_delay == pytest.approx(p.portal_delay_s + p.portal_transit_s, abs=0.05)


# ------------------------------------------------------------------ noiseless: what is measured
#: (sampling interval, seed); delays off the grid; an 8 mm hypervascular and a 14 mm hypovascular lesion. The frames
#: jitter by +-15 %: at 4 s single gaps reach 4.6 s, which the protocol's interval check does not hold against the
#: series (its mean interval is 4 s), so the 4 s values are judged like any other.
NOISELESS = [(1.5, 21), (3.0, 22), (3.0, 24), (4.0, 23), (4.0, 25)]


@pytest.fixture(scope="module", params=NOISELESS, ids=[f"{dt:g}s-seed{seed}" for dt, seed in NOISELESS])
def noiseless(request: pytest.FixtureRequest) -> tuple[float, PerfusionMeasurements, dict[str, Any]]:
    dt, seed = request.param
    spec = draw_case(seed, noise_hu=0, dt_s=dt, slice_mm=4.0, n_slices=12, tau_a_s=1.37, tau_p_s=0.62,
                     lesions=(("hypervascular", 8.0), ("hypovascular", 14.0)))
    assert len(spec.lesions) == 2 and min(les.radius_mm for les in spec.lesions) == 8.0
    m, truth = _run(spec)
    return dt, m, truth


def test_noiseless_max_slope_is_the_textbook_value_in_every_region(noiseless) -> None:
    dt, m, truth = noiseless
    assert m.noise_reduction["passes"] == 0
    for region, tr in truth["regions"].items():
        entry = m.regional_statistics[_roi(region)]
        for p in PARAMS:
            want = tr["max-slope"][p]
            got = entry.values["max-slope"][p].value
            assert got == pytest.approx(want, rel=0.02), (dt, region, p, "region value")
            assert entry.maps["max-slope"][p].mean == pytest.approx(want, rel=0.02), (dt, region, p, "map mean")


#: the model's noiseless tolerance (issue 14: 2 %), at every sampling interval: a value the node cannot hold to it
#: (the inputs' shape between samples, a misfit, an unresolved bolus) is flagged, not reported
NOISELESS_MODEL_TOLERANCE = 0.02


def test_noiseless_model_fit_is_the_model_or_says_it_is_not(noiseless) -> None:
    """Every model value the node reports (not flagged) is within 2 % of the model at every sampling interval, region
    value and map mean; at 1.5 s everything is reported but a hypervascular lesion's minor inflow, and at 3 s
    (clinical routine) the normal liver's major inflow and distribution volume are. Its minor (arterial) inflow at
    3 s takes up what the inputs' assumed shape between samples gets wrong, and is reported only when the five
    interpolations of the inputs agree on it (bench/accuracy.py counts how often)."""
    dt, m, truth = noiseless
    checks = {c.name: c for c in m.acquisition_checks}
    assert checks["sampling interval"].passed, checks["sampling interval"]  # the 4 s protocol is within the limit
    tol = NOISELESS_MODEL_TOLERANCE
    for region, tr in truth["regions"].items():
        stats = m.regional_statistics[_roi(region)]
        values = stats.values["discm"]
        for p in ("ALP", "PVP", "HPI", "DV"):
            v, want = values[p], tr["model"][p]
            if v.measurable:
                assert v.value == pytest.approx(want, rel=tol), (dt, region, p, v)
                assert stats.maps["discm"][p].mean == pytest.approx(want, rel=tol), (dt, region, p, "map mean")
            else:
                assert v.reason, (dt, region, p)
        if dt == 1.5:  # a well-sampled bolus: every value is measurable and right, but for the minor inflow of a
            # hypervascular lesion (its PVP takes up what the arterial input's assumed shape gets wrong: flagged
            # when another interpolation of the inputs moves it by more than 2 %)
            minor = ("PVP",) if tr["kind"] == "hypervascular" else ()
            assert all(values[p].measurable for p in ("ALP", "PVP", "HPI", "DV") if p not in minor), (region, values)
        if dt == 3.0 and region == "liver_parenchyma":
            assert checks["aortic bolus resolved for the model"].passed, checks["aortic bolus resolved for the model"]
            assert all(values[p].measurable for p in ("PVP", "DV")), values


#: (first-pass shape, sampling interval, seeds): region curves on which the three local interpolants agree with each
#: other and are all wrong by more than 2 % (a bolus arriving inside a long gap, a peak between samples), for the
#: phantom's gamma-variate first pass and for first passes of other shapes
#: (found by scanning seeds 100-139 at 3 and 4 s: the three local interpolants alone let 22 such values through, 14
#: of them gamma variates; the five let none through, bench/accuracy.py --first-pass)
DEPENDENCE_CASES = [("gamma variate", 4.0, (102, 121, 137)), ("lagged normal", 4.0, (106, 119)),
                    ("local density random walk", 4.0, (106, 136))]


@pytest.mark.parametrize("shape,dt,seeds", DEPENDENCE_CASES, ids=[f"{s}-{dt:g}s" for s, dt, _ in DEPENDENCE_CASES])
def test_a_model_value_reported_on_its_input_dependence_is_within_the_tolerance(shape: str, dt: float,
                                                                                 seeds: tuple[int, ...]) -> None:
    """On noiseless region curves, every model value the node reports (its own qualification: the estimate of
    its dependence on the inputs' shape between samples, the fit's 1-SD, the acquisition checks) is within 2 % of
    the model: for first passes that are not gamma variates too, so that the gamma-variate candidates among the
    interpolants are not graded on the phantom's own shape only."""
    from bench.accuracy import qualified_curve_values

    checked = 0
    for seed in seeds:
        spec = draw_case(seed, noise_hu=0, dt_s=dt, tau_a_s=1.37 if seed % 2 else None,
                         tau_p_s=0.62 if seed % 2 else None, first_pass=shape,
                         lesions=(("hypervascular", 8.0), ("hypovascular", 14.0), ("hypervascular", 20.0)))
        for v in qualified_curve_values(spec):
            if v.measurable:
                checked += 1
                assert v.value == pytest.approx(v.truth, rel=0.02), (shape, seed, v)
    assert checked >= 2  # the cases were chosen for values that are reported


# ------------------------------------------------------------------ noisy: many seeds, two noise levels
#: seeds none of the node's limits or constants were set on (the limit comes from the tolerance, not from seeds);
#: 2003 at 20 HU is the case whose T2 max-slope ALP (floor 4.6 %) an earlier version reported unflagged
NOISY = [(31, 10.0), (32, 10.0), (33, 20.0), (34, 20.0), (2003, 20.0), (5011, 15.0)]


@pytest.fixture(scope="module", params=NOISY, ids=[f"seed{s}-{n:g}HU" for s, n in NOISY])
def noisy(request: pytest.FixtureRequest) -> tuple[PerfusionMeasurements, dict[str, Any]]:
    seed, noise = request.param
    return _run(draw_case(seed, noise_hu=noise))


def _errors(m: PerfusionMeasurements, truth: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(region, method, parameter, relative error, truth floor, node 1-SD relative, measurable)."""
    out = []
    for region, tr in truth["regions"].items():
        values = m.regional_statistics[_roi(region)].values
        for method, key in (("max-slope", "max-slope"), ("discm", "model")):
            for p in PARAMS:
                v, want = values[method][p], tr[key][p]
                err = (v.value - want) / want if v.value is not None and want else math.inf
                sd = v.sd / abs(v.value) if v.sd is not None and v.value else math.inf
                out.append((region, method, p, err, tr["floor_relative"][method][p], sd, v.measurable, want))
    return out


def test_noisy_values_are_right_where_measurable_and_flagged_where_not(noisy) -> None:
    """Where the floor exceeds the limit the value is flagged; every value the node reports (whatever its floor,
    3 % to the limit included) is within the issue's tolerance (max slope 5 % + 3 floors, model flows OSIPI)."""
    m, truth = noisy
    checked = flagged = 0
    for region, method, p, err, floor, sd, measurable, want in _errors(m, truth):
        if floor > FLAG_SD * 1.15:
            assert not measurable, (region, method, p, floor, sd)
            flagged += 1
        if measurable:
            if method == "max-slope":
                assert abs(err) <= 0.05 + 3 * floor, (region, method, p, err, floor)
            elif p in ("ALP", "PVP", "TLP"):
                assert abs(err * want) <= 5 + 0.10 * want, (region, method, p, err, want)
        if floor <= 0.03 and measurable:
            checked += 1
        if measurable and method == "max-slope" and p in ("ALP", "PVP"):
            # the node knows its own noise: never much below the floor (a value reported with a smaller SD than it
            # has is the failure that matters); above it where intervals that may be the steepest are shorter
            assert 0.85 * floor <= sd <= 2.0 * floor, (region, p, sd, floor)
    # at 10 HU the normal liver at least is measurable; at 20 HU a case may hold nothing that is
    assert checked >= 3 or truth["noise_hu_at_0.78mm"] >= 15, checked


def test_noisy_normal_liver_hpi(noisy) -> None:
    m, truth = noisy
    for method, key in (("max-slope", "max-slope"), ("discm", "model")):
        v = m.regional_statistics["Normal liver"].values[method]["HPI"]
        if v.measurable:
            assert v.value == pytest.approx(truth["regions"]["liver_parenchyma"][key]["HPI"], abs=3.0)


# ------------------------------------------------------------------ an independent implementation of the model
def test_model_fit_agrees_with_dcmri_on_identical_curves() -> None:
    from node.perfusion.discm import Convolver, fit_curve

    for seed, dt, noise in ((41, 1.5, 0.0), (42, 2.5, 0.0), (43, 2.0, 0.3)):
        spec = draw_case(seed, dt_s=dt, noise_hu=0)
        c = curves(spec)
        rng = np.random.default_rng(seed)
        conv = Convolver(c.times, c.sampled["aorta"], c.sampled["portal_vein"])
        for name in region_kinetics(spec):
            y = c.sampled[name] + rng.normal(0, noise, c.times.size)
            node = fit_curve(conv, y)
            ref = dcmri_fit(c.times, c.sampled["aorta"], c.sampled["portal_vein"], y)
            assert node.values["ALP"] == pytest.approx(ref["ALP"], rel=0.01), (seed, name)
            assert node.values["PVP"] == pytest.approx(ref["PVP"], rel=0.01), (seed, name)
            assert node.k2 == pytest.approx(ref["k2"], rel=0.01), (seed, name)


# ------------------------------------------------------------------ acquisition checks, end to end
def test_a_series_that_stops_at_the_portal_peak_is_reported_not_measured() -> None:
    spec = draw_case(51, noise_hu=10, dt_s=2.0, n_times=12, lesions=(("hypovascular", 20.0),),
                     input_overrides={"arrival_s": 6.0, "rise_s": 6.0, "portal_delay_s": 5.0})
    result, truth = _analyse(spec)
    m = result.measurements
    failed = {c.name for c in m.acquisition_checks if not c.passed}
    assert "portal peak and wash-out covered" in failed
    assert any("wash-out" in w for w in result.warnings)
    liver = m.regional_statistics["Normal liver"].values["discm"]
    for p in ("DV", "MTT"):
        assert not liver[p].measurable and "wash-out" in (liver[p].reason or "")
    # `status --json` lists them among the workflow's flags (the warnings the case record keeps for it)
    from node.casestatus import WorkflowStatus
    from node.record import CaseRecord, WorkflowRecord, decode, encode

    record = CaseRecord(workflows=["perfusion"],
                        results={"perfusion": WorkflowRecord(encode(m), list(result.warnings))})
    recorded = CaseRecord.from_json(json.loads(json.dumps(record.to_json()))).results["perfusion"]
    back = decode(recorded.measurements, PerfusionMeasurements)  # the typed record survives the JSON round trip
    assert back.acquisition_checks == m.acquisition_checks
    assert back.regional_statistics["Normal liver"].values["discm"]["MTT"] == liver["MTT"]
    flags = WorkflowStatus("perfusion", "done", "", {}, recorded.measurements,
                           warnings=tuple(recorded.warnings)).to_json()["flags"]
    assert any(f.startswith("Normal liver MTT (DISCM) not measurable") and "wash-out" in f for f in flags)
    assert any("wash-out not covered" in f for f in flags)
