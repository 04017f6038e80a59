"""write_phantom: one synthetic patient as DICOM series plus the ground truth (see README.md)."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import pydicom

from node.phantom import anatomy as A
from node.phantom import compress, dicomio, nm, render, spect, tpsdose, truth, truthdoc, y90
from node.phantom import layout as L
from node.phantom.ct import CtOptions, write_ct_series
from node.phantom.curves import NONUNIFORM_TIMES_S, UNIFORM_TIMES_S, build_curves, sample
from node.phantom.dicomio import Patient, Series, Study
from node.phantom.enhanced import write_enhanced_ct
from node.phantom.geometry import Grid, Rigid
from node.phantom.rtss import PERFUSION_ROIS, write_liver_rtstruct, write_perfusion_rtstruct
from node.phantom.variants import check_variants

logger = logging.getLogger(__name__)

#: Breathing: peak displacement bounds (x, y, z mm); mostly cranio-caudal. The patient drifts smoothly away from
#: the breath-hold position and back over a period of MOTION_PERIOD_S (seeded within the range).
MOTION_MAX_MM = (1.0, 1.0, 4.0)
MOTION_PERIOD_S = (14.0, 22.0)
#: Output folder of the CT series on each layout grid (truth.json keys).
_SERIES_FOLDER = {"perfusion": "ct-perfusion", "planning": "planning-ct", "gsa-ct": "spect-gsa-ct",
                  "maa-ct": "spect-maa-ct"}
_VISIT = {"perfusion": "perfusion", "planning": "planning", "gsa-ct": "gsa", "maa-ct": "maa"}
#: Region name of each enhancing CT label.
ENHANCING = {A.AORTA: "aorta", A.PORTAL_VEIN: "portal_vein", A.SPLEEN: "spleen", A.LIVER: "liver",
             **{A.tumour_label(n): t.name for n, t in enumerate(A.TUMOURS)}}


@dataclass
class _Context:
    """Everything the writing stages share."""

    outdir: Path
    size: str
    seed: int
    chosen: frozenset[str]
    lay: L.Layout
    patient: Patient
    studies: dict[str, Study]
    frames_of_reference: dict[str, str]
    rng_ct: np.random.Generator
    rng_nm: np.random.Generator
    noise_override_hu: float | None = None
    doc: dict = field(default_factory=dict)

    def sigma(self, series_key: str) -> float:
        """CT noise SD (HU) of one series: physically scaled with its voxel volume unless overridden."""
        if "noiseless" in self.chosen:
            sd = 0.0
        elif self.noise_override_hu is not None:
            sd = float(self.noise_override_hu)
        else:
            sd = L.ct_noise_sd_hu(self.lay.grids[series_key].spacing)
        self.doc.setdefault("ct_noise_sd_hu", {})[_SERIES_FOLDER[series_key]] = sd
        return sd

    @property
    def ct_position(self) -> str:
        return "FFS" if "feet-first" in self.chosen else "HFS"

    @property
    def compression(self) -> str | None:
        return next((c for c in ("jpeg2000", "jpeg-lossless") if c in self.chosen), None)

    def instance_numbers(self, n: int, stream: int) -> np.ndarray | None:
        if "shuffled-instance-numbers" not in self.chosen:
            return None
        return np.random.default_rng([self.seed, 11, stream]).permutation(n) + 1

    def series(self, visit: str, number: int, description: str, modality: str, offset_s: float = 0.0) -> Series:
        study = self.studies[visit]
        return Series(study, dicomio.new_uid(), number, description, modality, self.frames_of_reference[visit],
                      study.start() + timedelta(seconds=offset_s))

    def static_ct(self, labels: np.ndarray, series_key: str) -> np.ndarray:
        """Unenhanced CT (HU) of a label volume on grid `series_key`."""
        hu = _spine_slice_profile(_hu_table(None, {})[labels], labels, self.lay.grids[series_key],
                                  self.lay.poses[_VISIT[series_key]])
        return _noisy(hu, self.rng_ct, self.sigma(series_key))


def _hu_table(frame: int | None, sampled: dict[str, np.ndarray]) -> np.ndarray:
    """HU of every label at one time point (None = unenhanced)."""
    table = np.zeros(A.N_LABELS, np.float32)
    for label, hu in L.BASELINE_HU.items():
        table[label] = hu
    if frame is not None:
        for label, name in ENHANCING.items():
            table[label] += sampled[name][frame]
    return table


def _spine_slice_profile(hu: np.ndarray, labels: np.ndarray, grid: Grid, pose: Rigid,
                         displacement_mm: np.ndarray | None = None) -> np.ndarray:
    """Give the vertebral column (bone and disc voxels) the partial volume of the slice thickness along z.

    Everything else takes the value at the voxel centre; the column is non-enhancing and in no truth mask,
    and its graded end plates are what lets a motion correction see sub-slice cranio-caudal shifts.
    """
    column = (labels == A.BONE) | (labels == A.DISC)
    idx = np.argwhere(column).astype(float)
    if idx.size == 0:
        return hu
    shift = np.zeros(3) if displacement_mm is None else np.asarray(displacement_mm, float)
    z_body = pose.inverse().apply(grid.to_patient(idx) - shift)[:, 2]
    frac = A.VERTEBRAE.bone_fraction(z_body, float(grid.spacing[0]))
    bone, disc = L.BASELINE_HU[A.BONE], L.BASELINE_HU[A.DISC]
    hu[column] = (disc + (bone - disc) * frac).astype(hu.dtype)
    return hu


def _noisy(hu: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    if sigma <= 0:
        return hu
    return hu + np.float32(sigma) * rng.standard_normal(hu.shape, dtype=np.float32)


def _motion(times: np.ndarray, seed: int) -> np.ndarray:
    """Per-frame patient displacement (mm) at `times` (s); frame 0 (t = 0) is the reference (zero).

    Smooth breathing drift d(t) = a * (1 - cos(2 pi t / P)) / 2: the patient leaves the breath-hold position
    and returns, mostly cranio-caudally. Amplitude a (z 3-4 mm, x/y within +-1 mm) and period P are seeded.
    """
    rng = np.random.default_rng([seed, 7])
    peak = np.asarray(MOTION_MAX_MM)
    amplitude = np.array([rng.uniform(-1.0, 1.0) * peak[0], rng.uniform(-1.0, 1.0) * peak[1],
                          rng.choice([-1.0, 1.0]) * rng.uniform(0.75, 1.0) * peak[2]])
    period = rng.uniform(*MOTION_PERIOD_S)
    profile = (1.0 - np.cos(2.0 * np.pi * (np.asarray(times, float) - times[0]) / period)) / 2.0
    return np.round(profile[:, None] * amplitude[None, :], 1) + 0.0  # + 0.0: no -0.0 in truth.json


def write_phantom(outdir: Path, size: str = "small", seed: int = 0, variants: Sequence[str] = (),
                  ct_noise_sd_hu: float | None = None) -> Path:
    """Write the phantom patient PHANTOM<seed> under `outdir` and return `outdir`.

    `size` is 'small' (tests) or 'full' (clinical matrix sizes); `variants` are names from VARIANTS.
    CT noise is CT_NOISE_REF_HU at the reference voxel, scaled by sqrt(V_ref / V) per CT grid, unless
    `ct_noise_sd_hu` gives one SD for every CT series ('noiseless' wins over both).
    The seed drives image noise, Poisson counts, motion and InstanceNumber shuffling; anatomy, kinetics
    and poses are fixed. Raises PhantomError for an unknown size or variant or a contradictory combination.
    """
    started = time.perf_counter()
    chosen = check_variants(variants)
    lay = L.build_layout(size, feet_first="feet-first" in chosen)
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ctx = _Context(
        outdir=outdir, size=size, seed=seed, chosen=chosen, lay=lay,
        patient=Patient(id=f"PHANTOM{seed}", name=f"Phantom^Liver{seed}"),
        studies={visit: Study(dicomio.new_uid(), *values) for visit, values in L.STUDIES.items()},
        frames_of_reference={visit: dicomio.new_uid() for visit in L.STUDIES},
        rng_ct=np.random.default_rng([seed, 1]), rng_nm=np.random.default_rng([seed, 2]),
        noise_override_hu=ct_noise_sd_hu,
    )
    _write_perfusion(ctx)
    plan_paths, planning_labels, liver = _write_planning(ctx)
    expected = {visit: _write_spect_visit(ctx, visit, tracer) for visit, tracer in (("gsa", nm.GSA),
                                                                                   ("maa", nm.MAA))}
    if ctx.compression == "jpeg-lossless":
        compress.jpeg_lossless_inplace(sorted(outdir.glob("*ct*/*.dcm")))
    _write_rt_truth(ctx, plan_paths, planning_labels, liver, expected["gsa"])
    for visit, counts in expected.items():
        np.savez_compressed(outdir / "truth" / f"spect_{visit}_expected.npz",
                            expected_counts=counts.astype(np.float32),
                            affine_kij_to_patient=lay.grids[f"{visit}-nm"].affine)
    if "y90" in chosen:
        y90.write_y90(ctx)
    if "tps-rtdose" in chosen:
        tpsdose.write_tps_dose(ctx)
    write_liver_rtstruct(outdir / "planning-rtstruct" / "RS00001.dcm", plan_paths, liver)
    ctx.doc["rtstruct"] = "planning-rtstruct/RS00001.dcm"
    if "enhanced-ct" not in chosen:  # rtstruct references single-frame CT slices
        with np.load(outdir / "truth" / "perfusion_masks.npz") as m:
            write_perfusion_rtstruct(outdir / "perfusion-rtstruct" / "RS00001.dcm",
                                     sorted((outdir / "ct-perfusion").glob("*.dcm")),
                                     {k: m[k] for k in PERFUSION_ROIS})
        ctx.doc["perfusion_rtstruct"] = "perfusion-rtstruct/RS00001.dcm"
    _write_truth_json(ctx)
    logger.info("phantom %s (%s, variants %s) written to %s in %.1f s", ctx.patient.id, size,
                sorted(chosen), outdir, time.perf_counter() - started)
    return outdir


def _write_perfusion(ctx: _Context) -> None:
    """The dynamic CT (classic series or one enhanced object), its region masks and curve truth."""
    times = np.array(NONUNIFORM_TIMES_S if "nonuniform-time" in ctx.chosen else UNIFORM_TIMES_S)
    curves = build_curves(L.KINETICS)
    sampled = {"aorta": sample(curves.t_fine, curves.aorta, times),
               "portal_vein": sample(curves.t_fine, curves.portal_vein, times),
               "spleen": sample(curves.t_fine, curves.spleen, times),
               **{n: sample(curves.t_fine, c, times) for n, c in curves.tissues.items()}}
    grid, pose = ctx.lay.grids["perfusion"], ctx.lay.poses["perfusion"]
    motion = _motion(times, ctx.seed) if "motion" in ctx.chosen else np.zeros((len(times), 3))
    static_labels = render.label_volume(grid, pose)
    sigma = ctx.sigma("perfusion")

    def volumes() -> Iterator[np.ndarray]:
        for f in range(len(times)):
            labels = static_labels if not motion[f].any() else render.label_volume(grid, pose, motion[f])
            hu = _spine_slice_profile(_hu_table(f, sampled)[labels], labels, grid, pose, motion[f])
            yield _noisy(hu, ctx.rng_ct, sigma)

    series = ctx.series("perfusion", 1, f"CT liver perfusion {len(times)} phases", "CT")
    outdir = ctx.outdir / "ct-perfusion"
    if "enhanced-ct" in ctx.chosen:
        paths = [write_enhanced_ct(outdir / "CT_ENHANCED.dcm", ctx.patient, series, grid, volumes(), times,
                                   ctx.ct_position, "jpeg2000" if ctx.compression == "jpeg2000" else None)]
    else:
        opts = CtOptions(patient_position=ctx.ct_position, contrast=True, times_s=list(times),
                         time_in_temporal_position="temporal-position" in ctx.chosen,
                         temporal_spacing_s=float(times[1] - times[0]), compression=ctx.compression,
                         instance_numbers=ctx.instance_numbers(len(times) * grid.shape[0], 0))
        paths = write_ct_series(outdir, ctx.patient, series, grid, volumes(), opts)

    masks = {
        "aorta": static_labels == A.AORTA, "portal_vein": static_labels == A.PORTAL_VEIN,
        "spleen": static_labels == A.SPLEEN, "liver_parenchyma": static_labels == A.LIVER,
        "liver": render.sample_volume(grid, pose, A.liver_envelope, bool),
        **{t.name: static_labels == A.tumour_label(n) for n, t in enumerate(A.TUMOURS)},
    }
    truth.save_masks(ctx.outdir / "truth" / "perfusion_masks.npz", grid, masks, labels=static_labels)
    baseline = {name: L.BASELINE_HU[label] for label, name in ENHANCING.items()}
    ctx.doc["perfusion"] = truthdoc.perfusion_entry(ctx.chosen, times, curves, motion, len(paths), baseline,
                                                 sigma)
    ctx.doc.setdefault("series", {})["ct-perfusion"] = series.uid


def _write_planning(ctx: _Context) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """The planning CT; returns its paths, label volume and whole-liver mask (k in sort_slices order)."""
    grid, pose = ctx.lay.grids["planning"], ctx.lay.poses["planning"]
    series = ctx.series("planning", 1, "Planning CT", "CT")
    opts = CtOptions(patient_position=ctx.ct_position, compression=ctx.compression,
                     instance_numbers=ctx.instance_numbers(grid.shape[0], 1))
    labels = render.label_volume(grid, pose)
    paths = write_ct_series(ctx.outdir / "planning-ct", ctx.patient, series, grid, [ctx.static_ct(labels, "planning")],
                            opts)
    ctx.doc.setdefault("series", {})["planning-ct"] = series.uid
    return paths, labels, render.sample_volume(grid, pose, A.liver_envelope, bool)


def _write_spect_visit(ctx: _Context, visit: str, tracer: nm.Tracer) -> np.ndarray:
    """One SPECT/CT visit (CT series + NM object sharing study and frame of reference); returns the
    expected (noiseless) counts on the NM grid."""
    grid_ct, grid_nm, pose = ctx.lay.grids[f"{visit}-ct"], ctx.lay.grids[f"{visit}-nm"], ctx.lay.poses[visit]
    ct_series = ctx.series(visit, 1, f"SPECT/CT CT ({tracer.text})", "CT", offset_s=-120.0)
    nm_series = ctx.series(visit, 2, f"SPECT {tracer.text} OSEM", "NM")
    opts = CtOptions(patient_position=ctx.ct_position, compression=ctx.compression,
                     instance_numbers=ctx.instance_numbers(grid_ct.shape[0], 2 if visit == "gsa" else 3))
    write_ct_series(ctx.outdir / f"spect-{visit}-ct", ctx.patient, ct_series, grid_ct,
                    [ctx.static_ct(render.label_volume(grid_ct, pose), f"{visit}-ct")], opts)
    expected, info = (spect.gsa_expected if visit == "gsa" else spect.maa_expected)(grid_nm, pose)
    counts = np.rint(expected) if "noiseless" in ctx.chosen else ctx.rng_nm.poisson(expected)
    ds = nm.nm_dataset(ctx.patient, nm_series, grid_nm, counts, tracer, "negative-spacing" in ctx.chosen)
    nm.write_nm(ctx.outdir / f"spect-{visit}" / "NM00001.dcm", ds)
    ctx.doc.setdefault("series", {})[f"spect-{visit}"] = nm_series.uid
    ctx.doc.setdefault("series", {})[f"spect-{visit}-ct"] = ct_series.uid
    ctx.doc[visit] = {**info, "nm_sop_instance_uid": ds.SOPInstanceUID}
    return expected


def _write_rt_truth(ctx: _Context, plan_paths: list[Path], planning_labels: np.ndarray, liver: np.ndarray,
                    gsa_expected: np.ndarray) -> None:
    """FLS/ITV/PTV on the planning grid from the noiseless GSA mapped through the known transform."""
    grid = ctx.lay.grids["planning"]
    plan_to_gsa = ctx.lay.poses["planning"].inverse().then(ctx.lay.poses["gsa"])
    mapped = truth.map_volume(gsa_expected, ctx.lay.grids["gsa-nm"], grid, plan_to_gsa)
    rt = truth.rt_volumes(mapped, liver, grid)
    tumours = {t.name: planning_labels == A.tumour_label(n) for n, t in enumerate(A.TUMOURS)}
    uids = _sorted_uids(plan_paths)
    truth.save_masks(ctx.outdir / "truth" / "planning_masks.npz", grid, {"liver": liver, **rt, **tumours},
                     labels=planning_labels, gsa_mapped=mapped.astype(np.float32), sop_instance_uids=np.array(uids))
    ctx.doc["gsa"] = truthdoc.rt_entry(rt, liver, grid.voxel_volume_ml, ctx.doc.get("gsa", {}))
    ctx.doc["masks"] = truthdoc.masks_entry(uids)


def _write_truth_json(ctx: _Context) -> None:
    doc = {
        "phantom_version": truthdoc.PHANTOM_VERSION, "seed": ctx.seed, "size": ctx.size,
        "variants": sorted(ctx.chosen), "patient_id": ctx.patient.id, "patient_name": ctx.patient.name,
        "coordinates": "DICOM patient coordinates (LPS, mm) of each visit; 'body' = perfusion frame",
        "studies": {v: {"study_instance_uid": s.uid, "frame_of_reference_uid": ctx.frames_of_reference[v],
                        "date": s.date} for v, s in ctx.studies.items()},
        "max_slope_convention": truthdoc.MAX_SLOPE_CONVENTION,
        "tumours": truthdoc.tumour_entries(ctx.lay.poses),
        "patient_shift_planning_mm": list(L.PLANNING_SHIFT_MM),
        "patient_shift_note": "planning patient coordinates = perfusion (body) coordinates + this shift",
        "transforms": truthdoc.transforms_entry(ctx.lay.poses),
        "grids": {k: g.describe() for k, g in ctx.lay.grids.items()},
        "labels": truthdoc.labels_entry(),
        **ctx.doc,
    }
    doc["maa"].update({"tn_ratio": dict(L.MAA_TN_RATIO), "lung_shunt_fraction": L.MAA_LUNG_SHUNT_FRACTION,
                       "frame_of_reference": "own MAA SPECT/CT (spect-maa + spect-maa-ct), not shared with GSA"})
    (ctx.outdir / "truth.json").write_text(json.dumps(doc, indent=1))


def _sorted_uids(paths: list[Path]) -> list[str]:
    """SOPInstanceUIDs of a single-phase CT in slice order along the normal (rtstruct.sort_slices order)."""
    rows = []
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        iop = np.asarray(ds.ImageOrientationPatient, float)
        rows.append((float(np.asarray(ds.ImagePositionPatient, float) @ np.cross(iop[:3], iop[3:])),
                     ds.SOPInstanceUID))
    return [uid for _, uid in sorted(rows)]
