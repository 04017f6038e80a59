"""CT perfusion benchmark: files on disk -> Parametric Maps and Secondary Captures written; time, memory, accuracy.

    .venv/bin/python bench/perfusion.py [--phantom DIR] [--slices 20,40] [--variants motion ...]

Uses the full-size digital phantom (40 x 512 x 512 x 15 time points); it is written to a temporary folder
first unless --phantom names an existing one. Each slice count runs in a fresh Python process (so ru_maxrss is
that run's own peak): it reads the DICOM files of the lowest N slice positions, runs
node.perfusion.pipeline.run_perfusion and writes every output object. It reports wall time and the peak
resident memory reached by the end of every stage (read, load = 4D assembly, motion, inputs, preprocess,
maps, outputs = DICOM objects built, write = files written), and the accuracy of the region means against the
phantom truth (masks eroded by 6 mm; max slope vs the max-slope truth, DISCM vs the model). Bar: whole
analysis (read to written) < 60 s and < 4 GB peak on the 2-core machine.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BAR_SECONDS, BAR_MB = 60.0, 4096.0
ERODE_MM = 6.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _accuracy(outdir: Path, result, shift) -> dict:
    """Region means of every map over eroded truth masks vs the phantom truth (relative / absolute errors)."""
    import highdicom as hd
    import numpy as np
    from scipy import ndimage

    from node.perfusion.qa import max_slope_noise_floor

    full_truth = json.loads((outdir / "truth.json").read_text())
    truth = full_truth["perfusion"]["regions"]
    masks = np.load(outdir / "truth" / "perfusion_masks.npz")
    aff = masks["affine_kij_to_patient"]
    inv = np.linalg.inv(aff)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    cores = {r: ndimage.distance_transform_edt(masks[r], sampling=spacing) > ERODE_MM
             for r in ("liver_parenchyma", "T1", "T2", "T3")}
    keys = {"ALP": "alp_ml_min_100ml", "PVP": "pvp_ml_min_100ml", "TLP": "tlp_ml_min_100ml",
            "HPI": "hpi_percent"}
    out: dict = {}
    for obj in result.outputs:
        if obj.kind != "parametric-map":
            continue
        param, method = obj.description.split(" (")
        method = method.rstrip(")")
        if param not in keys:
            continue
        vol = hd.pm.ParametricMap.from_dataset(obj.dataset).get_volume()
        k, j, i = np.indices(vol.shape[:3])
        pts = (np.stack([k, j, i, np.ones_like(k)], -1) @ vol.affine.T)[..., :3] - shift
        idx = np.rint(pts @ inv[:3, :3].T + inv[:3, 3]).astype(int)
        ok = np.all((idx >= 0) & (idx < np.array(masks["labels"].shape)), axis=-1)
        for region, core in cores.items():
            sel = np.zeros(vol.shape[:3], bool)
            sel[ok] = core[tuple(idx[ok].T)]
            if not sel.any():
                continue
            got = float(vol.array[sel].mean())
            name = "liver" if region == "liver_parenchyma" else region
            ref = truth[name]["max_slope" if method == "MaxSlope" else "model"][keys[param]]
            err = got - ref if param == "HPI" else 100.0 * (got / ref - 1.0)
            unit = "pp" if param == "HPI" else "%"
            text = f"{got:.1f} vs {ref:.1f} ({err:+.1f} {unit}"
            if method == "MaxSlope" and param in ("ALP", "PVP"):  # what the CT noise alone allows here, 1 SD
                core_ml = float(core.sum()) * float(np.prod(spacing)) / 1000.0
                text += f"; noise floor {100.0 * max_slope_noise_floor(full_truth, core_ml)[param] / ref:.1f} %"
            out.setdefault(name, {})[f"{method} {param}"] = text + ")"
    return out


def worker(phantom: Path, n_slices: int) -> dict:
    """One measured run (in its own process)."""
    import numpy as np
    import pydicom

    from node.perfusion.pipeline import run_perfusion
    from node.perfusion.settings import PerfusionSettings

    stages: dict[str, dict[str, float]] = {}
    t0 = time.perf_counter()
    datasets = [pydicom.dcmread(p) for p in sorted((phantom / "ct-perfusion").glob("*.dcm"))]
    if n_slices:
        def height(ds) -> float:
            iop = np.asarray(ds.ImageOrientationPatient, float)
            return float(np.asarray(ds.ImagePositionPatient, float) @ np.cross(iop[:3], iop[3:]))
        keep = sorted({round(height(ds), 2) for ds in datasets})[:n_slices]
        datasets = [ds for ds in datasets if round(height(ds), 2) in keep]
    stages["read"] = {"wall_s": round(time.perf_counter() - t0, 3), "peak_rss_mb": round(_peak_mb(), 1)}
    result = run_perfusion(datasets, PerfusionSettings())
    stages.update(result.measurements.stages)
    t1 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n, obj in enumerate(result.outputs):
            obj.dataset.save_as(Path(tmp) / f"{n:03d}.dcm", enforce_file_format=True)
    stages["write"] = {"wall_s": round(time.perf_counter() - t1, 3), "peak_rss_mb": round(_peak_mb(), 1)}
    total = round(time.perf_counter() - t0, 2)
    motion = json.loads((phantom / "truth.json").read_text())["perfusion"]["motion_mm_per_frame"]
    shift = np.asarray(motion[result.measurements.reference_time_point], float)
    return {"slices": len({round(float(ds.ImagePositionPatient[2]), 2) for ds in datasets}),
            "files": len(datasets), "stages": stages, "total_s": total, "peak_rss_mb": round(_peak_mb(), 1),
            "noise_hu": result.measurements.noise_hu, "passes": result.measurements.noise_reduction["passes"],
            "accuracy": _accuracy(phantom, result, shift), "outputs": len(result.outputs),
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--phantom", type=Path, help="existing full-size phantom folder (else one is written)")
    ap.add_argument("--slices", default="20,40", help="slice counts to run, comma separated (0 = all)")
    ap.add_argument("--variants", nargs="*", default=[], help="phantom variants when writing one")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        phantom = args.phantom
        if phantom is None:
            from node.phantom import write_phantom

            t = time.perf_counter()
            phantom = write_phantom(Path(tmp) / "phantom", "full", 0, tuple(args.variants))
            print(f"phantom written in {time.perf_counter() - t:.1f} s (not counted)")
        ok = True
        for n in (int(v) for v in args.slices.split(",")):
            run = subprocess.run([sys.executable, __file__, "--worker", str(phantom), "--n", str(n)],
                                 capture_output=True, text=True, cwd=ROOT)
            if run.returncode != 0:
                print(run.stderr[-3000:])
                return 1
            rep = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"\n== {rep['slices']} slices x 512 x 512, {rep['files']} files, load average "
                  f"{rep['load_avg_1min']}; noise {rep['noise_hu']} HU -> {rep['passes']} edge-preserving filter "
                  "passes")
            print(f"{'stage':<12}{'wall s':>9}{'peak RSS MB':>14}")
            for name, s in rep["stages"].items():
                print(f"{name:<12}{s['wall_s']:>9.2f}{s['peak_rss_mb']:>14.0f}")
            print(f"{'total':<12}{rep['total_s']:>9.2f}{rep['peak_rss_mb']:>14.0f}   "
                  f"(bar < {BAR_SECONDS:.0f} s, < {BAR_MB:.0f} MB; {rep['outputs']} objects)")
            ok &= rep["total_s"] < BAR_SECONDS and rep["peak_rss_mb"] < BAR_MB
            print(f"accuracy (region means, truth masks eroded {ERODE_MM:g} mm):")
            for region, values in rep["accuracy"].items():
                print(f"  {region:<6} " + "; ".join(f"{k} {v}" for k, v in values.items()))
        print("\nbar met" if ok else "\nbar NOT met")
        return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
