"""Drawing one case of the phantom family: acquisition, inputs, anatomy and kinetics from a seed.

Ranges (the clinical range the node must hold over; README in this folder):

* CT: in-plane pixel 0.70-0.80 mm, slices 3-5 mm; image noise 10-25 HU (SD per voxel, white) or none;
* sampling: interval 1.5-4 s with +-15 % jitter per frame, 12-30 time points covering 40-55 s;
* aortic bolus: arrival 5-10 s after the first frame (at least 1.6 intervals), rise to peak 5-10 s, gamma shape
  2.5-4, peak 200-450 HU, recirculation to 25-45 % of the peak after 6-10 s;
* portal vein: splanchnic delay 3-6 s, dispersion (gamma, mean transit) 5-10 s;
* spleen: one compartment fed by the aorta, k1 0.08-0.15 /s, k2 0.2-0.4 /s;
* normal liver: ALP 8-20, PVP 50-100 mL/min/100 mL, distribution volume 0.20-0.35;
* lesions (1-3): radius 8-25 mm, hypervascular (ALP 40-90, PVP 5-20, DV 0.25-0.45) or hypovascular (ALP 5-25,
  PVP 10-40, DV 0.15-0.35), unenhanced 5-20 HU below the liver;
* delays: arterial and portal 0-3 s (continuous, so off the sampling grid) for the case, each lesion within
  +-0.5 s of it.
Anything can be fixed by keyword (tests pin the conditions they examine).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from node.phantom.family.kinetics import FINE_DT_S, InputParams, TissueParams

NOISE_REF_PIXEL_MM = 0.78


@dataclass(frozen=True)
class Organ:
    """An axial ellipse (prism along z) in body coordinates (LPS mm, in-plane centre of the field of view)."""

    centre_xy: tuple[float, float]
    semi_axes: tuple[float, float]

    def inside(self, x: np.ndarray, y: np.ndarray, margin: float = 0.0) -> np.ndarray:
        a, b = self.semi_axes[0] - margin, self.semi_axes[1] - margin
        return ((x - self.centre_xy[0]) / a) ** 2 + ((y - self.centre_xy[1]) / b) ** 2 <= 1.0


@dataclass(frozen=True)
class Layout:
    """In-plane anatomy of one field of view size (later entries win where they overlap)."""

    fov_mm: float
    body: Organ
    body_inner: Organ  # inside: soft tissue; between inner and body: subcutaneous fat
    spine: Organ
    spleen: Organ
    liver: Organ
    portal_vein: Organ
    aorta: Organ


LAYOUTS = {
    # a liver slab: enough liver for lesions up to 25 mm radius, the inputs and a spine, in a 200 mm field
    "compact": Layout(200.0, Organ((0, 0), (96, 82)), Organ((0, 0), (88, 74)), Organ((0, 60), (12, 12)),
                      Organ((62, 22), (20, 32)), Organ((-30, -4), (58, 62)), Organ((-2, 14), (6, 6)),
                      Organ((24, 38), (10, 10))),
    # a whole abdomen in a 400 mm field (512 x 512 at 0.78 mm): speed benchmarks
    "body": Layout(400.0, Organ((0, 0), (175, 130)), Organ((0, 0), (162, 117)), Organ((0, 95), (22, 22)),
                   Organ((105, 40), (38, 55)), Organ((-65, -10), (100, 90)), Organ((-15, 20), (8, 8)),
                   Organ((22, 62), (12, 12))),
}

BASELINE_HU = {"air": -1000.0, "fat": -100.0, "soft_tissue": 40.0, "bone": 700.0, "aorta": 40.0,
               "portal_vein": 40.0, "spleen": 48.0}


@dataclass(frozen=True)
class Lesion:
    name: str
    kind: str  # "hypervascular" or "hypovascular"
    centre_mm: tuple[float, float, float]  # body coordinates (z from the first slice)
    radius_mm: float
    baseline_hu: float
    kinetics: TissueParams


@dataclass(frozen=True)
class CaseSpec:
    """Everything needed to render a case deterministically."""

    seed: int
    layout: str
    pixel_mm: float
    rows: int
    slice_mm: float
    n_slices: int
    times_s: tuple[float, ...]
    noise_hu: float  # SD per voxel of this case's grid (0 = noiseless)
    inputs: InputParams
    liver: TissueParams
    liver_baseline_hu: float
    lesions: tuple[Lesion, ...]
    start_time: str = "101500"
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def noise_hu_at_078(self) -> float:
        """The noise expressed at a 0.78 mm pixel of the same slice thickness (SD scales with 1 / pixel size)."""
        return self.noise_hu * self.pixel_mm / NOISE_REF_PIXEL_MM

    @property
    def voxel_ml(self) -> float:
        return self.pixel_mm * self.pixel_mm * self.slice_mm / 1000.0

    def describe(self) -> str:
        dts = np.diff(self.times_s)
        return (f"seed {self.seed}: {self.rows}x{self.rows}x{self.n_slices} at {self.pixel_mm:.2f}x{self.pixel_mm:.2f}"
                f"x{self.slice_mm:g} mm, {len(self.times_s)} frames every {dts.mean():.2f} s "
                f"({dts.min():.2f}-{dts.max():.2f}), noise {self.noise_hu:.1f} HU, "
                f"lesions {', '.join(f'{les.kind[:5]} r{les.radius_mm:.0f}' for les in self.lesions) or 'none'}")


def _round_time(t: float) -> float:
    return round(round(t / FINE_DT_S) * FINE_DT_S, 6)


def _place(rng: np.random.Generator, layout: Layout, radius: float, slab_mm: float, slice_mm: float,
           placed: list[tuple[np.ndarray, float]]) -> np.ndarray | None:
    """A lesion centre inside the liver (whole sphere 4 mm inside it), clear of the portal vein and of the lesions
    already placed (4 mm), and a slice away from the slab's ends; None if there is no room."""
    liver, pv = layout.liver, layout.portal_vein
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    if slab_mm - 2 * (radius + slice_mm) < 0:
        return None
    for _ in range(400):
        c = np.array([rng.uniform(liver.centre_xy[0] - liver.semi_axes[0], liver.centre_xy[0] + liver.semi_axes[0]),
                      rng.uniform(liver.centre_xy[1] - liver.semi_axes[1], liver.centre_xy[1] + liver.semi_axes[1]),
                      rng.uniform(radius + slice_mm, slab_mm - radius - slice_mm)])
        ring_x = c[0] + (radius + 4.0) * np.cos(angles)
        ring_y = c[1] + (radius + 4.0) * np.sin(angles)
        if not np.all(liver.inside(ring_x, ring_y)):
            continue
        if np.hypot(c[0] - pv.centre_xy[0], c[1] - pv.centre_xy[1]) < radius + pv.semi_axes[0] + 4.0:
            continue
        if any(np.linalg.norm(c - p) < radius + r + 4.0 for p, r in placed):
            continue
        return c
    return None


def draw_case(seed: int, *, layout: str = "compact", noise_hu: float | None = None, noise_at_078: bool = True,
              dt_s: float | None = None, n_times: int | None = None, duration_s: float | None = None,
              jitter: float = 0.15, pixel_mm: float | None = None, slice_mm: float | None = None,
              n_slices: int | None = None, lesions: tuple[tuple[str, float], ...] | None = None,
              n_lesions: int | None = None, tau_a_s: float | None = None, tau_p_s: float | None = None,
              input_overrides: dict[str, Any] | None = None, liver_overrides: dict[str, float] | None = None,
              lesion_overrides: tuple[dict[str, float], ...] = (), first_pass: str = "gamma variate") -> CaseSpec:
    """One case of the family, drawn from `seed` over the ranges in the module docstring.

    `noise_hu` is the image noise SD (0 = noiseless); with `noise_at_078` it is given for a 0.78 mm pixel and
    scaled to this case's pixel. `lesions` fixes the lesions as (kind, radius_mm) pairs. `*_overrides` replace
    drawn parameters by name (InputParams / TissueParams fields). `first_pass` is the aortic first pass's shape
    (kinetics.FIRST_PASS_SHAPES), with the drawn arrival, time to peak, shape parameter and peak.
    """
    rng = np.random.default_rng(seed)
    lay = LAYOUTS[layout]
    # every draw is made whatever is pinned, in a fixed order, so that pinning one condition leaves the others
    pixel_draw, thick_draw = float(rng.uniform(0.70, 0.80)), float(rng.choice([3.0, 4.0, 5.0]))
    dt_draw, span_draw, noise_draw = float(rng.uniform(1.5, 4.0)), float(rng.uniform(40.0, 55.0)), float(
        rng.uniform(10.0, 25.0))
    jitters = rng.uniform(-1.0, 1.0, 64)
    pixel = pixel_mm if pixel_mm is not None else pixel_draw
    rows = int(round(lay.fov_mm / pixel / 2.0)) * 2
    thick = slice_mm if slice_mm is not None else thick_draw
    slices = n_slices if n_slices is not None else int(np.ceil(72.0 / thick))
    dt = dt_s if dt_s is not None else dt_draw
    n = n_times if n_times is not None else int(np.clip(np.ceil((duration_s or span_draw) / dt) + 1, 12, 30))
    times = tuple(_round_time(k * dt + (jitter * jitters[k] * dt if k else 0.0)) for k in range(n))
    noise = noise_draw if noise_hu is None else float(noise_hu)
    if noise_at_078:
        noise *= NOISE_REF_PIXEL_MM / pixel
    arrival = max(float(rng.uniform(5.0, 10.0)), 1.6 * dt)
    inputs = InputParams(
        arrival_s=arrival, rise_s=float(rng.uniform(5.0, 10.0)), alpha=float(rng.uniform(2.5, 4.0)),
        peak_hu=float(rng.uniform(200.0, 450.0)), recirculation_delay_s=float(rng.uniform(6.0, 10.0)),
        recirculation_fraction=float(rng.uniform(0.25, 0.45)), portal_delay_s=float(rng.uniform(3.0, 6.0)),
        portal_transit_s=float(rng.uniform(5.0, 10.0)), spleen_k1_per_s=float(rng.uniform(0.08, 0.15)),
        spleen_k2_per_s=float(rng.uniform(0.2, 0.4)), first_pass=first_pass)
    if input_overrides:
        inputs = replace(inputs, **input_overrides)
    ta_draw, tp_draw = float(rng.uniform(0.0, 3.0)), float(rng.uniform(0.0, 3.0))
    ta = ta_draw if tau_a_s is None else tau_a_s
    tp = tp_draw if tau_p_s is None else tau_p_s
    liver = TissueParams(alp=float(rng.uniform(8.0, 20.0)), pvp=float(rng.uniform(50.0, 100.0)),
                         dv=float(rng.uniform(0.20, 0.35)), tau_a_s=round(ta, 2), tau_p_s=round(tp, 2))
    if liver_overrides:
        liver = replace(liver, **liver_overrides)
    liver_hu = float(rng.uniform(50.0, 65.0))
    count_draw = int(rng.integers(1, 4))
    drawn = tuple((str(rng.choice(["hypervascular", "hypovascular"])), float(rng.uniform(8.0, 25.0)))
                  for _ in range(3))
    if lesions is None:
        lesions = drawn[: n_lesions if n_lesions is not None else count_draw]
    slab = slices * thick
    placed: list[tuple[np.ndarray, float]] = []
    out: list[Lesion] = []
    for n, (kind, radius) in enumerate(sorted(lesions, key=lambda k: -k[1])):
        if kind == "hypervascular":
            alp, pvp, dv = rng.uniform(40.0, 90.0), rng.uniform(5.0, 20.0), rng.uniform(0.25, 0.45)
        else:
            alp, pvp, dv = rng.uniform(5.0, 25.0), rng.uniform(10.0, 40.0), rng.uniform(0.15, 0.35)
        k = TissueParams(alp=float(alp), pvp=float(pvp), dv=float(dv),
                         tau_a_s=round(max(0.0, ta + float(rng.uniform(-0.5, 0.5))), 2),
                         tau_p_s=round(max(0.0, tp + float(rng.uniform(-0.5, 0.5))), 2))
        if n < len(lesion_overrides):
            k = replace(k, **lesion_overrides[n])
        centre = _place(rng, lay, radius, slab, thick, placed)
        if centre is None:
            continue
        placed.append((centre, radius))
        x, y, z = (float(v) for v in centre)
        out.append(Lesion(f"T{len(out) + 1}", kind, (x, y, z), float(radius),
                          liver_hu - float(rng.uniform(5.0, 20.0)), k))
    return CaseSpec(seed=seed, layout=layout, pixel_mm=round(pixel, 4), rows=rows, slice_mm=thick, n_slices=slices,
                    times_s=times, noise_hu=round(noise, 3), inputs=inputs, liver=liver, liver_baseline_hu=liver_hu,
                    lesions=tuple(out))
