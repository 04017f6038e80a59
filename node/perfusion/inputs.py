"""Input curves: aorta (arterial input), portal vein (portal input) and spleen (phase split).

Each input ROI comes, in order of precedence, from the configuration ([analysis.perfusion.aorta] etc.: a sphere in
patient mm), from an incoming RTSTRUCT ROI with a recognised name, or from automatic detection. Automatic
detection works on two per-voxel features of the motion-corrected series, lightly smoothed: peak enhancement
over the first frame (PE) and the time of that peak (TTP):

* aorta: among bright components (PE >= half the 99.9th percentile of PE in the body), the one that peaks
  earliest (ties: brightest). The ROI is its core (PE >= 75 % of the component's 95th percentile, eroded).
* portal vein: among the remaining components with PE >= 40 % of the aortic peak, those that peak later than the
  aorta; the brightest (median PE) wins: after the aorta, the portal vein is the brightest late structure.
  A venous candidate peaking with the aorta is refused (an artery, not the portal vein).
* spleen: among components with PE >= 20 % of the aortic peak that peak after the aorta but before the portal
  vein and lie on the patient's left (+x, LPS) of the aorta, the largest (>= 20 mL); its eroded core is the ROI.

Every failure raises InputCurveError with what was missing: a wrong input curve would silently scale every map.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from node.imaging.geometry import Grid
from node.perfusion.errors import InputCurveError
from node.perfusion.settings import InputRoiOverride, PerfusionSettings

logger = logging.getLogger(__name__)

INPUT_NAMES = ("aorta", "portal_vein", "spleen")
#: RTSTRUCT ROI names (normalised: lower case, letters and digits only) taken as input ROIs.
ROI_SYNONYMS = {
    "aorta": ("aorta", "ao", "aortaabdominalis", "abdominalaorta", "descendingaorta", "aortadesc", "aortaabd"),
    "portal_vein": ("portalvein", "pv", "vportae", "venaportae", "vportal", "portal", "vp", "pfortader"),
    "spleen": ("spleen", "lien", "milz", "splen", "rate"),
}
_LIGHT_SIGMA_MM = 1.5
_IN_PLANE = np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool)  # thick slices: erode within the slice only
_MIN_SPLEEN_ML = 20.0
_MIN_AORTA_ML = 2.0  # a few cm of aorta: far more than any speck of noise or misregistration
_MIN_VESSEL_ML = 0.5
_MIN_AORTA_PEAK_HU = 50.0
_BONE_HU = 250.0  # unenhanced blood and soft tissue stay far below; cortical bone far above
_BLOOD_BASELINE_HU = (-30.0, 150.0)  # plausible pre-contrast HU of an input ROI (blood, spleen)


def normalise_name(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def match_input_rois(names: list[str]) -> dict[str, str]:
    """{input: ROI name} for RTSTRUCT ROI names that denote an input (first match wins)."""
    found: dict[str, str] = {}
    for name in names:
        key = normalise_name(name)
        for inp, synonyms in ROI_SYNONYMS.items():
            if inp not in found and key in synonyms:
                found[inp] = name
    return found


@dataclass
class InputRoi:
    """One input ROI on the working grid with its HU curve."""

    name: str
    source: str  # "config", "rtstruct:<ROI name>" or "automatic"
    mask: np.ndarray  # bool (Z, Y, X)
    centre_mm: tuple[float, float, float]
    volume_ml: float
    hu: np.ndarray  # (T,) mean HU per frame (motion corrected, unsmoothed)
    enhancement: np.ndarray = field(default_factory=lambda: np.zeros(0))  # set once the baseline is known



def sphere_mask(grid: Grid, centre_mm: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Voxels of `grid` whose centre lies within `radius_mm` of `centre_mm`."""
    k, j, i = np.indices(grid.shape, sparse=True)
    c = grid.patient_to_index(np.asarray(centre_mm))
    d2 = (((k - c[0]) * grid.spacing[0]) ** 2 + ((j - c[1]) * grid.spacing[1]) ** 2
          + ((i - c[2]) * grid.spacing[2]) ** 2)
    return d2 <= radius_mm ** 2


def _centre(mask: np.ndarray, grid: Grid) -> tuple[float, float, float]:
    idx = np.argwhere(mask).mean(axis=0)
    x, y, z = (float(v) for v in grid.index_to_patient(idx))
    return (x, y, z)


def roi_curve(data: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean value per frame of (T, Z, Y, X) `data` over `mask`."""
    return data[:, mask].mean(axis=1).astype(np.float64)


def make_roi(name: str, source: str, mask: np.ndarray, data: np.ndarray, grid: Grid) -> InputRoi:
    if not mask.any():
        raise InputCurveError(f"{name.replace('_', ' ')} ROI from {source} holds no voxel of the perfusion series "
                              "(outside the scanned range?)")
    return InputRoi(name=name, source=source, mask=mask, centre_mm=_centre(mask, grid),
                    volume_ml=float(mask.sum()) * grid.voxel_volume_ml, hu=roi_curve(data, mask))


# ------------------------------------------------------------------ automatic detection
@dataclass
class _Features:
    pe: np.ndarray  # peak enhancement over frame 0 (HU)
    ttp: np.ndarray  # index of the peak frame
    body: np.ndarray


@dataclass
class SmoothedFrames:
    """Statistics of the lightly smoothed HU frames (LIGHT_SIGMA_MM), computed in one pass over the series and
    shared by input detection and the vessel mask (node.perfusion.preprocess.tissue_masks)."""

    first: np.ndarray  # smoothed first frame (HU)
    peak_enhancement: np.ndarray  # max over later frames of (smoothed frame - smoothed first frame)
    ttp: np.ndarray  # index of that frame
    peak_hu: np.ndarray  # max over all frames of the smoothed frame (HU)
    never_air: np.ndarray  # above -500 HU in every smoothed frame


LIGHT_SIGMA_MM = _LIGHT_SIGMA_MM


def smoothed_frames(data: np.ndarray, grid: Grid) -> SmoothedFrames:
    """One pass of the light Gaussian over every frame of HU `data` (T, Z, Y, X)."""
    sig = tuple(_LIGHT_SIGMA_MM / s for s in grid.spacing)
    first = ndimage.gaussian_filter(data[0], sig)
    pe = np.full(first.shape, -np.inf, dtype=np.float32)
    ttp = np.zeros(first.shape, dtype=np.int16)
    peak = first.copy()
    never_air = first > -500
    frame = np.empty_like(first)
    for t in range(1, data.shape[0]):
        ndimage.gaussian_filter(data[t], sig, output=frame)
        never_air &= frame > -500
        np.maximum(peak, frame, out=peak)
        e = frame - first
        later = e > pe
        pe[later] = e[later]
        ttp[later] = t
    return SmoothedFrames(first, pe, ttp, peak, never_air)


def _features(data: np.ndarray, grid: Grid, in_view: np.ndarray | None,
              smoothed: SmoothedFrames | None = None) -> _Features:
    sm = smoothed_frames(data, grid) if smoothed is None else smoothed
    first, pe, ttp = sm.first, sm.peak_enhancement, sm.ttp
    # Not air or lung in any frame (moving body edges and padding drop out) and not near bone: a bone edge
    # that moves by a voxel changes by hundreds of HU and would look like the brightest enhancement.
    body = sm.never_air & ~ndimage.binary_dilation(first > _BONE_HU, iterations=2)
    # Inputs are blood or spleen: unenhanced they read like soft tissue. Fat and air edges, whose small shifts
    # change HU a lot, drop out here (with a margin from air).
    body = ndimage.binary_erosion(body, structure=_IN_PLANE, iterations=2)
    body &= (first >= _BLOOD_BASELINE_HU[0]) & (first <= _BLOOD_BASELINE_HU[1])
    if in_view is not None:
        body &= in_view  # voxels a moved frame left empty have meaningless curves
    return _Features(pe=pe, ttp=ttp, body=body)


@dataclass
class _Component:
    mask: np.ndarray
    volume_ml: float
    median_pe: float
    median_ttp: float
    centre_mm: tuple[float, float, float]


def _components(candidate: np.ndarray, f: _Features, grid: Grid, min_ml: float) -> list[_Component]:
    labels, n = ndimage.label(candidate)
    if n == 0:
        return []
    counts = np.bincount(labels.ravel(), minlength=n + 1)
    keep = [lab for lab in range(1, n + 1) if counts[lab] * grid.voxel_volume_ml >= min_ml]
    out = []
    for lab in keep:
        m = labels == lab
        out.append(_Component(m, float(counts[lab]) * grid.voxel_volume_ml, float(np.median(f.pe[m])),
                              float(np.median(f.ttp[m])), _centre(m, grid)))
    return out


def _core(mask: np.ndarray, f: _Features, fraction: float, erode: int) -> np.ndarray:
    """Bright, eroded centre of a component: partial-volume edges never enter an input curve."""
    core = mask & (f.pe >= fraction * np.percentile(f.pe[mask], 95))
    for _ in range(erode):
        # In-plane erosion only: thick slices would erase thin vessels along z.
        eroded = ndimage.binary_erosion(core, structure=_IN_PLANE)
        if eroded.sum() < 8:
            break
        core = eroded
    return core


def detect_aorta(f: _Features, grid: Grid) -> np.ndarray:
    body_pe = f.pe[f.body]
    if body_pe.size < 100:
        raise InputCurveError("no arterial enhancement can be searched: the series holds almost no blood or soft "
                              "tissue (wrong series, or a field of view outside the body?)")
    p999 = float(np.percentile(body_pe, 99.9))
    if p999 < _MIN_AORTA_PEAK_HU:
        raise InputCurveError(f"no arterial enhancement: the brightest voxels gain only {p999:.0f} HU (was "
                              "contrast injected, and does the scan cover the bolus?)")
    comps = _components(f.body & (f.pe >= 0.5 * p999), f, grid, _MIN_AORTA_ML)
    if not comps:
        raise InputCurveError("aorta not found: no enhancing vessel in the perfusion series")
    aorta = min(comps, key=lambda c: (c.median_ttp, -c.median_pe))
    return _core(aorta.mask, f, 0.75, 1)


def detect_portal_vein(f: _Features, grid: Grid, aorta: np.ndarray) -> np.ndarray:
    a_pe = float(np.median(f.pe[aorta]))
    a_ttp = float(np.median(f.ttp[aorta]))
    exclude = ndimage.binary_dilation(aorta, iterations=2)
    comps = _components(f.body & ~exclude & (f.pe >= 0.4 * a_pe), f, grid, _MIN_VESSEL_ML)
    late = [c for c in comps if c.median_ttp > a_ttp]
    if not late:
        raise InputCurveError("portal vein not found: no bright vessel peaks after the aorta (portal phase not "
                              "covered, or set [analysis.perfusion.portal_vein] in config.toml)")
    pv = max(late, key=lambda c: (c.median_pe, c.volume_ml))
    return _core(pv.mask, f, 0.75, 1)


def detect_spleen(f: _Features, grid: Grid, aorta: np.ndarray, portal: np.ndarray) -> np.ndarray:
    a_pe = float(np.median(f.pe[aorta]))
    a_ttp = float(np.median(f.ttp[aorta]))
    p_ttp = float(np.median(f.ttp[portal]))
    a_x = _centre(aorta, grid)[0]
    exclude = ndimage.binary_dilation(aorta | portal, iterations=2)
    candidate = f.body & ~exclude & (f.pe >= 0.2 * a_pe) & (f.ttp > a_ttp - 0.5) & (f.ttp <= p_ttp)
    candidate = ndimage.binary_opening(candidate)  # cut thin bridges to vessels and noise specks
    comps = [c for c in _components(candidate, f, grid, _MIN_SPLEEN_ML) if c.centre_mm[0] > a_x]
    if not comps:
        raise InputCurveError(f"spleen not found: no large organ left of the aorta enhancing between the aortic "
                              f"and portal peaks (>= {_MIN_SPLEEN_ML:.0f} mL in the scanned range; set "
                              "[analysis.perfusion.spleen] in config.toml or send an RTSTRUCT ROI 'Spleen')")
    spleen = max(comps, key=lambda c: c.volume_ml)
    core = spleen.mask
    for _ in range(2):
        eroded = ndimage.binary_erosion(core)
        if eroded.sum() < 8:
            break
        core = eroded
    return core


# ------------------------------------------------------------------ orchestration
def find_inputs(data: np.ndarray, grid: Grid, analysis: PerfusionSettings,
                rt_masks: dict[str, np.ndarray] | None = None, in_view: np.ndarray | None = None,
                smoothed: SmoothedFrames | None = None) -> dict[str, InputRoi]:
    """Aorta, portal vein and spleen ROIs with their HU curves from motion-corrected HU `data` (T, Z, Y, X).

    `rt_masks` maps RTSTRUCT ROI names to boolean masks on the working grid; `in_view` marks voxels that
    stayed in the field of view of every frame (automatic ROIs stay inside it).
    """
    overrides: dict[str, InputRoiOverride | None] = {
        "aorta": analysis.aorta, "portal_vein": analysis.portal_vein, "spleen": analysis.spleen}
    rt_masks = rt_masks or {}
    rt_match = match_input_rois(list(rt_masks))
    rois: dict[str, InputRoi] = {}
    for name in INPUT_NAMES:
        ov = overrides[name]
        if ov is not None:
            rois[name] = make_roi(name, "config", sphere_mask(grid, ov.center_mm, ov.radius_mm), data, grid)
        elif name in rt_match:
            rois[name] = make_roi(name, f"rtstruct:{rt_match[name]}", rt_masks[rt_match[name]], data, grid)
    if len(rois) < len(INPUT_NAMES):
        f = _features(data, grid, in_view, smoothed)
        if "aorta" not in rois:
            rois["aorta"] = make_roi("aorta", "automatic", detect_aorta(f, grid), data, grid)
        if "portal_vein" not in rois:
            rois["portal_vein"] = make_roi("portal_vein", "automatic",
                                           detect_portal_vein(f, grid, rois["aorta"].mask), data, grid)
        if "spleen" not in rois:
            rois["spleen"] = make_roi("spleen", "automatic",
                                      detect_spleen(f, grid, rois["aorta"].mask, rois["portal_vein"].mask),
                                      data, grid)
    for roi in rois.values():
        logger.info("input %s: %s, centre %s mm, %.1f mL", roi.name, roi.source,
                    [round(v, 1) for v in roi.centre_mm], roi.volume_ml)
    return rois


def set_enhancement(rois: dict[str, InputRoi], n_base: int) -> None:
    """Enhancement curves of the input ROIs once the number of baseline frames is known."""
    for roi in rois.values():
        roi.enhancement = roi.hu - roi.hu[:n_base].mean()


def check_inputs(rois: dict[str, InputRoi], times: np.ndarray) -> None:
    """Refuse implausible input curves (a wrong curve would scale or split every map wrongly)."""
    for roi in rois.values():
        base = float(roi.hu[0])
        if not _BLOOD_BASELINE_HU[0] <= base <= _BLOOD_BASELINE_HU[1]:
            raise InputCurveError(f"{roi.name.replace('_', ' ')} ROI ({roi.source}, centre "
                                  f"{[round(v) for v in roi.centre_mm]} mm) reads {base:.0f} HU before contrast: "
                                  "not blood or spleen (bone, air or fat?)")
    a, p, s = (rois[n].enhancement for n in INPUT_NAMES)
    if a.max() < _MIN_AORTA_PEAK_HU:
        raise InputCurveError(f"aortic curve peaks at only {a.max():.0f} HU ({rois['aorta'].source} ROI): no "
                              "usable arterial input")
    if p.max() <= 0.1 * a.max():
        raise InputCurveError(f"portal vein curve barely enhances ({p.max():.0f} HU vs aorta {a.max():.0f} HU; "
                              f"{rois['portal_vein'].source} ROI)")
    ta, tp, ts = (float(times[int(np.argmax(c))]) for c in (a, p, s))
    if tp <= ta:
        raise InputCurveError(f"portal vein curve peaks at {tp:.1f} s, not after the aorta ({ta:.1f} s): the "
                              f"{rois['portal_vein'].source} portal vein ROI is not on the portal vein")
    if not (times[0] < ts < times[-1]):
        raise InputCurveError(f"splenic curve peaks at the {'first' if ts <= times[0] else 'last'} time point "
                              f"({ts:.1f} s): the arterial/portal phase split cannot be placed")


def estimate_liver(enh: np.ndarray, analysed: np.ndarray, grid: Grid, rois: dict[str, InputRoi],
                   times: np.ndarray) -> np.ndarray:
    """Rough liver mask for display and delay estimation when no RTSTRUCT liver is given.

    Analysed tissue on the patient's right of the aorta (-x, LPS) whose enhancement after the portal peak
    averages at least 10 % of the portal peak (portal-fed parenchyma; unenhanced muscle and hypovascular
    lesions drop out), largest connected component after an opening. Not used for any map value.
    """
    portal = rois["portal_vein"].enhancement
    late = times >= times[int(np.argmax(portal))]
    late_mean = enh[late].mean(axis=0)
    x_of_column = grid.index_to_patient(np.array([[0, 0, i] for i in range(grid.shape[2])], float))[:, 0]
    right = np.broadcast_to((x_of_column < rois["aorta"].centre_mm[0])[None, None, :], analysed.shape)
    if abs(grid.row_dir[0]) < 0.9:  # not an axial series: the side test by column does not apply
        right = np.ones_like(analysed)
    cand = ndimage.binary_opening(analysed & right & (late_mean >= 0.1 * float(portal.max())))
    labels, n = ndimage.label(cand)
    if n == 0:
        return cand
    counts = np.bincount(labels.ravel())
    counts[0] = 0
    return labels == int(np.argmax(counts))
