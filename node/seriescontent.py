"""What a series is, from the index alone (headers; no pixel data): the facts series selection decides on.

Hospital traffic puts localizers, reformats, projections, dose pages stored as Secondary Capture with Modality CT,
multi-phase diagnostic CTs and test-bolus scans next to the series an analysis needs. A role is therefore given by
content, never by modality and arrival time: :class:`SeriesContent` summarises one series' instances (SOP classes,
ImageType values, orientation, slice positions along the slice normal, spacing and gaps, repeated positions = time
points, time span, coverage in patient z), and the predicates below say in words why a series can or cannot be a
CT image volume, a single contiguous volume, or a reconstructed SPECT. Workflows' role rules and the generic ones
(node.classify) are built from them; every "no" carries its reason, which `status` shows as the role reason.
"""
from __future__ import annotations

import functools
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydicom.uid import UID

__all__ = ["SeriesContent", "InstanceFacts", "summarise", "encode_frames", "CT_IMAGE_CLASSES", "NM_IMAGE_CLASS",
           "PET_IMAGE_CLASSES", "ct_image_problem", "volume_problem", "spect_problem", "tomo_problem", "pet_problem",
           "emission_problem", "dose_grid_problem", "coverage", "is_original",
           "sop_class_name", "facts_from_row", "MIN_VOLUME_SLICES", "MIN_VOLUME_EXTENT_MM", "GAP_FACTOR",
           "MIN_SPECT_COVERAGE"]

#: SOP classes whose instances are CT images (Secondary Capture with Modality CT is not: a screen capture).
CT_IMAGE_CLASSES = {"1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
                    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
                    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage"}
NM_IMAGE_CLASS = "1.2.840.10008.5.1.4.1.1.20"
#: SOP classes whose instances are PET images (activity concentration per voxel).
PET_IMAGE_CLASSES = {"1.2.840.10008.5.1.4.1.1.128": "Positron Emission Tomography Image Storage",
                     "1.2.840.10008.5.1.4.1.1.130": "Enhanced PET Image Storage",
                     "1.2.840.10008.5.1.4.1.1.128.1": "Legacy Converted Enhanced PET Image Storage"}
_NAMES = {**CT_IMAGE_CLASSES, **PET_IMAGE_CLASSES, NM_IMAGE_CLASS: "NM Image Storage",
          "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose Storage", "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan Storage",
          "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
          "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
          "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
          "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
          "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
          "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
          "1.2.840.10008.5.1.4.1.1.30": "Parametric Map Storage",
          "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
          "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage"}

#: A single volume (planning CT) has at least this many slices over at least this length along its normal.
MIN_VOLUME_SLICES = 20
MIN_VOLUME_EXTENT_MM = 100.0
#: A step between neighbouring slices larger than GAP_FACTOR x the median step is a gap (missing slices).
GAP_FACTOR = 1.5
#: The CT of a SPECT/CT covers at least this fraction of the SPECT's length in patient z.
MIN_SPECT_COVERAGE = 0.9
#: Slice normals within this angle of the body (z) axis are axial (gantry tilts stay below it).
MAX_AXIAL_TILT_DEG = 30.0
#: Slice origins shifting in-plane by more than this (mm) over the stack: a sheared stack (gantry tilt), which the
#: node's CT reader refuses (node.imaging.volumes.SHEAR_TOLERANCE_MM, the same tolerance).
MAX_SHEAR_MM = 0.05
#: SOP classes of multi-frame (enhanced) CT: the node's CT reader takes single-frame slices only.
ENHANCED_CT_CLASSES = ("1.2.840.10008.5.1.4.1.1.2.1", "1.2.840.10008.5.1.4.1.1.2.2")
#: Positions closer than this along the normal are the same slice position (time points of a dynamic series).
_SAME_POSITION_MM = 0.05

#: ImageType terms (value 3 on) of images that are not an acquired volume.
_LOCALIZER_TERMS = ("LOCALIZER", "SCOUT", "TOPOGRAM", "SURVIEW", "SCANOGRAM")
_DERIVED_TERMS = ("PROJECTION IMAGE", "MIP", "MINIP", "MPR", "CPR", "REFORMATTED", "VOLUME RENDERING", "VR", "SSD",
                  "3D", "CURVED", "THICK", "RECONSTRUCTION PLANE", "MAP", "PARAMETRIC", "SUBTRACTION", "FUSED",
                  "SCREEN SAVE", "SECONDARY CAPTURE", "DOSE", "DOSE INFO", "DOSE REPORT")


def sop_class_name(uid: str) -> str:
    if uid in _NAMES:
        return _NAMES[uid]
    name = UID(uid).name if uid else ""
    return name if name and name != uid else (f"SOP class {uid}" if uid else "(no SOP class)")


@dataclass(frozen=True)
class InstanceFacts:
    """One instance as the index keeps it (see node.index): what summarise() needs."""

    sop_class_uid: str
    image_type: str
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    time: float | None
    temporal_position: int | None
    number_of_frames: int
    unusable: str
    frames: str  # JSON of the frames' positions and times (multi-frame objects), "" otherwise


def encode_frames(positions: Sequence[tuple[float, float, float]], times: Sequence[float]) -> str:
    """The index's form of a multi-frame object's frame positions and times (compact JSON; "" when none)."""
    if not positions and not times:
        return ""
    return json.dumps({"p": [[round(v, 3) for v in p] for p in positions], "t": [round(t, 3) for t in times]},
                      separators=(",", ":"))


@dataclass(frozen=True)
class SeriesContent:
    """The content of one series (all instances of it in one case), summarised from the index."""

    instances: int = 0
    frames: int = 0
    sop_classes: tuple[str, ...] = ()
    image_types: tuple[str, ...] = ()  # distinct ImageType values, most frequent first
    unusable: tuple[str, ...] = ()  # distinct reasons instances were accepted but cannot be inputs
    unusable_instances: int = 0
    orientations: int = 0  # distinct orientations among positioned images
    normal: tuple[float, float, float] | None = None  # slice normal of the most common orientation
    located: int = 0  # images/frames with a position in the patient
    positions: int = 0  # distinct positions along the normal (slices)
    time_points: int = 0  # how often the most repeated position occurs (1: one volume)
    spacing_mm: float | None = None  # median step between neighbouring positions
    largest_step_mm: float | None = None
    gaps: int = 0  # steps larger than GAP_FACTOR x the median
    extent_mm: float = 0.0  # first to last position along the normal
    z_range: tuple[float, float] | None = None  # patient z covered (half a step beyond the end slices)
    time_span_s: float | None = None  # first to last acquisition time (None: no times recorded)
    temporal_positions: int = 0  # distinct TemporalPositionIdentifier values
    #: how far (mm) slice origins move in-plane (perpendicular to the normal) over the stack: 0 for a straight stack
    shear_mm: float = 0.0

    @property
    def tilt_deg(self) -> float | None:
        """Angle between the slice normal and the body axis (0 = axial)."""
        if self.normal is None:
            return None
        return math.degrees(math.acos(min(1.0, abs(self.normal[2]))))

    @property
    def image_type_values(self) -> tuple[str, ...]:
        """Every ImageType term found (upper case), value 1 and 2 included."""
        return tuple(dict.fromkeys(v.strip().upper() for it in self.image_types for v in it.split("\\") if v))

    def describe_stack(self) -> str:
        """E.g. "48 slices over 235 mm (5 mm apart)"."""
        if not self.positions:
            return "no slice positions"
        text = f"{self.positions} slice{'s' if self.positions != 1 else ''}"
        if self.positions > 1:
            text += f" over {self.extent_mm:.0f} mm"
            if self.spacing_mm:
                text += f" ({self.spacing_mm:.3g} mm apart)"
        return text

    def describe_time(self) -> str:
        """E.g. "15 time points over 42 s"."""
        span = f" over {self.time_span_s:.0f} s" if self.time_span_s is not None else " (no acquisition times)"
        return f"{self.time_points} time point{'s' if self.time_points != 1 else ''}{span}"


def _parse_frames(text: str) -> tuple[list[tuple[float, float, float]], list[float]]:
    if not text:
        return [], []
    try:
        data = json.loads(text)
        return [tuple(map(float, p)) for p in data.get("p", [])], [float(t) for t in data.get("t", [])]  # type: ignore[misc]
    except (ValueError, TypeError, AttributeError):
        return [], []


def _orientation_key(o: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(v, 2) for v in o)


def summarise(instances: Iterable[InstanceFacts]) -> SeriesContent:
    """The SeriesContent of a series' instances (pure: no I/O)."""
    items = list(instances)
    if not items:
        return SeriesContent()
    points: list[tuple[float, float, float]] = []
    times: list[float] = []
    orients: Counter[tuple[float, ...]] = Counter()
    temporal: set[int] = set()
    unusable: list[str] = []
    n_unusable = 0
    frames = 0
    keys: dict[tuple[float, ...], tuple[float, ...]] = {}  # most series have one orientation: round it once

    def key(o: tuple[float, ...]) -> tuple[float, ...]:
        k = keys.get(o)
        if k is None:
            k = keys[o] = _orientation_key(o)
        return k

    for it in items:
        frames += max(1, it.number_of_frames)
        if it.unusable:
            n_unusable += 1
            unusable += [part.split(":", 1)[0].strip() for part in it.unusable.split("; ")]
        if it.temporal_position is not None:
            temporal.add(it.temporal_position)
        f_pos, f_times = _parse_frames(it.frames)
        if f_pos:
            points += f_pos
            if it.orientation is not None:
                orients[key(it.orientation)] += len(f_pos)
        elif it.position is not None:
            points.append(it.position)
            if it.orientation is not None:
                orients[key(it.orientation)] += 1
        if f_times:
            times += f_times
        elif it.time is not None:
            times.append(it.time)
    image_types = tuple(t for t, _ in Counter(it.image_type for it in items if it.image_type).most_common())
    base = dict(instances=len(items), frames=frames,
                sop_classes=tuple(dict.fromkeys(it.sop_class_uid for it in items)), image_types=image_types,
                unusable=tuple(dict.fromkeys(unusable)), unusable_instances=n_unusable, orientations=len(orients),
                located=len(points), temporal_positions=len(temporal),
                time_span_s=(max(times) - min(times)) if times else None)
    if not points:
        return SeriesContent(**base)  # type: ignore[arg-type]
    if orients:
        common = orients.most_common(1)[0][0]  # rounded (to group); the normal from an exact value of that group
        o = np.array(next((raw for raw, k in keys.items() if k == common), common), dtype=float)
        n = np.cross(o[:3], o[3:])
        norm = float(np.linalg.norm(n))
        normal = n / norm if norm > 1e-6 else np.array([0.0, 0.0, 1.0])
    else:
        normal = np.array([0.0, 0.0, 1.0])
    pts = np.array(points, dtype=float)
    d = np.sort(pts @ normal)
    # cluster positions closer than _SAME_POSITION_MM: one slice position, several time points
    breaks = np.flatnonzero(np.diff(d) > _SAME_POSITION_MM)
    starts = np.concatenate(([0], breaks + 1))
    counts = np.diff(np.concatenate((starts, [len(d)])))
    centres = np.array([d[s:s + c].mean() for s, c in zip(starts, counts, strict=True)])
    steps = np.diff(centres)
    spacing = float(np.median(steps)) if len(steps) else None
    largest = float(steps.max()) if len(steps) else None
    gaps = int(np.sum(steps > GAP_FACTOR * spacing + 0.01)) if spacing else 0
    along = pts @ normal
    inplane = pts - np.outer(along, normal)
    shear = float(np.linalg.norm(inplane - inplane[int(np.argmin(along))], axis=1).max())
    z = pts[:, 2]
    half = (spacing or 0.0) / 2.0
    return SeriesContent(
        **base,  # type: ignore[arg-type]
        normal=(float(normal[0]), float(normal[1]), float(normal[2])), positions=len(centres),
        time_points=int(counts.max()), spacing_mm=spacing, largest_step_mm=largest, gaps=gaps,
        extent_mm=float(centres[-1] - centres[0]), z_range=(float(z.min()) - half, float(z.max()) + half),
        shear_mm=shear)


# ------------------------------------------------------------------------------------ predicates, with reasons
def _terms(content: SeriesContent, values: Sequence[str]) -> list[str]:
    have = content.image_type_values
    return [t for t in values if t in have]


def ct_image_problem(modality: str, content: SeriesContent) -> str | None:
    """Why this series cannot be a CT image input at all (None: it is an acquired, positioned, axial CT stack).

    Localizers, Secondary Captures and other non-CT-image SOP classes with Modality CT, DERIVED images (reformats,
    projections, maps), images the node accepted but cannot use, unpositioned, multi-plane and non-axial stacks.
    """
    if modality != "CT":
        return f"modality {modality or '(none)'}, not CT"
    other = [c for c in content.sop_classes if c not in CT_IMAGE_CLASSES]
    if other:
        return (f"stored as {sop_class_name(other[0])}, not as CT images (a screen capture, dose page or report "
                "with Modality CT is never a CT input)")
    if content.unusable_instances:
        return (f"{content.unusable_instances} of {content.instances} instance(s) accepted but not usable "
                f"({', '.join(content.unusable)})")
    localizer = _terms(content, _LOCALIZER_TERMS)
    if localizer:
        return f"a localizer (ImageType {content.image_types[0]})"
    values = content.image_type_values
    if content.image_types and content.image_types[0].split("\\")[0].strip().upper() == "DERIVED":
        return f"DERIVED images (ImageType {content.image_types[0]}): a reformat, projection or map, not acquired"
    derived = _terms(content, _DERIVED_TERMS)
    if derived:
        return f"a {derived[0].lower()} (ImageType {content.image_types[0]}): not an acquired axial stack"
    if "DERIVED" in values:
        return f"partly DERIVED images (ImageType {', '.join(content.image_types[:3])})"
    if not content.located:
        return "no image position recorded (ImagePositionPatient): not a positioned stack"
    if content.orientations > 1:
        return f"{content.orientations} different orientations in one series (a multi-plane localizer or mixed stack)"
    tilt = content.tilt_deg
    if tilt is not None and tilt > MAX_AXIAL_TILT_DEG:
        return f"not axial: slices {tilt:.0f} degrees from the axial plane (a sagittal/coronal or oblique stack)"
    enhanced = [c for c in content.sop_classes if c in ENHANCED_CT_CLASSES]
    if enhanced or content.frames > content.instances:
        what = sop_class_name(enhanced[0]) if enhanced else "multi-frame CT"
        return (f"not used: an enhanced (multi-frame) CT ({what}, {content.frames} frame(s) in "
                f"{content.instances} instance(s)); the node reads CT as single-frame slices (send it as CT Image "
                "Storage)")
    if content.shear_mm > MAX_SHEAR_MM:
        return (f"not used: slice origins shift in-plane by up to {content.shear_mm:.3g} mm over the stack (gantry "
                "tilt or a sheared stack); the node reads only straight stacks (send it reconstructed without tilt)")
    return None


def volume_problem(content: SeriesContent, min_slices: int = MIN_VOLUME_SLICES,
                   min_extent_mm: float = MIN_VOLUME_EXTENT_MM) -> str | None:
    """Why this (CT) stack is not one contiguous volume long enough to plan on (None: it is)."""
    if content.time_points > 1:
        return (f"positions repeat {content.time_points} times ({content.describe_time()}): a dynamic or multi-phase "
                "series, not one volume")
    if content.gaps:
        return (f"gaps in the stack: {content.gaps} step(s) longer than {GAP_FACTOR:g} x the median "
                f"{content.spacing_mm:.3g} mm (largest {content.largest_step_mm:.3g} mm)")
    if content.positions < min_slices or content.extent_mm < min_extent_mm:
        return (f"too short: {content.describe_stack()} (a volume needs >= {min_slices} slices over "
                f">= {min_extent_mm:g} mm)")
    return None


def is_original(content: SeriesContent) -> bool:
    """ImageType value 1 is ORIGINAL (or not recorded at all)."""
    return all(t.split("\\")[0].strip().upper() == "ORIGINAL" for t in content.image_types)


def tomo_problem(modality: str, sop_class_uid: str, content: SeriesContent) -> str | None:
    """Why this NM series is not reconstructed tomographic NM image data (None: it is, geometry aside)."""
    if modality != "NM":
        return f"modality {modality or '(none)'}, not NM"
    if sop_class_uid != NM_IMAGE_CLASS or any(c != NM_IMAGE_CLASS for c in content.sop_classes):
        return f"stored as {sop_class_name(sop_class_uid)}: a picture of NM images, not NM image data"
    if content.unusable_instances:
        return f"accepted but not usable ({', '.join(content.unusable)})"
    values = content.image_type_values
    kinds = [v for v in ("RECON TOMO", "RECON GATED TOMO", "TOMO", "GATED TOMO", "WHOLE BODY", "STATIC", "DYNAMIC",
                         "GATED") if v in values]
    if kinds and kinds[0] not in ("RECON TOMO", "RECON GATED TOMO"):
        kind = kinds[0].lower()
        what = "unreconstructed tomographic projections" if "TOMO" in kinds[0] else f"a planar {kind} image"
        return f"{what} (ImageType {content.image_types[0]}), not a reconstructed SPECT"
    if not kinds and content.frames <= 1:
        return f"a single NM image (ImageType {content.image_types[0] if content.image_types else 'not recorded'})"
    return None


def spect_problem(modality: str, sop_class_uid: str, content: SeriesContent) -> str | None:
    """Why this NM series is not a reconstructed SPECT volume placed in the patient (None: it is)."""
    problem = tomo_problem(modality, sop_class_uid, content)
    if problem is not None:
        return problem
    if not content.located or content.positions < 2:
        return ("no slice positions recorded (DetectorInformationSequence position and orientation, slice spacing): "
                "it cannot be placed in the patient")
    return None


def pet_problem(modality: str, sop_class_uid: str, content: SeriesContent) -> str | None:
    """Why this PT series is not one reconstructed PET volume placed in the patient (None: it is).

    Screen captures, projections (MIP) and reformats, images accepted but not usable, unpositioned, multi-plane,
    dynamic or gated (positions repeat) and gapped stacks are not.
    """
    if modality != "PT":
        return f"modality {modality or '(none)'}, not PT"
    classes = content.sop_classes or ((sop_class_uid,) if sop_class_uid else ())
    other = [c for c in classes if c not in PET_IMAGE_CLASSES]
    if other or not classes:
        return (f"stored as {sop_class_name(other[0] if other else sop_class_uid)}: a picture of PET images, not PET "
                "image data")
    if content.unusable_instances:
        return f"accepted but not usable ({', '.join(content.unusable)})"
    derived = _terms(content, _DERIVED_TERMS) or _terms(content, _LOCALIZER_TERMS)
    if derived:
        return f"a {derived[0].lower()} (ImageType {content.image_types[0]}): not a reconstructed PET volume"
    if not content.located or content.positions < 2:
        return "fewer than two slice positions recorded (ImagePositionPatient): not a volume placed in the patient"
    if content.orientations > 1:
        return f"{content.orientations} different orientations in one series: not one volume"
    if content.time_points > 1:
        return (f"positions repeat {content.time_points} times ({content.describe_time()}): a dynamic or gated PET, "
                "not one volume")
    if content.gaps:
        return (f"gaps in the stack: {content.gaps} step(s) longer than {GAP_FACTOR:g} x the median "
                f"{content.spacing_mm:.3g} mm (largest {content.largest_step_mm:.3g} mm)")
    return None


def emission_problem(modality: str, sop_class_uid: str, content: SeriesContent) -> str | None:
    """Why this series is not an emission volume the node can read activity from: a reconstructed SPECT (NM) or
    PET (PT) volume placed in the patient (None: it is)."""
    if modality == "PT":
        return pet_problem(modality, sop_class_uid, content)
    if modality == "NM":
        return spect_problem(modality, sop_class_uid, content)
    return f"modality {modality or '(none)'}, neither NM nor PT"


def dose_grid_problem(content: SeriesContent) -> str | None:
    """Why this RT Dose series holds no dose grid the node can read (None: it holds one, placed in the patient).
    An RT Dose may carry only DVHs or dose points (no pixel data, no ImagePositionPatient)."""
    if content.unusable_instances:
        return f"accepted but not usable ({', '.join(content.unusable)})"
    if not content.located:
        return "no dose grid placed in the patient (no ImagePositionPatient: DVHs or dose points only)"
    return None


def coverage(ct: SeriesContent, nm: SeriesContent) -> float | None:
    """Fraction of the NM stack's length in patient z that the CT stack covers (None: a z range is unknown)."""
    if ct.z_range is None or nm.z_range is None:
        return None
    lo, hi = max(ct.z_range[0], nm.z_range[0]), min(ct.z_range[1], nm.z_range[1])
    length = nm.z_range[1] - nm.z_range[0]
    if length <= 0:
        return None
    return max(0.0, hi - lo) / length


@functools.lru_cache(maxsize=256)
def _orientation(text: str) -> tuple[float, ...] | None:
    """An index row's ImageOrientationPatient text as six numbers (None when absent or malformed)."""
    try:
        values = tuple(float(v) for v in text.split("\\")) if text else None
    except ValueError:
        return None
    return values if values is not None and len(values) == 6 else None


def facts_from_row(row: Any) -> InstanceFacts:
    """InstanceFacts from an index row (sqlite3.Row or mapping with the instance columns)."""
    pos = (row["ipp_x"], row["ipp_y"], row["ipp_z"])
    orientation = _orientation(row["image_orientation"] or "")
    return InstanceFacts(
        sop_class_uid=row["sop_class_uid"], image_type=row["image_type"] or "",
        position=None if pos[0] is None else (float(pos[0]), float(pos[1]), float(pos[2])),
        orientation=orientation,
        time=row["acquisition_time"], temporal_position=row["temporal_position"],
        number_of_frames=int(row["number_of_frames"] or 1), unusable=row["unusable"] or "", frames=row["frames"] or "")
