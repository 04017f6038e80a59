"""Rigid CT-to-CT registration (SimpleITK, Mattes mutual information, multi-resolution), the one place for it.

Used to carry a SPECT from its SPECT/CT frame of reference onto another CT: the SPECT/CT's CT (moving) is
registered to the other CT (fixed): the planning CT (GSA targets) or the perfusion CT (MAA uptake next to the
perfusion maps, with the thin-slab refinement :func:`refine_slab`). The result maps fixed-CT patient coordinates
to SPECT/CT patient coordinates (ITK's fixed-to-moving convention), which is what resampling the SPECT onto the
fixed grid needs.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from node.errors import itk_reason
from node.imaging.errors import RegistrationError

logger = logging.getLogger(__name__)

__all__ = ["RegistrationError", "RegistrationRecord", "RigidRegistration", "register_rigid", "refine_slab",
           "rigid_matrix", "RefinementRecord"]

#: Voxel size (mm) the CTs are binned to before registering: a rigid CT-CT fit over a whole abdomen is
#: sub-millimetre on 3 mm voxels (tested on the phantom), and binning a 512^2 CT makes it ~10x cheaper.
WORKING_SPACING_MM = 3.0
#: HU above which a voxel belongs to the patient (or couch) rather than air.
BODY_HU = -400.0
#: Below this Dice of the two body outlines (where both CTs have data) the registration is refused.
MIN_BODY_DICE = 0.80
#: A larger rotation between two supine scans of one patient means the optimiser went astray.
MAX_ROTATION_DEG = 15.0
#: The planning CT's body must be covered this much by the SPECT/CT's CT for the metric to mean anything.
MIN_BODY_OVERLAP = 0.20
#: Step (mm) of the z-shift search that initialises the registration (the coarsest level then refines it).
Z_SEARCH_STEP_MM = 10.0
#: A CT narrower than this many working voxels along any axis cannot be binned 4x for the initial search
#: (SimpleITK refuses: "InputImage is too small").
MIN_WORKING_VOXELS = 4
#: Inside the body, a CT whose values span less than this (HU) holds no structure for mutual information.
MIN_CONTRAST_HU = 1.0
_AXES = ("from side to side (x)", "from front to back (y)", "along the body (z)")


@dataclass(frozen=True)
class RegistrationRecord:
    """A rigid CT-CT registration and the figures that judge it, as the case record keeps it."""

    method: str
    final_metric_mattes_mi: float
    iterations: int
    stop_condition: str
    body_dice: float
    body_overlap: float
    matrix_4x4: list[list[float]]
    matrix_direction: str
    translation_mm: list[float]
    rotation_deg: float
    euler_xyz_deg: list[float]


def rigid_matrix(transform: sitk.Transform) -> np.ndarray:
    """4x4 homogeneous matrix of a rigid transform (fixed patient mm -> moving patient mm)."""
    e = sitk.Euler3DTransform(transform)
    r = np.asarray(e.GetMatrix(), dtype=float).reshape(3, 3)
    c = np.asarray(e.GetCenter(), dtype=float)
    m = np.eye(4)
    m[:3, :3] = r
    m[:3, 3] = c + np.asarray(e.GetTranslation(), dtype=float) - r @ c
    return m


@dataclass(frozen=True)
class RigidRegistration:
    """A rigid transform fixed (planning CT) -> moving (SPECT/CT) with the figures that judge it."""

    transform: sitk.Euler3DTransform
    final_metric: float  # Mattes mutual information at the last level (negative; more negative = better)
    iterations: int  # optimiser iterations summed over the resolution levels
    stop_condition: str
    body_dice: float  # body outlines after registration, where both CTs have data
    body_overlap: float  # fraction of the fixed body inside the moving CT's field of view

    def matrix(self) -> np.ndarray:
        """4x4 homogeneous matrix mapping fixed (planning CT) patient mm to moving (SPECT/CT) patient mm."""
        return rigid_matrix(self.transform)

    def translation_mm(self) -> np.ndarray:
        """Translation part of :meth:`matrix` (mm)."""
        return self.matrix()[:3, 3]

    def rotation_deg(self) -> float:
        """Total rotation angle (degrees) of the transform."""
        r = self.matrix()[:3, :3]
        return math.degrees(math.acos(max(-1.0, min(1.0, (np.trace(r) - 1.0) / 2.0))))

    def euler_deg(self) -> tuple[float, float, float]:
        """ITK Euler angles about x, y, z (degrees)."""
        t = self.transform
        return (math.degrees(t.GetAngleX()), math.degrees(t.GetAngleY()), math.degrees(t.GetAngleZ()))

    def summary(self) -> RegistrationRecord:
        """The figures for the case record."""
        m = self.matrix()
        return RegistrationRecord(
            method="rigid (6 DOF), Mattes mutual information, 3-level pyramid, regular-step gradient descent",
            final_metric_mattes_mi=round(self.final_metric, 5),
            iterations=self.iterations,
            stop_condition=self.stop_condition,
            body_dice=round(self.body_dice, 4),
            body_overlap=round(self.body_overlap, 4),
            matrix_4x4=[[round(float(v), 6) for v in row] for row in m],
            matrix_direction="maps planning-CT patient coordinates (DICOM LPS, mm) to SPECT/CT patient "
                             "coordinates; its inverse carries the SPECT onto the planning CT",
            translation_mm=[round(float(v), 3) for v in m[:3, 3]],
            rotation_deg=round(self.rotation_deg(), 3),
            euler_xyz_deg=[round(v, 3) for v in self.euler_deg()],
        )


def _working(image: sitk.Image) -> sitk.Image:
    """Bin the CT to about WORKING_SPACING_MM (averaging, so no aliasing) and clamp HU to a useful range."""
    factors = [max(1, int(round(WORKING_SPACING_MM / s))) for s in image.GetSpacing()]
    small = sitk.BinShrink(image, factors) if max(factors) > 1 else image
    return sitk.Clamp(sitk.Cast(small, sitk.sitkFloat32), sitk.sitkFloat32, -1000.0, 2000.0)


def _check_size(image: sitk.Image, name: str) -> None:
    """Refuse, in words, a CT too small along an axis to be binned for the registration (SimpleITK would say
    "InputImage is too small!")."""
    for axis, (n, step) in enumerate(zip(image.GetSize(), image.GetSpacing(), strict=True)):
        factor = max(1, int(round(WORKING_SPACING_MM / step)))
        if n // factor < MIN_WORKING_VOXELS:
            count = f"{n} slice{'s' if n != 1 else ''}" if axis == 2 else f"{n} pixels"
            raise RegistrationError(f"the {name} is too small to register: {count} of {step:.3g} mm "
                                    f"({n * step:.0f} mm) {_AXES[axis]}; at least "
                                    f"{MIN_WORKING_VOXELS * factor * step:.0f} mm is needed")


def _check_contrast(working: sitk.Image, name: str) -> None:
    """Refuse a CT of one value everywhere (mutual information has nothing to work on; SimpleITK's failure would
    read as "does not overlap")."""
    values = sitk.GetArrayViewFromImage(working)
    low, high = float(values.min()), float(values.max())
    if high - low < MIN_CONTRAST_HU and high > BODY_HU:  # all air: "no patient body" (below) says it better
        raise RegistrationError(f"the {name} holds the same value everywhere ({low:.0f} HU): no anatomy to "
                                "register on (a blank or synthetic image?)")


def _coarse(image: sitk.Image) -> sitk.Image:
    """The working image binned 4x (block averages, smooth enough): the resolution of the initial search."""
    return sitk.BinShrink(image, [4, 4, 4])


def _body(image: sitk.Image) -> sitk.Image:
    """Patient outline: HU above BODY_HU, largest connected component (drops noise and small objects)."""
    mask = sitk.BinaryThreshold(image, BODY_HU, 1e9, 1, 0)
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(labels == 1, sitk.sitkUInt8)


def _centroid(mask: sitk.Image) -> np.ndarray:
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    if not stats.HasLabel(1):
        raise RegistrationError("no patient body found in a CT (nothing above -400 HU)")
    return np.asarray(stats.GetCentroid(1), dtype=float)


def _z_extent(image: sitk.Image) -> tuple[float, float]:
    """Patient z (superior) range covered by the image's corners."""
    size = image.GetSize()
    corners = [image.TransformIndexToPhysicalPoint((i, j, k)) for i in (0, size[0] - 1)
               for j in (0, size[1] - 1) for k in (0, size[2] - 1)]
    zs = [p[2] for p in corners]
    return min(zs), max(zs)


def _candidate_translations(fixed: sitk.Image, moving: sitk.Image, fixed_body: sitk.Image,
                            moving_body: sitk.Image) -> list[np.ndarray]:
    """Starting translations: body centres of mass in x/y, and a scan of z shifts every Z_SEARCH_STEP_MM.

    Centre-of-mass alignment is right in x/y (both scans hold the whole body cross-section), but not in z, where
    the two scans usually cover different lengths of the patient; so every z shift that makes the scans
    overlap by at least half the shorter one is a candidate, and the metric chooses.
    """
    base = _centroid(moving_body) - _centroid(fixed_body)
    (f_lo, f_hi), (m_lo, m_hi) = _z_extent(fixed), _z_extent(moving)
    need = 0.5 * min(f_hi - f_lo, m_hi - m_lo)
    # moving z = fixed z + dz; overlap of [f_lo + dz, f_hi + dz] with [m_lo, m_hi] must be >= need
    lo, hi = m_lo - f_hi + need, m_hi - f_lo - need
    shifts = np.arange(lo, hi + 1e-6, Z_SEARCH_STEP_MM) if hi > lo else np.array([base[2]])
    out = []
    for dz in np.unique(np.append(shifts, base[2])):
        cand = base.copy()
        cand[2] = dz
        out.append(cand)
    return out


def register_rigid(fixed: sitk.Image, moving: sitk.Image, *, seed: int = 20240601, fixed_name: str = "planning CT",
                   moving_name: str = "SPECT/CT's CT") -> RigidRegistration:
    """Register `moving` (SPECT/CT's CT) to `fixed` (planning CT); both in HU with patient geometry.

    Initialisation: no rotation; x/y translation from the body centres of mass; z translation the best (by
    the metric on 12 mm images) of a scan of shifts every Z_SEARCH_STEP_MM. Then a 3-level pyramid (binned to
    about 12, 6, 3 mm) of Mattes mutual information, sampled at random (fixed seed: reproducible) inside the
    dilated planning-CT body, regular-step gradient descent.
    Raises :class:`RegistrationError` when a CT cannot be registered (too small, no structure: said in words,
    naming it as `fixed_name` / `moving_name`), SimpleITK fails or the result fails the plausibility checks.
    """
    _check_size(fixed, fixed_name)
    _check_size(moving, moving_name)
    f, m = _working(fixed), _working(moving)
    _check_contrast(f, fixed_name)
    _check_contrast(m, moving_name)
    f_body, m_body = _body(f), _body(m)
    sample_mask = sitk.BinaryDilate(f_body, [3, 3, 3])  # body plus its edge: the outline carries information
    centre = tuple(float(v) for v in _centroid(f_body))
    iterations = [0]

    def method() -> sitk.ImageRegistrationMethod:
        reg = sitk.ImageRegistrationMethod()
        reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(0.25, seed)
        reg.SetMetricFixedMask(sample_mask)
        reg.SetInterpolator(sitk.sitkLinear)
        # 2 mm first steps, shortened by 0.6 at each reversal down to 5 um: converges in ~100 iterations overall
        reg.SetOptimizerAsRegularStepGradientDescent(learningRate=2.0, minStep=0.005, numberOfIterations=200,
                                                     relaxationFactor=0.6, gradientMagnitudeTolerance=1e-8)
        reg.SetOptimizerScalesFromPhysicalShift()
        return reg

    def initial(translation: np.ndarray) -> sitk.Euler3DTransform:
        t = sitk.Euler3DTransform()
        t.SetCenter(centre)
        t.SetTranslation(tuple(float(v) for v in translation))
        return t

    try:
        coarse_f = _coarse(f)
        coarse_m = _coarse(m)
        scored = []
        for cand in _candidate_translations(f, m, f_body, m_body):
            probe = method()
            probe.SetInitialTransform(initial(cand), inPlace=False)
            try:
                scored.append((probe.MetricEvaluate(coarse_f, coarse_m), tuple(cand)))
            except RuntimeError:
                continue  # this start puts too few samples inside the moving image
        if not scored:
            raise RegistrationError(f"the {moving_name} does not overlap the {fixed_name} from any starting position")
        best = np.asarray(min(scored)[1])
        reg = method()
        reg.SetInitialTransform(initial(best), inPlace=False)
        reg.SetShrinkFactorsPerLevel([4, 2, 1])
        # Fewer samples where voxels are many: the fine level refines by a fraction of a voxel and a few
        # percent of the body's voxels are tens of thousands of samples, plenty for 6 parameters.
        reg.SetMetricSamplingPercentagePerLevel([0.25, 0.10, 0.08], seed)
        reg.SetSmoothingSigmasPerLevel([4.0, 2.0, 0.0])
        reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
        reg.AddCommand(sitk.sitkIterationEvent, lambda: iterations.__setitem__(0, iterations[0] + 1))
        result = reg.Execute(f, m)
    except RuntimeError as exc:  # ITK exceptions: e.g. all samples map outside the moving image
        raise RegistrationError(f"rigid registration of the {moving_name} to the {fixed_name} failed: "
                                f"{itk_reason(exc)}") from None
    transform = sitk.Euler3DTransform(result.GetNthTransform(0).Downcast()
                                      if isinstance(result, sitk.CompositeTransform) else result.Downcast())
    dice, overlap = _body_agreement(f_body, m_body, transform)
    out = RigidRegistration(transform=transform, final_metric=float(reg.GetMetricValue()),
                            iterations=iterations[0], stop_condition=reg.GetOptimizerStopConditionDescription(),
                            body_dice=dice, body_overlap=overlap)
    logger.info("rigid registration: metric %.4f after %d iterations, body Dice %.3f, translation %s mm, "
                "rotation %.2f deg", out.final_metric, out.iterations, dice,
                np.round(out.translation_mm(), 2).tolist(), out.rotation_deg())
    _check_plausible(out)
    return out


def _body_agreement(f_body: sitk.Image, m_body: sitk.Image, transform: sitk.Transform) -> tuple[float, float]:
    """Dice of the body outlines where the moving CT has data, and the fraction of the fixed body it covers."""
    moved = sitk.GetArrayFromImage(sitk.Resample(m_body, f_body, transform, sitk.sitkNearestNeighbor, 0)) > 0
    ones = sitk.Image(m_body.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(m_body)
    inside = sitk.GetArrayFromImage(sitk.Resample(ones, f_body, transform, sitk.sitkNearestNeighbor, 0)) > 0
    fixed = sitk.GetArrayFromImage(f_body) > 0
    overlap = float((fixed & inside).sum() / max(1, fixed.sum()))
    a, b = fixed & inside, moved & inside
    dice = float(2 * (a & b).sum() / max(1, a.sum() + b.sum()))
    return dice, overlap


def _check_plausible(reg: RigidRegistration) -> None:
    if reg.body_overlap < MIN_BODY_OVERLAP:
        raise RegistrationError(f"the SPECT/CT covers only {reg.body_overlap:.0%} of the planning CT's body: too "
                                "little overlap to register (wrong patient or wrong body region?)")
    if reg.body_dice < MIN_BODY_DICE:
        raise RegistrationError(f"registration implausible: body outlines agree with Dice {reg.body_dice:.2f} "
                                f"(< {MIN_BODY_DICE}); check patient position or register manually")
    if reg.rotation_deg() > MAX_ROTATION_DEG:
        raise RegistrationError(f"registration implausible: rotation {reg.rotation_deg():.1f} degrees "
                                f"(> {MAX_ROTATION_DEG}) between two supine scans")


# ------------------------------------------------------------------------------------ thin-slab refinement
# A perfusion CT covers only 8-15 cm, and in that slab the body outline, spine and aorta hardly change along z;
# the registration's MI histogram (-1000..2000 HU in 32 bins) does not see the 10-30 HU contrasts of liver,
# spleen and vessels that fix the z position, so it can settle 1-2 cm off in z (measured on the phantom: 19 mm).
# refine_slab therefore refines it on soft-tissue windowed images: rigid Mattes-MI optimisations on 4 mm images
# start from the registration shifted by each of REFINE_Z_STARTS_MM along z, the best is polished on 3 mm images
# and kept if it moves the registration by at most MAX_REFINE_SHIFT_MM (phantom: within 2.5 mm of the truth).

#: Soft-tissue window (HU) of the thin-slab refinement.
SOFT_WINDOW_HU = (-150.0, 250.0)
#: z shifts (mm, moving side) from which the refinement starts.
REFINE_Z_STARTS_MM = (-24.0, -16.0, -8.0, 0.0, 8.0, 16.0, 24.0)
#: The refinement may move the registration at most this far (mm).
MAX_REFINE_SHIFT_MM = 40.0


def _soft(image: sitk.Image, spacing_mm: float) -> sitk.Image:
    """The CT smoothed (sigma = spacing/2), resampled to isotropic `spacing_mm`, clamped to SOFT_WINDOW_HU."""
    smoothed = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), spacing_mm / 2.0)
    size = [max(1, int(np.ceil(n * s / spacing_mm))) for n, s in zip(image.GetSize(), image.GetSpacing(), strict=True)]
    grid = sitk.Image(size, sitk.sitkFloat32)
    grid.SetSpacing([spacing_mm] * 3)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(image.GetOrigin())
    small = sitk.Resample(smoothed, grid, sitk.Transform(), sitk.sitkLinear, float(SOFT_WINDOW_HU[0]))
    return sitk.Clamp(small, sitk.sitkFloat32, *SOFT_WINDOW_HU)


def _run(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image, start: sitk.Transform, sampling: float,
         step_mm: float, iterations: int) -> tuple[float, sitk.Euler3DTransform] | None:
    """One rigid Mattes-MI optimisation from `start` (None when SimpleITK gives up)."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(sampling, 20240601)
    reg.SetMetricFixedMask(sitk.Resample(mask, fixed, sitk.Transform(), sitk.sitkNearestNeighbor, 0))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=step_mm, minStep=0.02, numberOfIterations=iterations,
                                                 relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(start, inPlace=False)
    try:
        result = reg.Execute(fixed, moving)
    except RuntimeError:
        return None  # this start leaves too few samples inside the moving image
    if isinstance(result, sitk.CompositeTransform):
        result = result.GetNthTransform(0)
    return float(reg.GetMetricValue()), sitk.Euler3DTransform(result.Downcast())


@dataclass(frozen=True)
class RefinementRecord:
    """What the thin-slab refinement did, for the case record."""

    method: str
    applied: bool
    note: str = ""
    best_start_z_mm: float | None = None
    metric: float | None = None
    shift_at_fixed_centre_mm: float | None = None


def refine_slab(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform
                ) -> tuple[sitk.Transform, RefinementRecord]:
    """Multi-start soft-tissue refinement of a rigid CT-CT registration of a thin slab (see above).

    Every start is optimised on 4 mm images; the best is polished on 3 mm images. Returns the transform to use
    (`initial` when no refinement is plausible) and what was done.
    """
    body = sitk.BinaryThreshold(fixed, -400.0, 1e9, 1, 0)
    coarse_f, coarse_m = _soft(fixed, 4.0), _soft(moving, 4.0)
    mask = sitk.BinaryDilate(sitk.Resample(body, coarse_f, sitk.Transform(), sitk.sitkNearestNeighbor, 0), [1, 1, 1])
    runs = []
    for dz in REFINE_Z_STARTS_MM:
        start = sitk.Euler3DTransform(initial)
        start.SetTranslation(tuple(float(v) for v in np.asarray(start.GetTranslation(), dtype=float) + (0, 0, dz)))
        run = _run(coarse_f, coarse_m, mask, start, 0.1, 4.0, 60)
        if run is not None:
            runs.append((run[0], dz, run[1]))
    method = (f"multi-start rigid refinement, Mattes MI on {SOFT_WINDOW_HU[0]:g}..{SOFT_WINDOW_HU[1]:g} HU, "
              f"z starts {list(REFINE_Z_STARTS_MM)} mm (4 mm images), best polished on 3 mm")
    if not runs:
        return initial, RefinementRecord(method, False, "no refinement converged: the registration is used as it is")
    metric, dz, transform = min(runs, key=lambda r: r[0])
    polished = _run(_soft(fixed, 3.0), _soft(moving, 3.0), body, transform, 0.25, 1.0, 60)
    if polished is not None:
        metric, transform = polished
    mat, base = rigid_matrix(transform), rigid_matrix(initial)
    centre = np.append(np.asarray(fixed.TransformContinuousIndexToPhysicalPoint(
        [(n - 1) / 2.0 for n in fixed.GetSize()]), dtype=float), 1.0)
    shift = float(np.linalg.norm((mat @ centre - base @ centre)[:3]))
    angle = float(np.degrees(np.arccos(np.clip((np.trace(mat[:3, :3]) - 1.0) / 2.0, -1.0, 1.0))))
    if shift > MAX_REFINE_SHIFT_MM or angle > MAX_ROTATION_DEG:
        return initial, RefinementRecord(method, False, f"refinement implausible (moves {shift:.0f} mm, rotation "
                                                        f"{angle:.1f} deg): the registration is used as it is")
    return transform, RefinementRecord(method, True, best_start_z_mm=dz, metric=round(metric, 5),
                                       shift_at_fixed_centre_mm=round(shift, 2))
