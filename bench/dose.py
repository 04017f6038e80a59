"""Dose accuracy and speed on the phantom (variants y90, tps-rtdose), over several seeds and conditions.

Prints, per condition: predicted mean dose per region vs the truth (%), gamma 3 %/3 mm pass rate in the liver,
energy balance through the RT Dose file, delivered vs truth and the T3 mismatch, FLV20Gy/F20Gy vs the
hand-computed truth, and the time of each step. Run: .venv/bin/python bench/dose.py [--size small|full]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

import rtstruct  # noqa: E402
from node.dose import (  # noqa: E402
    Y90Structures,
    compare_predicted_delivered,
    delivered_dose_from_pet,
    delivered_on_grid,
    evaluate_gsa_plan,
    gamma_index,
    predicted_dose,
    read_rt_dose,
    register_post_therapy,
    summarize_y90,
)
from node.imaging.grids import image_from_affine  # noqa: E402
from node.imaging.volumes import ct_series_image, nm_image  # noqa: E402
from node.phantom import write_phantom  # noqa: E402

CONDITIONS = [(0, ("y90", "tps-rtdose")), (1, ("y90", "tps-rtdose")), (2, ("y90", "tps-rtdose")),
              (3, ("y90", "negative-spacing", "tps-rtdose")), (4, ("y90", "feet-first", "tps-rtdose")),
              (5, ("y90", "noiseless", "tps-rtdose"))]



def _on_spect(a: np.ndarray, affine: np.ndarray, spect: sitk.Image) -> np.ndarray:
    """A truth array (phantom grid, `affine`) resampled onto the SPECT grid (nearest neighbour)."""
    img = image_from_affine(a.astype(np.float32), affine)
    return sitk.GetArrayFromImage(sitk.Resample(img, spect, sitk.Transform(), sitk.sitkNearestNeighbor))

def series(root: Path, folder: str) -> list[pydicom.Dataset]:
    return rtstruct.sort_slices([pydicom.dcmread(p) for p in sorted((root / folder).glob("*.dcm"))])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", default="small", choices=("small", "full"))
    args = parser.parse_args()
    for seed, variants in CONDITIONS:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            root = write_phantom(Path(tmp), size=args.size, seed=seed, variants=variants)
            t_phantom = time.perf_counter() - t0
            truth = json.loads((root / "truth.json").read_text())
            y = truth["y90"]
            nm = pydicom.dcmread(next((root / "spect-maa").glob("*.dcm")))
            spect = nm_image(nm)
            ct = ct_series_image(series(root, "spect-maa-ct"))
            npz = np.load(root / "truth" / "y90_maa_predicted.npz")

            affine = npz["affine_kij_to_patient"]
            masks = {r: _on_spect(npz[f"mask_{r}"], affine, spect) > 0.5
                     for r in ("liver", "normal_liver", "T1", "T2", "T3", "lungs")}
            t0 = time.perf_counter()
            p = y["maa_predicted"]
            dose = predicted_dose(spect, ct, masks["liver"], masks["lungs"], p["planned_activity_gbq"],
                                  p["lung_shunt_fraction"])
            t_pred = time.perf_counter() - t0
            s = summarize_y90(dose.dose, Y90Structures(spect, masks["liver"], {t: masks[t] for t in ("T1", "T2", "T3")},
                                                      masks["lungs"]))
            means = {t.region.name: t.region.mean_gy for t in s.tumours}
            means.update(liver=s.whole_liver.mean_gy, normal_liver=s.normal_liver.region.mean_gy,
                         lungs=s.lungs.region.mean_gy if s.lungs.region else float("nan"))
            errors = {r: 100 * (v / p["imaged"][r]["mean_gy"] - 1) for r, v in means.items()}
            truth_img = sitk.GetImageFromArray(_on_spect(npz["dose_gy"], affine, spect))
            truth_img.CopyInformation(spect)
            t0 = time.perf_counter()
            g = gamma_index(truth_img, dose.dose, mask=masks["liver"])
            t_gamma = time.perf_counter() - t0
            print(f"seed {seed} {'+'.join(variants)} ({args.size}): phantom {t_phantom:.1f} s, predicted dose "
                  f"{t_pred:.2f} s, gamma {t_gamma:.2f} s")
            print("  predicted mean vs truth: " + ", ".join(f"{r} {e:+.2f} %" for r, e in errors.items()))
            print(f"  gamma 3 %/3 mm in the liver: {g.pass_rate:.2%}; energy sum(D m)/49.67 = "
                  f"{dose.energy_gy_kg() / 49.67:.4f} GBq (planned {p['planned_activity_gbq']})")
            t0 = time.perf_counter()
            pet_headers = series(root, "y90-pet")
            pet = ct_series_image(pet_headers, what="PET")
            pet_ct = ct_series_image(series(root, "y90-pet-ct"))
            delivered = delivered_dose_from_pet(pet, pet_headers, pet_ct)
            reg = register_post_therapy(ct, pet_ct)
            t_del = time.perf_counter() - t0
            regions = {r: masks[r] for r in ("liver", "normal_liver", "T1", "T2", "T3")}
            comp = compare_predicted_delivered(dose.dose, delivered_on_grid(delivered.dose, spect, reg), regions, spect)
            print(f"  delivered (PET + registration {t_del:.1f} s): " + ", ".join(
                f"{c.name} ratio {c.mean_ratio:.3f} (truth {y['comparison'][c.name]['mean_ratio']:.3f})" for c in comp))
            planning = series(root, "planning-ct")
            plan_ct = ct_series_image(planning)
            m = np.load(root / "truth" / "planning_masks.npz")
            t0 = time.perf_counter()
            rt = read_rt_dose(pydicom.dcmread(next((root / "tps-rtdose").glob("*.dcm"))))
            ev = evaluate_gsa_plan(rt.image, plan_ct, m["liver"], m["fls"], m["itv"], m["ptv"], m["gsa_mapped"])
            t_gsa = time.perf_counter() - t0
            td = truth["tps_dose"]
            print(f"  GSA plan ({t_gsa:.2f} s): FLV20Gy {ev.flv_percent:.2f} % (truth {td['flv20_percent']:.2f}), "
                  f"F20Gy {ev.f_percent:.2f} % (truth {td['f20_percent']:.2f})")


if __name__ == "__main__":
    main()
