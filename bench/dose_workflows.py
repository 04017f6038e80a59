"""The dose workflows as the node runs them (MAA predicted dose, post-therapy comparison, returned GSA plan), on the
phantom over several seeds and conditions: their commissioning checks against the truth, the figures, the time
of each stage and the peak memory of the process.

Run: .venv/bin/python -m bench.dose_workflows [--size small|full] [--seeds N]
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import pydicom

from node.gsa.pipeline import run_gsa
from node.gsa.settings import GsaSettings
from node.gsaplan.pipeline import run_gsaplan
from node.gsaplan.settings import GsaPlanSettings
from node.gsaplan.workflow import GSAPLAN
from node.maa.pipeline import run_maa
from node.maa.settings import MaaSettings
from node.maa.workflow import MAA
from node.phantom import write_phantom
from node.y90post.pipeline import run_y90post
from node.y90post.settings import Y90PostSettings
from node.y90post.workflow import Y90POST

CONDITIONS = [(0, ()), (1, ()), (3, ("negative-spacing",)), (4, ("feet-first",)), (5, ("noiseless",)),
              (6, ("negative-spacing", "feet-first"))]


def series(root: Path, folder: str) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in sorted((root / folder).glob("*.dcm"))]


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="small", choices=("small", "full"))
    parser.add_argument("--seeds", type=int, default=len(CONDITIONS))
    args = parser.parse_args()
    failed = 0
    for seed, extra in CONDITIONS[: args.seeds]:
        with tempfile.TemporaryDirectory() as tmp:
            root = write_phantom(Path(tmp), size=args.size, seed=seed, variants=("y90", "tps-rtdose", *extra))
            truth = json.loads((root / "truth.json").read_text())
            times: dict[str, float] = {}
            t = time.perf_counter()
            nm, maa_ct = series(root, "spect-maa")[0], series(root, "spect-maa-ct")
            maa = run_maa(nm, maa_ct, None, None, MaaSettings())
            times["maa (incl. dose)"] = time.perf_counter() - t
            assert maa.dose is not None, maa.warnings
            t = time.perf_counter()
            post = run_y90post(series(root, "y90-pet"), series(root, "y90-pet-ct"), maa.dose, Y90PostSettings())
            times["y90post"] = time.perf_counter() - t
            t = time.perf_counter()
            gsa = run_gsa(series(root, "planning-ct"), series(root, "spect-gsa")[0], series(root, "spect-gsa-ct"),
                          series(root, "planning-rtstruct")[0], GsaSettings())
            times["gsa"] = time.perf_counter() - t
            assert gsa.reference is not None
            t = time.perf_counter()
            plan = run_gsaplan(series(root, "tps-rtdose")[0], None, gsa.reference, GsaPlanSettings())
            times["gsaplan"] = time.perf_counter() - t
            pd = maa.measurements.predicted_dose
            assert pd is not None
            print(f"\n== seed {seed} {' '.join(extra) or 'default'} ({args.size}): activity {pd.activity_gbq} GBq "
                  f"({pd.activity_source}), dose stage {maa.measurements.timings_s.get('dose_s')} s")
            checks = (MAA.phantom_checks(maa.measurements, truth) + Y90POST.phantom_checks(post.measurements, truth)
                      + GSAPLAN.phantom_checks(plan.measurements, truth))
            for c in checks:
                if c.quantity.startswith(("Y-90", "GSA plan")):
                    measured = "-" if c.measured is None else f"{c.measured:.3f}"
                    dev = "" if c.measured is None or not c.truth else f"{100 * (c.measured / c.truth - 1):+6.1f} %"
                    print(f"  {c.quantity:<44}{measured:>10}{c.truth:>10.3f} {dev:>9}  {c.tolerance:<20}"
                          f"{'ok' if c.ok else 'OUT'}")
            failed += sum(not c.ok for c in checks)
            print("  flags: " + ("; ".join(f.quantity for f in pd.flags) or "none"))
            print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()) + f"; peak RSS {peak_mb():.0f} MB")
    print(f"\n{failed} check(s) out of tolerance")


if __name__ == "__main__":
    main()
