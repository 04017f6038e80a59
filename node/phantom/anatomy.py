"""Analytic anatomy of the phantom patient in its own body frame (mm, LPS axes: +x left, +y posterior,
+z head). Every series views this body through a rigid pose, so every image and truth mask is sampled from
the same exact shapes instead of being resampled from another image.

Regions get integer labels; where shapes overlap, the later entry of :data:`PAINT_ORDER` wins.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Labels of the CT label volume.
AIR, FAT, SOFT_TISSUE, BONE, LUNG, SPLEEN, LIVER, PORTAL_VEIN, AORTA = range(9)
TUMOUR_LABEL0 = 9  # tumour n (0-based) has label TUMOUR_LABEL0 + n
DISC = 12          # intervertebral disc (after the tumours, so tumour labels keep their numbers)
N_LABELS = 13

LABEL_NAMES = {AIR: "air", FAT: "fat", SOFT_TISSUE: "soft_tissue", BONE: "bone", LUNG: "lung",
               SPLEEN: "spleen", LIVER: "liver_parenchyma", PORTAL_VEIN: "portal_vein", AORTA: "aorta",
               DISC: "intervertebral_disc"}


@dataclass(frozen=True)
class Ellipsoid:
    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]

    def contains(self, p: np.ndarray) -> np.ndarray:
        (cx, cy, cz), (a, b, c) = self.centre, self.semi_axes
        qx, qy, qz = (p[..., 0] - cx) / a, (p[..., 1] - cy) / b, (p[..., 2] - cz) / c
        return qx * qx + qy * qy + qz * qz <= 1.0

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        c, s = np.asarray(self.centre), np.asarray(self.semi_axes)
        return c - s, c + s


@dataclass(frozen=True)
class CylinderZ:
    """Elliptic cylinder along z (infinite: it spans every field of view)."""

    centre_xy: tuple[float, float]
    semi_axes_xy: tuple[float, float]

    def contains(self, p: np.ndarray) -> np.ndarray:
        qx = (p[..., 0] - self.centre_xy[0]) / self.semi_axes_xy[0]
        qy = (p[..., 1] - self.centre_xy[1]) / self.semi_axes_xy[1]
        return qx * qx + qy * qy <= 1.0


@dataclass(frozen=True)
class Vertebrae:
    """Vertebral bodies along z: a cylinder cut into `body_mm` of bone every `body_mm + disc_mm`.

    The gaps are the intervertebral discs (painted underneath as the whole column). This gives the
    non-enhancing anatomy structure along z, which a rigid motion correction needs to see cranio-caudal
    breathing.
    """

    column: CylinderZ
    body_mm: float
    disc_mm: float
    z0_mm: float   # lower end plate of one vertebral body

    def contains(self, p: np.ndarray) -> np.ndarray:
        phase = np.mod(p[..., 2] - self.z0_mm, self.body_mm + self.disc_mm)
        return self.column.contains(p) & (phase < self.body_mm)

    def bone_fraction(self, z_mm: np.ndarray, thickness_mm: float) -> np.ndarray:
        """Fraction of the slab [z - t/2, z + t/2] (a rectangular slice profile) that is vertebral bone."""
        period = self.body_mm + self.disc_mm

        def bone_length(x: np.ndarray) -> np.ndarray:  # bone length between z0 and x
            u = np.asarray(x, float) - self.z0_mm
            return np.floor(u / period) * self.body_mm + np.minimum(np.mod(u, period), self.body_mm)

        half = thickness_mm / 2.0
        return (bone_length(z_mm + half) - bone_length(z_mm - half)) / thickness_mm


@dataclass(frozen=True)
class Capsule:
    """All points within `radius` of the segment p0-p1 (a vessel segment)."""

    p0: tuple[float, float, float]
    p1: tuple[float, float, float]
    radius: float

    def contains(self, p: np.ndarray) -> np.ndarray:
        a, b = np.asarray(self.p0), np.asarray(self.p1)
        ab = b - a
        s = np.clip(((p - a) @ ab) / (ab @ ab), 0.0, 1.0)
        d = p - (a + s[..., None] * ab)
        return d[..., 0] ** 2 + d[..., 1] ** 2 + d[..., 2] ** 2 <= self.radius ** 2

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        a, b = np.asarray(self.p0), np.asarray(self.p1)
        return np.minimum(a, b) - self.radius, np.maximum(a, b) + self.radius


@dataclass(frozen=True)
class Tumour:
    name: str
    kind: str                 # hypervascular / hypovascular / mixed
    centre: tuple[float, float, float]
    radius_mm: float

    @property
    def shape(self) -> Ellipsoid:
        return Ellipsoid(self.centre, (self.radius_mm,) * 3)


BODY_OUTER = CylinderZ((0.0, 0.0), (165.0, 115.0))     # skin surface
BODY_INNER = CylinderZ((0.0, 0.0), (150.0, 100.0))     # inside the subcutaneous fat layer
SPINE = CylinderZ((0.0, 68.0), (20.0, 20.0))           # vertebral column (discs between the bodies)
#: Lumbar-like vertebral bodies 25 mm high with 5 mm discs; z0 puts a disc centre near the body origin.
VERTEBRAE = Vertebrae(SPINE, body_mm=25.0, disc_mm=5.0, z0_mm=-27.5)
AORTA_SHAPE = CylinderZ((18.0, 28.0), (12.0, 12.0))    # descending/abdominal aorta, left-anterior of spine
SPLEEN_SHAPE = Ellipsoid((95.0, 38.0, 15.0), (35.0, 30.0, 55.0))
LUNGS = (Ellipsoid((-70.0, 15.0, 150.0), (60.0, 70.0, 75.0)),
         Ellipsoid((75.0, 15.0, 150.0), (55.0, 70.0, 75.0)))
LIVER_LOBES = (Ellipsoid((-65.0, -5.0, 10.0), (75.0, 75.0, 80.0)),   # right lobe + segment 4
               Ellipsoid((10.0, -45.0, 30.0), (45.0, 30.0, 40.0)))   # left lateral lobe
PORTAL_VEIN_SHAPE = Capsule((10.0, 0.0, -20.0), (-35.0, 0.0, 5.0), 8.0)  # confluence -> porta hepatis
TUMOURS = (
    Tumour("T1", "hypervascular", (-95.0, -20.0, 5.0), 15.0),
    Tumour("T2", "hypovascular", (-50.0, 35.0, -10.0), 22.0),
    Tumour("T3", "mixed", (-100.0, 30.0, 16.0), 18.0),
)
#: GSA: a region of reduced hepatocyte function (e.g. after prior therapy) in the superior right lobe.
GSA_LOW_FUNCTION = Ellipsoid((-90.0, 10.0, 58.0), (45.0, 45.0, 28.0))
GSA_LOW_FUNCTION_FACTOR = 0.35
#: GSA: function falls linearly from 1 at the right liver edge to 1 - GSA_GRADIENT at the left edge.
GSA_GRADIENT = 0.60
GSA_GRADIENT_X = (-140.0, 55.0)


def liver_envelope(p: np.ndarray) -> np.ndarray:
    """Whole liver (parenchyma, tumours and the intrahepatic vessels): the union of the lobes."""
    return LIVER_LOBES[0].contains(p) | LIVER_LOBES[1].contains(p)


def tumour_label(n: int) -> int:
    return TUMOUR_LABEL0 + n


def _paint_order() -> list[tuple[int, object]]:
    """(label, shape) in painting order: later entries overwrite earlier ones."""
    order = [(FAT, BODY_OUTER), (SOFT_TISSUE, BODY_INNER), (LUNG, LUNGS[0]), (LUNG, LUNGS[1]),
             (SPLEEN, SPLEEN_SHAPE), (LIVER, LIVER_LOBES[0]), (LIVER, LIVER_LOBES[1])]
    order += [(tumour_label(n), t.shape) for n, t in enumerate(TUMOURS)]
    order += [(PORTAL_VEIN, PORTAL_VEIN_SHAPE), (AORTA, AORTA_SHAPE), (DISC, SPINE), (BONE, VERTEBRAE)]
    return order


PAINT_ORDER = _paint_order()


def _may_intersect(shape: object, lo: np.ndarray, hi: np.ndarray) -> bool:
    """False when the shape's bounding box misses the points' bounding box (cheap skip)."""
    if not hasattr(shape, "bounds"):
        return True
    s_lo, s_hi = shape.bounds()
    return bool(np.all(s_lo <= hi) and np.all(s_hi >= lo))


def labels(p: np.ndarray) -> np.ndarray:
    """CT label of each point (..., 3) in the body frame (uint8)."""
    out = np.full(p.shape[:-1], AIR, dtype=np.uint8)
    # Per-axis bounds of the points (axis-0 reductions over (N, 3) arrays are slow in numpy).
    lo = np.array([p[..., i].min() for i in range(3)])
    hi = np.array([p[..., i].max() for i in range(3)])
    for label, shape in PAINT_ORDER:
        if _may_intersect(shape, lo, hi):
            out[shape.contains(p)] = label
    return out


def gsa_function(p: np.ndarray) -> np.ndarray:
    """Relative hepatocyte function (0..1) at points p, evaluated as if everything were parenchyma."""
    x0, x1 = GSA_GRADIENT_X
    f = 1.0 - GSA_GRADIENT * np.clip((p[..., 0] - x0) / (x1 - x0), 0.0, 1.0)
    return np.where(GSA_LOW_FUNCTION.contains(p), f * GSA_LOW_FUNCTION_FACTOR, f)
