"""Motion correction between time frames (science.md 1c step 2), with SimpleITK.

Every frame is registered to a reference frame, the arterial-peak frame (vessels are brightest there, and it is
the time point whose instances the maps reference), by a rigid translation: breathing and table creep shift
the abdomen; rotations between the frames of one breath-hold series are negligible, and three parameters keep
the registration cheap and stable.

Metric: Mattes mutual information, because contrast changes organ intensities between frames and squared
differences would read that as misalignment. Images are clipped to -200..800 HU, smoothed by at least
one voxel per axis (3 mm in-plane; otherwise noise favours shifts by half a slice, where linear interpolation
averages it away: measured 2-6 mm of spurious z shift on a still phantom) and reduced to ~6 mm voxels.
Breathing moves organs mostly along the body axis, and slices are thick: a local optimiser started at zero
stalls in the first slice-sized basin, so a coarse search along the slice normal comes first (it leaves its start
only for a clear gain in the metric), then a gradient descent refines all three directions. Frames are taken
outward from the reference, each starting from its neighbour's estimate with a search of one step either side.

Measured on the small digital phantom (5 mm slices; vertebral bodies and discs with slice-profile partial
volume; smooth breathing up to 4 mm in z, 1 mm in x/y): x/y within 0.2 mm, z within 0.9 mm. Frames whose
estimated shift is below MIN_APPLIED_SHIFT_MM (or a tenth of the smallest voxel size) are not resampled.
Voxels that leave the field of view in any frame are reported so they are not analysed.

Contrast can pose as motion: as organs and lesions enhance, mutual information of the whole image can rise
by sliding them along the slices (on still family cases: a z "drift" growing to 1.2-1.9 mm by the last frames,
with a metric gain of 0.4-0.9 %, as large as real breathing gives). So an estimate is only *applied* when it
also aligns the anatomy contrast cannot change better than no shift does (`confirmed`): the same prepared
images with everything above STABLE_HU[1] flattened (air, lung and fat against all soft tissue, enhanced or
not). Measured: still family cases, such spurious shifts make that alignment worse (-1.3 to -1.9 %); the
phantom's breathing (lung bases, body outline) makes it better (+0.08 to +0.39 % for shifts >= 0.7 mm). The
gain must be at least _SEARCH_GAIN, what a search step needs to count as motion: resampling alone gave a still
frame 0.03 % (family seed 4501, a sharp first pass at 1.5 s: a 1.2-1.4 mm z estimate that, applied, put the normal
liver's maximum-slope ALP map mean 15 % off). The phantom's breathing frames below that gain move < 0.4 voxel
(MIN_APPLIED_SHIFT_VOXELS) and were not applied anyway. The same confirmation gates the residual motion that the
liver check reports.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from node.imaging.geometry import Grid
from node.perfusion.volume4d import block_mean

logger = logging.getLogger(__name__)

_REG_VOXEL_MM = 6.0
#: Air/lung saturate; bone is kept up to 800 HU so that the graded (partial-volume) vertebral end plates and
#: discs show sub-slice cranio-caudal shifts (clipping at 400 HU flattened them: 2-3 mm z errors).
_CLIP_HU = (-200.0, 800.0)
#: Window of the confirmation images: only air, lung and fat differ there from soft tissue, which contrast
#: never brings below 0 HU nor fat above it.
STABLE_HU = (-200.0, 0.0)
#: ... and the least range (HU) of those images for them to show any such anatomy at all
_MIN_STABLE_RANGE_HU = 5.0
_SMOOTH_MM = 3.0
#: A search step along the normal must improve mutual information by this fraction of its value to count as
#: motion (on the phantom, still frames differ by < 0.1 %, moved ones by 0.2-2 %).
_SEARCH_GAIN = 0.001
_Z_STEPS, _Z_STEP_MM = 3, 2.0  # coarse search along the slice normal: +-3 steps of 2 mm
_ITERATIONS = 50
_SAMPLING_FRACTION, _SAMPLING_SEED = 0.1, 20240301
#: Shifts smaller than this are not applied: on still series the estimate wanders by up to 0.5 mm once contrast
#: changes the organs' intensities (measured on the phantom family), and resampling a frame for such a shift
#: mixes every region's edge voxels with their neighbours in that frame only (a 0.3-0.7 HU step in a liver ROI's
#: mean curve from that frame on: 5-7 % of a max-slope PVP, 5 % of the model's flows), which is worse than the
#: shift itself.
MIN_APPLIED_SHIFT_MM = 1.0
#: ... and shifts below this fraction of a voxel (each axis in its own voxel size): along 4-5 mm slices the
#: estimate of a still series reached 1.1 mm (a quarter slice) in the last frames of a 4 s series
MIN_APPLIED_SHIFT_VOXELS = 0.4
#: Voxels above this HU in the first frame (bone) and their surroundings are ignored when picking the
#: reference frame: a moving bone edge must not look like arriving contrast.
_BONE_HU = 300.0


@dataclass(frozen=True)
class FrameMotion:
    """Estimated translation of one frame relative to the reference (content of the frame = reference content
    moved by this vector, patient mm)."""

    frame: int
    translation_mm: tuple[float, float, float]
    magnitude_mm: float
    resampled: bool
    #: the estimate also aligns the non-enhancing anatomy (air, lung, fat) better than no shift (module doc)
    confirmed: bool = True


def reference_frame(data: np.ndarray) -> int:
    """Index of the arterial-peak frame: the one whose brightest non-bone voxels are brightest.

    Voxels near bone of the first frame are excluded (dilated so that motion cannot bring a bone edge in);
    the 99.9th percentile of the rest peaks when the aorta is fullest of contrast.
    """
    sub = data[:, :, ::2, ::2]  # subsample: a percentile does not need every voxel
    bone = ndimage.binary_dilation(sub[0] > _BONE_HU, iterations=4)
    keep = ~bone & (sub[0] > -500)
    if not keep.any():
        return 0
    level = [np.percentile(sub[t][keep], 99.9) for t in range(sub.shape[0])]
    return int(np.argmax(level))


def to_sitk(volume: np.ndarray, grid: Grid) -> sitk.Image:
    """A (Z, Y, X) array as a SimpleITK image carrying the grid's patient geometry."""
    img = sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.float32))
    img.SetSpacing((float(grid.spacing[2]), float(grid.spacing[1]), float(grid.spacing[0])))
    img.SetOrigin(tuple(float(v) for v in grid.origin))
    img.SetDirection(tuple(float(v) for v in np.column_stack([grid.row_dir, grid.col_dir, grid.normal]).ravel()))
    return img


def _prepared(volume: np.ndarray, grid: Grid, clip: tuple[float, float] = _CLIP_HU) -> sitk.Image:
    """Clipped (to `clip` HU), smoothed (>= one voxel per axis), reduced copy of a (Z, Y, X) frame for the metric.

    In-plane pixels are first averaged in blocks to about half the smoothing width (a block mean is the first step
    of the smoothing anyway), the Gaussian runs on those, and blocks of about _REG_VOXEL_MM are averaged last."""
    f = max(1, int(round(0.5 * _SMOOTH_MM / float(grid.spacing[1]))))
    small = block_mean(np.clip(volume, *clip), f)
    spacing = np.array([grid.spacing[0], grid.spacing[1] * f, grid.spacing[2] * f])
    smooth = ndimage.gaussian_filter(small, [max(_SMOOTH_MM, s) / s for s in spacing], truncate=3.0)
    g = max(1, int(round(_REG_VOXEL_MM / spacing[1])))
    gz = max(1, int(round(_REG_VOXEL_MM / spacing[0])))
    reduced = block_mean(smooth, g)
    if gz > 1:
        nz = reduced.shape[0] // gz * gz
        reduced = reduced[:nz].reshape(nz // gz, gz, *reduced.shape[1:]).mean(axis=1) if nz else reduced
    shift = (f * g - 1) / 2.0
    coarse = Grid(origin=grid.origin + shift * (grid.spacing[2] * grid.row_dir + grid.spacing[1] * grid.col_dir)
                  + (gz - 1) / 2.0 * grid.spacing[0] * grid.normal, row_dir=grid.row_dir, col_dir=grid.col_dir,
                  normal=grid.normal, spacing=np.array([spacing[0] * gz, spacing[1] * g, spacing[2] * g]),
                  shape=reduced.shape)
    return to_sitk(reduced, coarse)


def _method() -> sitk.ImageRegistrationMethod:
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    # a fixed random tenth of the voxels: the metric of a 6 mm image needs no more, and the same sample in every
    # evaluation keeps the coarse search's comparisons exact
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(_SAMPLING_FRACTION, _SAMPLING_SEED)
    # gradients by central differences at the sample points, not gradient images of the whole volume per call
    reg.SetMetricUseFixedImageGradientFilter(False)
    reg.SetMetricUseMovingImageGradientFilter(False)
    reg.SetInterpolator(sitk.sitkLinear)
    return reg


def _register(fixed: sitk.Image, moving: sitk.Image, normal: np.ndarray, start: np.ndarray | None = None,
              steps: int = _Z_STEPS) -> np.ndarray:
    """Translation (patient mm) mapping fixed points to moving points: coarse search along the slice normal
    (`steps` steps either side of `start`), then gradient descent."""
    origin = np.zeros(3) if start is None else np.asarray(start, float)
    costs = {}
    for n in range(-steps, steps + 1):
        reg = _method()
        offset = tuple(float(v) for v in origin + normal * n * _Z_STEP_MM)
        reg.SetInitialTransform(sitk.TranslationTransform(3, offset), inPlace=False)
        costs[n] = reg.MetricEvaluate(fixed, moving)
    best = min(costs, key=costs.__getitem__)
    if costs[0] - costs[best] <= _SEARCH_GAIN * abs(costs[0]):
        best = 0
    return _refine(fixed, moving, origin + normal * best * _Z_STEP_MM)


def _metric(fixed: sitk.Image, moving: sitk.Image, vec: np.ndarray) -> float:
    """The registration's cost (negative mutual information) at translation `vec`."""
    reg = _method()
    reg.SetInitialTransform(sitk.TranslationTransform(3, tuple(float(v) for v in vec)), inPlace=False)
    return float(reg.MetricEvaluate(fixed, moving))


def confirmed(fixed: np.ndarray | sitk.Image, moving: np.ndarray, grid: Grid, vec: np.ndarray) -> bool:
    """Whether translation `vec` aligns the non-enhancing anatomy (air, lung, fat: STABLE_HU) of two frames better
    than no shift does, by the gain a search step needs to count as motion (_SEARCH_GAIN: a smaller gain is what
    resampling alone gives a still frame): contrast cannot make that alignment better, motion does (module doc).
    Where the frames hold no such anatomy (a region inside soft tissue only) nothing can contradict the estimate:
    it stands.
    `fixed` may be given already prepared (_prepared(frame, grid, STABLE_HU)), to prepare it once per series."""
    f = fixed if isinstance(fixed, sitk.Image) else _prepared(fixed, grid, STABLE_HU)
    m = _prepared(moving, grid, STABLE_HU)
    for img in (f, m):
        values = sitk.GetArrayViewFromImage(img)
        if float(values.max() - values.min()) < _MIN_STABLE_RANGE_HU:
            return True
    still = _metric(f, m, np.zeros(3))
    return _metric(f, m, vec) < still - _SEARCH_GAIN * abs(still)


def _refine(fixed: sitk.Image, moving: sitk.Image, start: np.ndarray) -> np.ndarray:
    """Gradient-descent refinement of a translation from `start` (patient mm)."""
    tx = sitk.TranslationTransform(3, tuple(float(v) for v in start))
    reg = _method()
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=0.02, numberOfIterations=_ITERATIONS,
                                                 relaxationFactor=0.7)
    # All three directions are refined: vertebral end plates and discs carry the cranio-caudal information.
    reg.SetInitialTransform(tx, inPlace=True)
    reg.Execute(fixed, moving)
    return np.asarray(tx.GetOffset(), float)


def correct_motion(data: np.ndarray, grid: Grid, ref: int) -> tuple[list[FrameMotion], np.ndarray]:
    """Align every frame of `data` (T, Z, Y, X) to frame `ref` in place (linear resampling).

    Returns the per-frame motion and a (Z, Y, X) mask of voxels that stayed inside the field of view in
    every frame (elsewhere a moved frame has no data and the voxel's curve is meaningless).
    """
    spacing = np.asarray(grid.spacing, float)
    valid = np.ones(data.shape[1:], dtype=bool)
    fixed = to_sitk(data[ref], grid)
    fixed_small = _prepared(data[ref], grid)
    threshold = max(0.1 * float(spacing.min()), MIN_APPLIED_SHIFT_MM)
    estimates = {ref: np.zeros(3)}
    # outward from the reference: breathing drifts smoothly, so a frame's search starts where its neighbour
    # towards the reference ended and looks one step either side (the first frame each way searches fully)
    for t in list(range(ref + 1, data.shape[0])) + list(range(ref - 1, -1, -1)):
        prev = t - 1 if t > ref else t + 1
        full = prev == ref
        estimates[t] = _register(fixed_small, _prepared(data[t], grid), grid.normal,
                                 None if full else estimates[prev], _Z_STEPS if full else 1)
    report = []
    fixed_stable: sitk.Image | None = None  # the reference's confirmation image, prepared when first needed
    for t in range(data.shape[0]):
        vec = estimates[t]
        magnitude = float(np.linalg.norm(vec))
        # in voxels of each axis (patient mm onto the grid's axes): a shift along thick slices needs more mm
        in_voxels = float(np.linalg.norm(np.array([vec @ grid.row_dir, vec @ grid.col_dir, vec @ grid.normal])
                                         / spacing[[2, 1, 0]]))
        large = t != ref and magnitude > threshold and in_voxels > MIN_APPLIED_SHIFT_VOXELS
        if large and fixed_stable is None:
            fixed_stable = _prepared(data[ref], grid, STABLE_HU)
        ok = not large or confirmed(fixed_stable if fixed_stable is not None else data[ref], data[t], grid, vec)
        resample = large and ok
        if resample:
            tx = sitk.TranslationTransform(3, tuple(float(v) for v in vec))
            # Voxels moved in from outside the field of view get the frame's background (its first row: air).
            out = sitk.Resample(to_sitk(data[t], grid), fixed, tx, sitk.sitkLinear,
                                float(np.median(data[t, :, 0, :])))
            data[t] = sitk.GetArrayViewFromImage(out)
            inside = sitk.Resample(to_sitk(np.ones(data.shape[1:], np.float32), grid), fixed, tx,
                                   sitk.sitkNearestNeighbor, 0.0)
            valid &= sitk.GetArrayViewFromImage(inside) > 0.5
        x, y, z = (round(float(v), 2) for v in vec)
        report.append(FrameMotion(t, (x, y, z), round(magnitude, 2), resample, ok))
    logger.info("motion correction: reference frame %d, %d of %d frames moved (max %.1f mm), %d estimates not "
                "confirmed by the non-enhancing anatomy (not applied)", ref, sum(m.resampled for m in report),
                len(report), max(m.magnitude_mm for m in report), sum(not m.confirmed for m in report))
    return report, valid


#: half-width (mm, in-plane) of the box around the liver hilum where residual motion is measured
RESIDUAL_HALF_WIDTH_MM = 75.0


def residual_motion(data: np.ndarray, grid: Grid, ref: int, centre_mm: tuple[float, float, float]) -> float | None:
    """Largest translation (mm) that would still align a motion-corrected frame with the reference inside a box
    around `centre_mm` (the portal vein at the liver hilum): the liver can move otherwise than the whole body that
    the correction aligned (breathing moves it more than the spine). Only translations the non-enhancing anatomy in
    the box confirms count (`confirmed`). None if the box is too small to register.
    """
    spacing = np.asarray(grid.spacing, float)
    c = np.round(grid.patient_to_index(np.asarray(centre_mm, float))).astype(int)
    half = np.ceil(RESIDUAL_HALF_WIDTH_MM / spacing[1:]).astype(int)
    j0, j1 = max(c[1] - half[0], 0), min(c[1] + half[0] + 1, grid.shape[1])
    i0, i1 = max(c[2] - half[1], 0), min(c[2] + half[1] + 1, grid.shape[2])
    if (j1 - j0) * spacing[1] < 40 or (i1 - i0) * spacing[2] < 40 or grid.shape[0] * spacing[0] < 20:
        return None
    box = Grid(origin=grid.index_to_patient(np.array([0.0, j0, i0])), row_dir=grid.row_dir, col_dir=grid.col_dir,
               normal=grid.normal, spacing=grid.spacing, shape=(grid.shape[0], j1 - j0, i1 - i0))
    sub = np.s_[:, j0:j1, i0:i1]
    fixed = _prepared(data[ref][sub], box)
    fixed_stable = _prepared(data[ref][sub], box, STABLE_HU)
    worst = 0.0
    for t in range(data.shape[0]):
        if t == ref:
            continue
        vec = _refine(fixed, _prepared(data[t][sub], box), np.zeros(3))
        size = float(np.linalg.norm(vec))
        # a shift that only contrast asks for (the non-enhancing anatomy does not confirm it) is not motion
        if size > worst and confirmed(fixed_stable, data[t][sub], box, vec):
            worst = size
    logger.info("residual motion around the liver hilum after correction: up to %.2f mm", worst)
    return worst
