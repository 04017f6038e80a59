"""CT perfusion accuracy over the phantom family: bias and SD of every region value against its truth.

    .venv/bin/python -m bench.accuracy [--cases 12] [--noise 10,20] [--seed0 1000] [--json out.json]

Draws `--cases` family cases per noise level (node.phantom.family: sampling 1.5-4 s with jitter, 12-30 frames,
0.70-0.80 mm pixels, 3-5 mm slices, 1-3 lesions of 8-25 mm radius, delays 0-3 s, input peaks and times varied;
noise given at a 0.78 mm pixel), writes each as DICOM in memory with a structure set of its truth regions, runs
node.perfusion.pipeline.run_perfusion, and compares each region's reported value (the ROI curve's) with the
truth: max slope with the textbook value on the noiseless curves, the model (DISCM) with its parameters.
Also: noiseless cases at 1.5, 3 and 4 s sampling, and the agreement of the node's model fit with dcmri's
two-inlet liver model on the noiseless region curves of every case.

Table, per region class (normal liver, hypervascular, hypovascular lesion), method, parameter and noise:
* "floor<=3%": values whose noise floor (1 SD, from the truth: what any unbiased method can reach at this
  noise) is at most 3 %: n, mean bias and SD of the relative error, mean floor, and how many the node flagged;
* "floor>limit": values whose floor exceeds the node's limit (1 SD > 3.83 %, the 95 % interval wider than
  15 %): n and how many the node flagged (all should be);
* between the two: n, how many flagged, bias/SD of the unflagged.
Then every value the node reports (not flagged) against the issue's tolerance (max slope: 5 % + 3 x its floor;
model flows: 5 mL/100 mL/min + 10 % (OSIPI); model HPI: 3 percentage points): how many are outside it.
Noise 0 is the noiseless family (floor 0: every value in the first column).

    .venv/bin/python -m bench.accuracy --noise 0,10,20 --seed0 4000 --cases 12   # out-of-sample seeds
    .venv/bin/python -m bench.accuracy --noise 0 --cases 1 --noiseless-per-dt 6 \
        --first-pass "gamma variate,lagged normal,local density random walk"      # first passes of other shapes
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PARAMS = ("ALP", "PVP", "HPI")
LIMIT = 0.15 / (2 * 1.959964)


def _roi(region: str) -> str:
    return "Normal liver" if region == "liver_parenchyma" else region


def _cls(kind: str) -> str:
    return {"normal liver": "liver", "hypervascular": "hyper", "hypovascular": "hypo"}[kind]


DETECTION_FAILURES: list[str] = []


def run_case(spec: Any) -> list[dict[str, Any]]:
    """Region rows of one case. Input ROIs are found automatically; where that fails (reported at the end), the
    case is analysed again with the input ROIs given in its structure set, so the methods are still measured."""
    from node.errors import AnalysisError
    from node.perfusion.pipeline import run_perfusion
    from node.perfusion.settings import PerfusionSettings
    from node.phantom.family import build

    cts, rtss, truth = build(spec)
    try:
        m = run_perfusion(cts, PerfusionSettings(), rtss).measurements
    except AnalysisError as exc:
        DETECTION_FAILURES.append(f"seed {spec.seed}: {exc}")
        cts, rtss, truth = build(spec, input_rois=True)
        m = run_perfusion(cts, PerfusionSettings(), rtss).measurements
    rows = []
    for region, tr in truth["regions"].items():
        values = m.regional_statistics[_roi(region)].values
        for method, key in (("max-slope", "max-slope"), ("discm", "model")):
            for p in PARAMS:
                v, want = values[method][p], tr[key][p]
                rows.append({"seed": spec.seed, "noise": round(spec.noise_hu_at_078, 1), "region": region,
                             "class": _cls(tr["kind"]), "radius_mm": tr["radius_mm"], "method": method, "param": p,
                             "truth": want, "value": v.value, "map_mean": v.map_mean, "sd": v.sd,
                             "measurable": v.measurable, "reason": v.reason,
                             "floor": tr["floor_relative"][method][p],
                             "dt_s": float(np.mean(np.diff(truth["times_s"])))})
    return rows


def within_tolerance(r: dict) -> bool:
    """The issue's tolerance for one reported value (module docstring)."""
    if r["value"] is None:
        return False
    if r["method"] == "max-slope":
        return abs(_err(r)) <= 0.05 + 3 * r["floor"]
    if r["param"] == "HPI":
        return abs(r["value"] - r["truth"]) <= 3.0
    return abs(r["value"] - r["truth"]) <= 5.0 + 0.10 * abs(r["truth"])


def _err(r: dict) -> float:
    return (r["value"] - r["truth"]) / r["truth"] if r["value"] is not None and r["truth"] else math.nan


def table(rows: list[dict]) -> list[str]:
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[(r["class"], r["method"], r["param"], r["noise"])].append(r)
    out = [f"{'region':<7}{'method':<10}{'param':<6}{'noise':>6} | {'floor<=3%: n':>12}{'bias %':>8}{'SD %':>7}"
           f"{'floor %':>8}{'flagged':>8} | {'3%<floor<=lim: n':>16}{'flagged':>8}{'bias':>7}{'SD':>6} | "
           f"{'floor>lim: n':>12}{'flagged':>8}"]
    for key in sorted(groups):
        g = groups[key]
        ok = [r for r in g if r["floor"] <= 0.03]
        mid = [r for r in g if 0.03 < r["floor"] <= LIMIT]
        bad = [r for r in g if r["floor"] > LIMIT]
        e_ok = np.array([_err(r) for r in ok if r["measurable"]])
        e_mid = np.array([_err(r) for r in mid if r["measurable"]])

        def stats(e: np.ndarray) -> tuple[str, str]:
            e = e[np.isfinite(e)]
            if e.size == 0:
                return "-", "-"
            return f"{100 * e.mean():+.1f}", f"{100 * e.std(ddof=1):.1f}" if e.size > 1 else "-"

        b_ok, s_ok = stats(e_ok)
        b_mid, s_mid = stats(e_mid)
        fl = f"{100 * np.mean([r['floor'] for r in ok]):.1f}" if ok else "-"
        flags = [sum(not r["measurable"] for r in rs) for rs in (ok, mid, bad)]
        out.append(f"{key[0]:<7}{key[1]:<10}{key[2]:<6}{key[3]:>6g} | {len(ok):>12}{b_ok:>8}{s_ok:>7}{fl:>8}"
                   f"{flags[0]:>8} | {len(mid):>16}{flags[1]:>8}{b_mid:>7}{s_mid:>6} | {len(bad):>12}{flags[2]:>8}")
    return out


def noiseless_rows(seed0: int, per_dt: int, first_passes: tuple[str, ...] = ("gamma variate",)) -> list[str]:
    """Noiseless cases at 1.5, 3 and 4 s sampling (+-15 % jitter), delays off the grid, an 8 mm hypervascular, a
    14 mm hypovascular and a 20 mm hypervascular lesion: per case and region the error of each value (n.m. =
    flagged), then per sampling interval and method how many values were reported and how many of those are
    more than 2 % off (the issue's noiseless tolerance), region values and map means; for every shape of the aortic
    first pass in `first_passes` (node.phantom.family.kinetics.FIRST_PASS_SHAPES)."""
    from node.phantom.family import draw_case

    out = [f"{'dt s':>5}{'seed':>6}{'region':>18}{'method':>10}" + "".join(f"{p:>16}" for p in PARAMS)]
    summary: dict[tuple[str, float, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for shape, n, k in ((shape, n, k) for shape in first_passes for n in range(3) for k in range(per_dt)):
        dt = (1.5, 3.0, 4.0)[n]
        seed = seed0 + 500 + 10 * n + k
        spec = draw_case(seed, noise_hu=0, dt_s=dt, tau_a_s=1.37, tau_p_s=0.62, first_pass=shape,
                         lesions=(("hypervascular", 8.0), ("hypovascular", 14.0), ("hypervascular", 20.0)))
        rows = run_case(spec)
        for region in dict.fromkeys(r["region"] for r in rows):
            for method in ("max-slope", "discm"):
                cells = []
                for p in PARAMS:
                    r = next(x for x in rows if x["region"] == region and x["method"] == method
                             and x["param"] == p)
                    cells.append(f"{100 * _err(r):+.2f}%" + ("" if r["measurable"] else " n.m."))
                    tally = summary[(shape, dt, method)]
                    tally[0] += 1
                    if r["measurable"]:
                        tally[1] += 1
                        tally[2] += abs(_err(r)) > 0.02
                        mm = (r["map_mean"] - r["truth"]) / r["truth"] if r["map_mean"] is not None else math.inf
                        tally[3] += abs(mm) > 0.02
                    if region == "liver_parenchyma" and not r["measurable"]:
                        tally[4] += 1
                out.append(f"{dt:>5g}{seed:>6}{region:>18}{method:>10}" + "".join(f"{c:>16}" for c in cells)
                           + ("" if shape == "gamma variate" else f"  ({shape})"))
    out.append("\nper sampling interval and method: values, reported, reported > 2 % off (region value / map mean), "
               "normal-liver values flagged")
    for (shape, dt, method), (n_all, n_rep, bad, bad_map, liver_nm) in sorted(summary.items()):
        out.append(f"  {shape:<26} {dt:g} s {method:<10} {n_all:4d} values, {n_rep:4d} reported, {bad} / {bad_map} "
                   f"more than 2 % off, normal liver flagged {liver_nm}")
    return out


@dataclass(frozen=True)
class CurveValue:
    """One model value of a region's noiseless curve, as the node qualifies it, beside its truth."""

    region: str
    param: str
    value: float
    truth: float
    measurable: bool


MODEL_PARAMS = ("ALP", "PVP", "HPI", "DV")


def qualified_curve_values(spec: Any) -> list[CurveValue]:
    """The model values (MODEL_PARAMS) of every region's noiseless curve of a family case, without images, flagged
    by the node's own rule (node.perfusion.qualify: the failed acquisition checks, the fit's 1-SD, the input
    dependence)."""
    from node.perfusion.discm import Convolver, fit_curve, input_dependence
    from node.perfusion.qualify import acquisition_checks, qualify
    from node.perfusion.settings import PerfusionSettings
    from node.phantom.family.render import curves, region_kinetics

    c = curves(spec)
    failed = [x for x in acquisition_checks(c.times, c.sampled["aorta"], c.sampled["portal_vein"], None)
              if not x.passed]
    against = {p: [x for x in failed if ("discm", p) in x.affects] for p in MODEL_PARAMS}
    tolerance = PerfusionSettings().tolerance
    conv = Convolver(c.times, c.sampled["aorta"], c.sampled["portal_vein"])
    out = []
    for name, k in region_kinetics(spec).items():
        fit = fit_curve(conv, c.sampled[name])
        # the dependence costs four refits: not needed when a failed check already flags every value
        dep = input_dependence(conv, c.sampled[name], fit) if not all(against.values()) else {}
        truth = k.as_dict()
        for p in MODEL_PARAMS:
            rv = qualify(fit.values[p], fit.sd[p], tolerance, "", against[p], input_dependence=dep.get(p))
            out.append(CurveValue(name, p, fit.values[p], truth[p], rv.measurable))
    return out


def curve_rows(seed0: int, n: int, first_passes: tuple[str, ...]) -> list[str]:
    """The model's qualification on noiseless region curves without images (fast, so many seeds): per first-pass
    shape and sampling interval (1.5, 3, 4 s), how many model values (MODEL_PARAMS of the normal liver and an 8 mm
    hypervascular, 14 mm hypovascular and 20 mm hypervascular lesion) the node reports (qualified_curve_values) and
    how many of those are more than 2 % off."""
    from node.phantom.family import draw_case

    out = []
    for shape in first_passes:
        for dt in (1.5, 3.0, 4.0):
            values = [v for seed in range(seed0, seed0 + n) for v in qualified_curve_values(
                draw_case(seed, noise_hu=0, dt_s=dt, first_pass=shape,
                          lesions=(("hypervascular", 8.0), ("hypovascular", 14.0), ("hypervascular", 20.0))))]
            reported = [v for v in values if v.measurable]
            errors = [abs(v.value / v.truth - 1) for v in reported]
            liver_alp = sum(v.region == "liver_parenchyma" and v.param == "ALP" for v in reported)
            out.append(f"  {shape:<26} {dt:>3g} s: {len(reported):4d} of {len(values):4d} model values reported "
                       f"(normal-liver ALP in {liver_alp} of {n} cases), {sum(e > 0.02 for e in errors)} more than "
                       f"2 % off, largest error reported {100 * max(errors, default=0.0):.2f} %")
    return out


def dcmri_agreement(seeds: list[int]) -> str:
    from node.perfusion.discm import Convolver, fit_curve
    from node.phantom.family import draw_case
    from node.phantom.family.render import curves, region_kinetics
    from testpeers.reference_models import dcmri_fit

    worst: defaultdict[str, float] = defaultdict(float)
    n = 0
    for seed in seeds:
        spec = draw_case(seed, noise_hu=0)
        c = curves(spec)
        conv = Convolver(c.times, c.sampled["aorta"], c.sampled["portal_vein"])
        for name in region_kinetics(spec):
            node = fit_curve(conv, c.sampled[name])
            ref = dcmri_fit(c.times, c.sampled["aorta"], c.sampled["portal_vein"], c.sampled[name])
            for key, a, b in (("ALP", node.values["ALP"], ref["ALP"]), ("PVP", node.values["PVP"], ref["PVP"]),
                              ("k2", node.k2, ref["k2"])):
                worst[key] = max(worst[key], abs(a / b - 1))
            n += 1
    return (f"dcmri two-inlet model vs the node's fit on {n} noiseless region curves: largest difference "
            + ", ".join(f"{k} {100 * v:.2f} %" for k, v in worst.items()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=12, help="cases per noise level")
    ap.add_argument("--noise", default="0,10,20", help="noise levels (HU SD at a 0.78 mm pixel), comma separated")
    ap.add_argument("--noiseless-per-dt", type=int, default=3, help="noiseless cases per sampling interval")
    ap.add_argument("--seed0", type=int, default=1000)
    ap.add_argument("--json", type=Path, help="write every row here")
    ap.add_argument("--skip-noiseless", action="store_true")
    ap.add_argument("--curves", type=int, default=0,
                    help="also check the model's qualification on the noiseless region curves of this many seeds per "
                         "shape and interval, without images (from --seed0 + 3000)")
    ap.add_argument("--first-pass", default="gamma variate",
                    help="shapes of the aortic first pass for the noiseless cases, comma separated "
                         "(gamma variate, lagged normal, local density random walk; the first also for the noisy)")
    args = ap.parse_args()
    import logging

    logging.disable(logging.WARNING)
    from node.phantom.family import draw_case

    shapes = tuple(v.strip() for v in args.first_pass.split(","))
    rows: list[dict] = []
    t0 = time.perf_counter()
    for noise in (float(v) for v in args.noise.split(",")):
        for seed in range(args.seed0, args.seed0 + args.cases):
            spec = draw_case(seed, noise_hu=noise, first_pass=shapes[0])
            rows += run_case(spec)
            print(f"  {spec.describe()}: {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\n== bias and SD of the region values (ROI curve) vs truth, {args.cases} cases per noise level "
          f"(seeds {args.seed0}-{args.seed0 + args.cases - 1}); limit: 1 SD <= {100 * LIMIT:.2f} %")
    print("\n".join(table(rows)))
    unflagged_bad = [r for r in rows if r["floor"] > LIMIT * 1.15 and r["measurable"]]
    print(f"\nvalues with floor > limit x 1.15 that were NOT flagged: {len(unflagged_bad)}")
    for noise in sorted({r["noise"] for r in rows}):
        at = [r for r in rows if r["noise"] == noise]
        reported = [r for r in at if r["measurable"]]
        outside = [r for r in reported if not within_tolerance(r)]
        print(f"noise {noise:g} HU: {len(reported)} of {len(at)} values reported, {len(outside)} outside the "
              "tolerance" + "".join(f"\n  seed {r['seed']} {r['region']} {r['method']} {r['param']}: "
                                    f"{r['value']:.2f} vs {r['truth']:.2f}, floor {100 * r['floor']:.1f} %"
                                    for r in outside))
    ok = [r for r in rows if r["floor"] <= 0.03 and r["measurable"] and np.isfinite(_err(r))]
    ms = [abs(_err(r)) for r in ok if r["method"] == "max-slope"]
    if ms:
        print(f"floor <= 3 % and measurable: {len(ok)} values; max-slope |error| median {100 * np.median(ms):.1f} %, "
              f"95th percentile {100 * np.percentile(ms, 95):.1f} %")
    runs = args.cases * len(args.noise.split(","))
    print(f"automatic input detection failed in {len(DETECTION_FAILURES)} of {runs} runs (re-run with the input ROIs "
          "given in the structure set):")
    for f in DETECTION_FAILURES:
        print(f"  {f[:200]}")
    if not args.skip_noiseless:
        print("\n== noiseless cases (error vs truth; n.m. = flagged not measurable)")
        print("\n".join(noiseless_rows(args.seed0, args.noiseless_per_dt, shapes)))
    if args.curves:
        print(f"\n== model qualification on noiseless region curves, seeds {args.seed0 + 3000}-"
              f"{args.seed0 + 3000 + args.curves - 1}")
        print("\n".join(curve_rows(args.seed0 + 3000, args.curves, shapes)))
    if args.cases:
        print("\n== " + dcmri_agreement(list(range(args.seed0, args.seed0 + min(args.cases, 6)))))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
