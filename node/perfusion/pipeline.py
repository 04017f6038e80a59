"""CT perfusion analysis, end to end: 4D series in, Parametric Maps + Secondary Captures + measurements out.

Stages (timed; wall time and peak RSS per stage go into the measurements):
load (4D assembly) -> motion (rigid, to the arterial-peak frame) -> inputs (aorta, portal vein, spleen) ->
preprocess (baseline, masks, spatial smoothing, tissue classes) -> maps (max slope, DISCM) -> qualification
(acquisition checks, region values with their 1-SD and "not measurable" flags) -> outputs (DICOM objects).
"""
from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from scipy import ndimage

from node.derived import NOT_FOR_DIAGNOSIS
from node.imaging.capture import ImageRef, secondary_capture
from node.imaging.grids import image_from_affine
from node.perfusion import outputs as out
from node.perfusion.denoise import denoise_within
from node.perfusion.discm import Convolver
from node.perfusion.errors import PerfusionInputError
from node.perfusion.inputs import InputRoi, check_inputs, estimate_liver, find_inputs, set_enhancement, smoothed_frames
from node.perfusion.maps import curve_parameters, discm_set, max_slope_set
from node.perfusion.maxslope import MaxSlopeInputs
from node.perfusion.measurements import InputCurve, LiverCurve, PerfusionMeasurements, RegionStats, SeriesInfo
from node.perfusion.motion import correct_motion, reference_frame, residual_motion
from node.perfusion.names import METHOD_LABEL, METHOD_NAME
from node.perfusion.preprocess import baseline_count, estimate_noise, subtract_baseline, tissue_masks
from node.perfusion.qualify import acquisition_checks
from node.perfusion.reference import PerfusionReference, PerfusionResult, first_time_point_image
from node.perfusion.settings import PerfusionSettings
from node.perfusion.stats import (
    add_region_values,
    add_roi_curve_parameters,
    read_roi_masks,
    regional_statistics,
    roi_mean_curves,
    to_working_grid,
)
from node.perfusion.tissue_classes import class_curves, curve_classes
from node.perfusion.volume4d import Volume4D, assemble
from node.workflow import OutputObject

logger = logging.getLogger(__name__)
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = [[0, 1, 0], [1, 1, 1], [0, 1, 0]]


class StageTimer:
    """Wall time, CPU time (all threads; on a shared machine it shows the work when the wall time shows the queue)
    and peak resident memory (ru_maxrss, a high-water mark of the process) per stage."""

    def __init__(self) -> None:
        self.stages: dict[str, dict[str, float]] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start, cpu = time.perf_counter(), time.process_time()
        yield
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB
        self.stages[name] = {"wall_s": round(time.perf_counter() - start, 3),
                             "cpu_s": round(time.process_time() - cpu, 3), "peak_rss_mb": round(peak_mb, 1)}
        logger.info("perfusion stage %s: %.2f s (CPU %.2f s), peak RSS %.0f MB", name, self.stages[name]["wall_s"],
                    self.stages[name]["cpu_s"], peak_mb)


def _liver_mask(roi_native: dict[str, np.ndarray], analysis: PerfusionSettings, vol: Volume4D,
                analysed: np.ndarray, rois: dict[str, InputRoi]) -> tuple[np.ndarray, str]:
    wanted = {n.lower() for n in analysis.liver_roi_names}
    for name, mask in roi_native.items():
        if name.lower() in wanted:
            return to_working_grid(mask, vol.factor), f"rtstruct:{name}"
    return estimate_liver(vol.data, analysed, vol.grid, rois, vol.times), "automatic estimate"


def _lesions_and_values(roi_native: dict[str, np.ndarray], regional: dict[str, dict[str, Any]], method: str
                        ) -> tuple[dict[str, np.ndarray], dict[str, dict[str, str]], list[str]]:
    """The lesions of the RTSTRUCT (outlined on the pages), every region's value text per quantity as the report
    states it (value of the region's mean curve +- 1 SD, or n.m.), and why each n.m. value is not measurable."""
    lesions = {n: m for n, m in roi_native.items() if out.LESION_NAME.search(n)}
    values: dict[str, dict[str, str]] = {}
    flags: list[str] = []
    for name, entry in regional.items():
        if name not in roi_native:
            continue
        region_values = (entry.get("values") or {}).get(method) or {}
        values[name] = {param: out.region_text(region_values.get(param), out.PARAMETERS[param].ucum)
                        for param in entry.get(method) or {} if param in out.PARAMETERS}
        flags += [f"{name} {param}: {v.reason or 'not measurable'}" for param, v in region_values.items()
                  if not v.measurable]
    return lesions, values, flags


def _build_outputs(map_sets: list[out.MapSet], vol: Volume4D, ref_t: int, analysed: np.ndarray,
                   liver_native: np.ndarray, liver_source: str, roi_native: dict[str, np.ndarray],
                   regional: dict[str, dict[str, Any]], inputs: dict[str, np.ndarray], tissue: dict[str, np.ndarray],
                   t_spl: float) -> list[OutputObject]:
    objects: list[OutputObject] = []
    number = out.SERIES_NUMBER_BASE
    for ms in map_sets:
        for param, values in ms.maps.items():
            number += 1
            ds = out.parametric_map(values, param, ms, vol, ref_t, number)
            objects.append(OutputObject("parametric-map", ds, f"{param} ({METHOD_LABEL[ms.method]})"))
    for ms in map_sets:
        number += 1
        series_uid = hd.UID()
        desc = f"Perfusion, {METHOD_LABEL[ms.method]} - {NOT_FOR_DIAGNOSIS}"  # <= 64 characters (LO)
        lesions, texts, flags = _lesions_and_values(roi_native, regional, ms.method)
        pages = out.map_pages(ms, vol, ref_t, analysed, liver_native, liver_source, lesions, texts, desc, t_spl,
                              flags)
        for i, (k, page) in enumerate(pages, start=1):
            ref_ds, frame = vol.source_ref(ref_t, k)
            comments = (f"{NOT_FOR_DIAGNOSIS}. CT perfusion, {METHOD_NAME[ms.method]} ({ms.summary}): "
                        f"slice {k + 1}, colour inside the liver ({liver_source}) over the CT of time point "
                        f"{ref_t + 1}.")
            sc = secondary_capture(page, ref_ds, [ImageRef.of(ref_ds, frame)], series_uid=series_uid,
                                   series_number=number, instance_number=i, series_description=desc,
                                   comments=comments)
            objects.append(OutputObject("secondary-capture", sc, f"{METHOD_LABEL[ms.method]} maps, slice {k + 1}"))
    number += 1
    k_mid = vol.grid.shape[0] // 2
    ref_ds, _ = vol.source_ref(ref_t, k_mid)
    desc = f"Perfusion curves - {NOT_FOR_DIAGNOSIS}"
    page = out.curve_page(vol, ref_t, inputs, tissue, t_spl, desc)
    sources = [ImageRef.of(*vol.source_ref(t, k_mid)) for t in range(vol.n_times)]
    sc = secondary_capture(page, ref_ds, sources, series_uid=hd.UID(), series_number=number, instance_number=1,
                           series_description=desc,
                           comments=f"{NOT_FOR_DIAGNOSIS}. Mean enhancement of the input regions, the liver and "
                                    f"each lesion; the spleen's peak at {t_spl:g} s splits the arterial and the "
                                    "portal phase.", image_plane=False)
    objects.append(OutputObject("secondary-capture", sc, "time-attenuation curves"))
    return objects


def run_perfusion(ct_datasets: Sequence[Dataset], analysis: PerfusionSettings,
                  rtstruct: Dataset | None = None) -> PerfusionResult:
    """Analyse one CT perfusion series; raises an AnalysisError subclass with the reason if it cannot."""
    timer = StageTimer()
    with timer("load"):
        vol = assemble(ct_datasets)
        # Enhanced CT: its unenhanced frame, kept before motion correction and baseline subtraction change the data
        first_frame = vol.data[0].copy() if vol.multiframe is not None else None
        noise_hu = estimate_noise(vol.data)
    with timer("motion"):
        ref_t = reference_frame(vol.data)
        motion, in_view = correct_motion(vol.data, vol.grid, ref_t)
    roi_native, rtstruct_note = {}, "none given"
    if rtstruct is not None:
        try:
            roi_native = read_roi_masks(rtstruct, vol, ref_t)
            rtstruct_note = f"used: {', '.join(roi_native) or 'no ROIs'}"
        except PerfusionInputError as exc:
            # A structure set of another CT (e.g. the planning CT) must not cost the maps: note it and go on.
            logger.warning("%s", exc)
            rtstruct_note = f"not used: {exc}"
    with timer("inputs"):
        roi_work = {name: to_working_grid(m, vol.factor) for name, m in roi_native.items()}
        smoothed = smoothed_frames(vol.data, vol.grid)  # shared by input detection and the vessel mask
        rois = find_inputs(vol.data, vol.grid, analysis, roi_work, in_view, smoothed)
        n_base = baseline_count(rois["aorta"].hu)
        set_enhancement(rois, n_base)
        check_inputs(rois, vol.times)
        residual_mm = residual_motion(vol.data, vol.grid, ref_t, rois["portal_vein"].centre_mm)
    with timer("preprocess"):
        baseline = subtract_baseline(vol.data, n_base)
        masks = tissue_masks(baseline, vol.data, vol.grid.spacing, smoothed.peak_hu)
        del smoothed
        analysed = masks.tissue & in_view
        if analysed.sum() < 100:
            raise PerfusionInputError("CT perfusion: almost no soft tissue to analyse (after air/fat/bone/vessel "
                                      "masking and motion); wrong series or field of view?")
        liver, liver_source = _liver_mask(roi_native, analysis, vol, analysed, rois)
        roi_curves = roi_mean_curves(vol.data, roi_native, analysed, vol)  # unsmoothed: ROI-curve analysis
        liver_curve = vol.data[:, liver].mean(axis=1) if liver.any() else np.zeros(vol.n_times)
        noise_reduction = denoise_within(vol.data, analysed, noise_hu, baseline,
                                         noise_hu / np.sqrt(n_base)).as_dict()
        del baseline
        curves = vol.data[:, analysed]
        # tissue classes by curve shape: the steepest max-slope intervals and the model's delays come from their
        # (practically noiseless) mean curves (node.perfusion.tissue_classes)
        labels = curve_classes(curves)
        class_means, class_counts = class_curves(curves, labels)
    aorta, portal, spleen = (rois[n].enhancement for n in ("aorta", "portal_vein", "spleen"))
    t_spl = float(vol.times[int(np.argmax(spleen))])
    ms_inputs = MaxSlopeInputs(t_spl=t_spl, aorta_peak_hu=float(aorta.max()), portal_peak_hu=float(portal.max()))
    conv = Convolver(vol.times, aorta, portal)
    with timer("maps"):
        map_sets = []
        if "max-slope" in analysis.methods:
            select = class_means.T[:, labels].astype(np.float32)
            map_sets.append(max_slope_set(curves, analysed, vol.times, ms_inputs, noise_reduction, select))
            del select
        if "discm" in analysis.methods:
            map_sets.append(discm_set(curves, analysed, conv, labels, class_means, class_counts, noise_reduction))
        del curves
    with timer("qualification"):
        checks = acquisition_checks(vol.times, aorta, portal, residual_mm)
        regional = regional_statistics(map_sets, roi_native, analysed, vol) if roi_native else {}
        roi_noise = {name: noise_hu / np.sqrt(max(regional[name]["analysed_voxels"], 1))
                     for name in roi_curves if name in regional}
        add_roi_curve_parameters(regional, roi_curves, {
            name: curve_parameters(curve, vol.times, analysis.methods, ms_inputs, conv, roi_noise[name])
            for name, curve in roi_curves.items() if name in regional}, roi_noise)
        add_region_values(regional, list(analysis.methods), analysis.tolerance, checks)
    with timer("outputs"):
        # colour inside the received liver contour where there is one, else inside the node's own liver mask
        wanted = {n.lower() for n in analysis.liver_roi_names}
        received = next((m for n, m in roi_native.items() if n.lower() in wanted), None)
        if received is not None:
            liver_native, shown_source = received, "the received liver contour"
        else:
            # the node's liver estimate misses lesions that enhance unlike liver: the received regions of the
            # liver (parenchyma, lesions) belong to it, and what they enclose in a slice does too
            liver_native = out.native_mask(liver, vol)
            for name, mask in roi_native.items():
                if "liver" in name.lower() or out.LESION_NAME.search(name):
                    liver_native |= mask
            liver_native = ndimage.binary_fill_holes(liver_native, structure=_IN_PLANE)
            shown_source = "the node's liver estimate with the received liver regions"
        tissue = {"liver": liver_curve} | {n: c for n, c in roi_curves.items() if out.LESION_NAME.search(n)}
        objects = _build_outputs(map_sets, vol, ref_t, analysed, liver_native, shown_source, roi_native, regional,
                                 {"aorta": aorta, "portal vein": portal, "spleen": spleen}, tissue, t_spl)
    voxel_ml = vol.grid.voxel_volume_ml
    measurements = PerfusionMeasurements(
        series=SeriesInfo(
            series_instance_uid=str(ct_datasets[0].get("SeriesInstanceUID", "")),
            encoding="enhanced-ct" if vol.multiframe is not None else "classic-ct",
            n_time_points=vol.n_times, times_s=[round(float(t), 3) for t in vol.times],
            time_spread_within_time_point_s=round(vol.time_spread_s, 3),
            native_shape_zyx=list(vol.native_grid.shape), working_shape_zyx=list(vol.grid.shape),
            working_spacing_mm_zyx=[round(float(s), 4) for s in vol.grid.spacing]),
        reference_time_point=ref_t, reference_time_s=round(float(vol.times[ref_t]), 3),
        motion=list(motion),
        baseline_frames=n_base,
        noise_hu=round(noise_hu, 2), noise_reduction=noise_reduction,
        inputs={name: InputCurve.of(roi, vol.times) for name, roi in rois.items()},
        t_spl_s=t_spl,
        aorta_peak_hu=round(float(aorta.max()), 2), aorta_peak_time_s=float(vol.times[int(np.argmax(aorta))]),
        portal_peak_hu=round(float(portal.max()), 2),
        portal_peak_time_s=float(vol.times[int(np.argmax(portal))]),
        liver_curve=LiverCurve(source=liver_source, volume_ml=round(float(liver.sum()) * voxel_ml, 1),
                               enhancement_hu=[round(float(v), 2) for v in liver_curve]),
        masks=masks.summary(voxel_ml) | {"analysed_ml": round(float(analysed.sum()) * voxel_ml, 1)},
        methods={ms.method: ms.parameters for ms in map_sets},
        rtstruct=rtstruct_note,
        regional_statistics={name: RegionStats.of(entry, analysis.methods) for name, entry in regional.items()},
        stages=timer.stages,
        acquisition_checks=checks,
        tolerance=analysis.tolerance,
    )
    # what people must review: failed acquisition checks, and every region value reported as not measurable
    warnings = [f"CT perfusion acquisition: {c.finding}" for c in checks if not c.passed]
    warnings += measurements.not_measurable()
    # the unenhanced CT the maps were computed from, for workflows that register other images to the maps
    ct = (image_from_affine(first_frame, vol.grid.affine()) if first_frame is not None
          else first_time_point_image(ct_datasets))
    reference = PerfusionReference(ct, str(ct_datasets[0].get("PatientID", "")),
                                   tuple(o.dataset for o in objects if o.kind == "parametric-map"),
                                   {name: image_from_affine(mask.astype(np.uint8), vol.native_grid.affine())
                                    for name, mask in roi_native.items()},
                                   {name: {(method, param): reason for method, param, reason in stats.not_measurable()}
                                    for name, stats in measurements.regional_statistics.items()})
    logger.info("CT perfusion done: %d outputs, t_spl %.1f s, aorta peak %.0f HU, portal peak %.0f HU",
                len(objects), t_spl, aorta.max(), portal.max())
    return PerfusionResult("perfusion", measurements, objects, warnings, reference=reference)
