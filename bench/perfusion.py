"""CT perfusion benchmark: files on disk -> Parametric Maps and Secondary Captures written; time, memory, accuracy.

    .venv/bin/python -m bench.perfusion [--slices 40,100] [--noise 15] [--keep DIR]

A whole-abdomen case of the phantom family (node.phantom.family, layout "body": 512 x 512 at 0.78 mm, 2.5 mm
slices, 15 frames 3 s apart, three lesions, a structure set of its regions) is written for each slice count
(not timed). Each count then runs in a fresh Python process (so ru_maxrss is that run's own peak): it reads the
DICOM files, runs node.perfusion.pipeline.run_perfusion (both methods and the qualification) and writes every
output object. It prints wall time, CPU time (all threads) and the peak resident memory reached by the end of
every stage (read, load = 4D assembly, motion, inputs, preprocess, maps, qualification, outputs = DICOM objects
built, write = files written), the machine's load average (the machine is shared: wall time grows with the
queue, CPU time does not), and the region values against the case's truth.
Bar (issue 14): 512 x 512 x 100 slices x 15 frames, both methods and the qualification, < 60 s and < 6 GB.
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

BAR_SECONDS, BAR_MB = 60.0, 6144.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def write_case(outdir: Path, n_slices: int, noise: float) -> Path:
    from node.phantom.family import draw_case, write

    spec = draw_case(100, layout="body", noise_hu=noise, dt_s=3.0, n_times=15, jitter=0.0, pixel_mm=0.78125,
                     slice_mm=2.5, n_slices=n_slices,
                     lesions=(("hypervascular", 15.0), ("hypovascular", 22.0), ("hypervascular", 10.0)))
    return write(spec, outdir)


def worker(case: Path) -> dict:
    """One measured run (in its own process)."""
    import pydicom

    from node.perfusion.pipeline import run_perfusion
    from node.perfusion.settings import PerfusionSettings

    stages: dict[str, dict[str, float]] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    datasets = [pydicom.dcmread(p) for p in sorted((case / "ct-perfusion").glob("*.dcm"))]
    rtss = pydicom.dcmread(case / "rtstruct.dcm")
    stages["read"] = {"wall_s": round(time.perf_counter() - t0, 3), "cpu_s": round(time.process_time() - c0, 3),
                      "peak_rss_mb": round(_peak_mb(), 1)}
    result = run_perfusion(datasets, PerfusionSettings(), rtss)
    m = result.measurements
    stages.update(m.stages)
    t1, c1 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        for n, obj in enumerate(result.outputs):
            obj.dataset.save_as(Path(tmp) / f"{n:03d}.dcm", enforce_file_format=True)
    stages["write"] = {"wall_s": round(time.perf_counter() - t1, 3), "cpu_s": round(time.process_time() - c1, 3),
                       "peak_rss_mb": round(_peak_mb(), 1)}
    truth = json.loads((case / "truth.json").read_text())
    accuracy = {}
    for region, tr in truth["regions"].items():
        roi = "Normal liver" if region == "liver_parenchyma" else region
        values = m.regional_statistics[roi].values
        cells = []
        for method, key in (("max-slope", "max-slope"), ("discm", "model")):
            for p in ("ALP", "PVP"):
                v = values[method][p]
                err = 100.0 * (v.value / tr[key][p] - 1.0) if v.value else float("nan")
                cells.append(f"{method} {p} {v.value or float('nan'):.1f} vs {tr[key][p]:.1f} ({err:+.1f} %, "
                             f"1 SD {100 * tr['floor_relative'][method][p]:.1f} %"
                             f"{'' if v.measurable else ', not measurable'})")
        radius = f", r {tr['radius_mm']:.0f} mm" if tr["radius_mm"] else ""
        accuracy[f"{roi} ({tr['kind']}{radius})"] = cells
    return {"slices": truth["voxel_mm"] and len({float(ds.ImagePositionPatient[2]) for ds in datasets}),
            "files": len(datasets), "stages": stages, "total_s": round(time.perf_counter() - t0, 2),
            "total_cpu_s": round(time.process_time() - c0, 2), "peak_rss_mb": round(_peak_mb(), 1),
            "noise_hu": m.noise_hu, "passes": m.noise_reduction["passes"],
            "accuracy": accuracy, "outputs": len(result.outputs), "load_avg_1min": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", default="40,100", help="slice counts to run, comma separated")
    ap.add_argument("--noise", type=float, default=15.0, help="image noise (HU SD at 0.78 mm)")
    ap.add_argument("--keep", type=Path, help="write (or reuse) the cases under this folder")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker)))
        return 0
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        base = args.keep or Path(tmp)
        for n in (int(v) for v in args.slices.split(",")):
            case = base / f"body-{n}"
            if not (case / "truth.json").exists():
                t = time.perf_counter()
                write_case(case, n, args.noise)
                print(f"case written in {time.perf_counter() - t:.1f} s (not counted)")
            run = subprocess.run([sys.executable, __file__, "--worker", str(case)], capture_output=True, text=True,
                                 cwd=ROOT)
            if run.returncode != 0:
                print(run.stderr[-3000:])
                return 1
            rep = json.loads(run.stdout.strip().splitlines()[-1])
            print(f"\n== {rep['slices']} slices x 512 x 512 x 15 frames, {rep['files']} files, load average "
                  f"{rep['load_avg_1min']} (2 cores); noise {rep['noise_hu']} HU on the working grid -> "
                  f"{rep['passes']} edge-preserving filter passes")
            print(f"{'stage':<14}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>14}")
            for name, s in rep["stages"].items():
                print(f"{name:<14}{s['wall_s']:>9.2f}{s.get('cpu_s', float('nan')):>9.2f}{s['peak_rss_mb']:>14.0f}")
            print(f"{'total':<14}{rep['total_s']:>9.2f}{rep['total_cpu_s']:>9.2f}{rep['peak_rss_mb']:>14.0f}   "
                  f"(bar < {BAR_SECONDS:.0f} s, < {BAR_MB:.0f} MB at 100 slices; {rep['outputs']} objects)")
            ok &= rep["total_s"] < BAR_SECONDS and rep["peak_rss_mb"] < BAR_MB
            print("region values (ROI curve) vs truth:")
            for region, cells in rep["accuracy"].items():
                print(f"  {region}")
                for c in cells:
                    print(f"      {c}")
        print("\nbar met" if ok else "\nbar NOT met (see the load average: wall time on a shared machine)")
        return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
