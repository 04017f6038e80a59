"""Series selection by content: which CT is a planning CT or the CT of a SPECT/CT, and which one a workflow uses.

The generic roles (node.classify) and the workflows' ``select_inputs`` both decide from :mod:`node.seriescontent`
(headers only), never from modality alone or arrival order:

* **planning CT**: an acquired (ORIGINAL), axial, single, contiguous CT volume long enough to plan on; the one a
  received liver contour was drawn on (its referenced series, else its frame of reference) is chosen, else the
  largest; never "the newest". A contour-referenced CT needs no minimum length.
* **CT of a SPECT/CT**: an ORIGINAL axial CT volume sharing the NM (or PET) frame of reference and covering the
  emission series' length in patient z (:data:`~node.seriescontent.MIN_SPECT_COVERAGE`).

Every predicate returns ``None`` when the series qualifies, else the reason in words (shown as the role reason).
"""
from __future__ import annotations

from collections.abc import Sequence

from node.index import SeriesRow
from node.seriescontent import (
    MIN_SPECT_COVERAGE,
    coverage,
    ct_image_problem,
    is_original,
    spect_problem,
    volume_problem,
)
from node.workflow import CaseSeries, ChosenSeries, CommonSettings, RoleContext

__all__ = ["best_of_role", "liver_roi", "drawn_on", "planning_problem", "spect_ct_problem", "emission_partners",
           "planning_why", "spect_ct_why", "choose_planning_ct", "choose_spect_ct", "choose_liver_contour"]


def liver_roi(s: SeriesRow, common: CommonSettings) -> str | None:
    """The ROI of an RTSTRUCT named like the liver ([analysis] liver_roi_names), or None."""
    if s.modality != "RTSTRUCT":
        return None
    return next((n for n in s.roi_names if common.is_liver_name(n)), None)


def drawn_on(ct: SeriesRow, contours: Sequence[SeriesRow]) -> tuple[SeriesRow, str] | None:
    """The first contour (RTSTRUCT) drawn on this CT, and how it says so: its referenced series, else its frame
    of reference."""
    for rt in contours:
        if ct.series_uid in rt.referenced_series:
            return rt, "series"
    for rt in contours:
        if rt.referenced_frame_of_reference and rt.referenced_frame_of_reference == ct.frame_of_reference_uid:
            return rt, "frame of reference"
    return None


def _liver_contours(series: Sequence[SeriesRow], common: CommonSettings) -> list[SeriesRow]:
    return sorted((s for s in series if liver_roi(s, common) is not None), key=lambda s: s.last_received,
                  reverse=True)


def planning_problem(s: SeriesRow, ctx: RoleContext) -> str | None:
    """Why this series is not a planning CT (None: it is one)."""
    problem = ct_image_problem(s.modality, s.content)
    if problem is not None:
        return problem
    if not is_original(s.content):
        return f"not an acquired image (ImageType {s.content.image_types[0]}, not ORIGINAL)"
    if any(s.series_uid in rt.referenced_series for rt in _liver_contours(ctx.series, ctx.common)):
        return volume_problem(s.content, min_slices=2, min_extent_mm=0.0)  # the contour says it is the one
    return volume_problem(s.content)


def emission_partners(s: SeriesRow, series: Sequence[SeriesRow]) -> list[SeriesRow]:
    """NM and PET series of the case sharing this series' frame of reference."""
    if not s.frame_of_reference_uid:
        return []
    return [n for n in series if n.modality in ("NM", "PT") and n.series_uid != s.series_uid
            and n.frame_of_reference_uid == s.frame_of_reference_uid]


def _best_coverage(ct: SeriesRow, partners: Sequence[SeriesRow]) -> tuple[float | None, SeriesRow | None]:
    best: tuple[float | None, SeriesRow | None] = (None, None)
    for n in partners:
        if n.modality == "NM" and spect_problem(n.modality, n.sop_class_uid, n.content) is not None:
            continue  # a planar or captured NM image has no length to cover
        c = coverage(ct.content, n.content)
        if c is not None and (best[0] is None or c > best[0]):
            best = (c, n)
    return best


def spect_ct_problem(s: SeriesRow, ctx: RoleContext) -> str | None:
    """Why this series is not the CT of a SPECT/CT (or PET/CT) (None: it is)."""
    problem = ct_image_problem(s.modality, s.content)
    if problem is not None:
        return problem
    partners = emission_partners(s, ctx.series)
    if not partners:
        return "no NM or PET series of the case shares its frame of reference"
    if not is_original(s.content):
        return f"not an acquired image (ImageType {s.content.image_types[0]}, not ORIGINAL)"
    if s.content.time_points > 1 or s.content.gaps:
        return volume_problem(s.content, min_slices=2, min_extent_mm=0.0)
    cov, nm = _best_coverage(s, partners)
    if nm is None or cov is None:
        return ("cannot tell whether it covers the emission series sharing its frame of reference (no slice "
                "positions recorded for a reconstructed SPECT or PET there)")
    if cov < MIN_SPECT_COVERAGE:
        return (f"covers only {cov:.0%} of the length of {nm.modality} {nm.series_description!r} in patient z "
                f"(>= {MIN_SPECT_COVERAGE:.0%} needed)")
    return None


def spect_ct_why(s: SeriesRow, ctx: RoleContext) -> str:
    cov, nm = _best_coverage(s, emission_partners(s, ctx.series))
    what = f"{nm.modality} {nm.series_description!r}" if nm is not None else "the emission series"
    return (f"ORIGINAL axial CT ({s.content.describe_stack()}) sharing the frame of reference of {what} and "
            f"covering {cov or 0:.0%} of it: the CT of its SPECT/CT")


def planning_why(s: SeriesRow, ctx: RoleContext) -> str:
    """Why a planning CT qualifies and, when the case has several, whether it is the one used and why."""
    text = f"contiguous axial ORIGINAL CT volume, {s.content.describe_stack()}: a planning CT"
    contours = _liver_contours(ctx.series, ctx.common)
    found = drawn_on(s, contours)
    if found is not None:
        text += (f"; the liver contour {found[0].series_description or found[0].series_uid!r} was drawn on it "
                 f"(its {found[1]})")
    others = [c for c in ctx.series if c.series_uid != s.series_uid and c.modality == "CT"
              and planning_problem(c, ctx) is None and spect_ct_problem(c, ctx) is not None]
    if others:
        best, why = _pick_planning([s, *others], contours)
        text += (f"; used as the planning CT: {why}" if best.series_uid == s.series_uid else
                 f"; not the one used: {best.series_description or best.series_uid!r} is ({why})")
    return text


def _size(s: SeriesRow) -> tuple[int, float, int]:
    return (s.content.positions, s.content.extent_mm, s.n_instances)


def _pick_planning(candidates: Sequence[SeriesRow], contours: Sequence[SeriesRow]) -> tuple[SeriesRow, str]:
    """The planning CT among qualified candidates and why, in this order: a CT a liver contour references by its
    series (newest contour first); else a CT sharing a liver contour's frame of reference (the largest of those);
    else the largest. Arrival order never decides."""
    for rt in contours:
        for ct in candidates:
            if ct.series_uid in rt.referenced_series:
                return ct, (f"the CT the liver contour {rt.series_description or rt.series_uid!r} was drawn on (its "
                            "referenced series)")
    for rt in contours:
        same = [ct for ct in candidates if rt.referenced_frame_of_reference
                and ct.frame_of_reference_uid == rt.referenced_frame_of_reference]
        if same:
            best = max(same, key=_size)
            why = (f"the CT the liver contour {rt.series_description or rt.series_uid!r} was drawn on (its referenced "
                   "frame of reference; the contour names no series received here)")
            if len(same) > 1:
                why += f"; the largest of {len(same)} CTs in that frame of reference ({best.content.describe_stack()})"
            return best, why
    best = max(candidates, key=_size)
    why = f"the largest contiguous axial ORIGINAL CT ({best.content.describe_stack()})"
    if len(candidates) > 1:
        why += f" of {len(candidates)} planning-ct series; no received liver contour names one"
    return best, why


def choose_planning_ct(case: CaseSeries, common: CommonSettings, input_name: str,
                       role: str = "planning-ct") -> ChosenSeries | None:
    """The planning CT (:func:`_pick_planning`): the series a received liver contour references wins, then its
    frame of reference, then the largest; never chosen by arrival time."""
    candidates = case.with_role(role)
    if not candidates:
        return None
    best, why = _pick_planning(candidates, _liver_contours(case.series, common))
    return ChosenSeries(input_name, best, why)


def choose_spect_ct(case: CaseSeries, emission: SeriesRow, input_name: str,
                    role: str = "spect-ct") -> ChosenSeries | None:
    """The CT of the SPECT/CT of `emission`: sharing its frame of reference, the best covering, then the largest."""
    candidates = [s for s in case.with_role(role) if s.frame_of_reference_uid == emission.frame_of_reference_uid]
    if not candidates:
        return None

    def key(s: SeriesRow) -> tuple[float, tuple[int, float, int]]:
        return (coverage(s.content, emission.content) or 0.0, _size(s))

    best = max(candidates, key=key)
    cov = coverage(best.content, emission.content)
    why = (f"ORIGINAL CT sharing the {emission.modality}'s frame of reference, covering "
           f"{(cov or 0.0):.0%} of it ({best.content.describe_stack()})")
    if len(candidates) > 1:
        why += f"; the best covering of {len(candidates)}"
    return ChosenSeries(input_name, best, why)


def choose_liver_contour(case: CaseSeries, ct: SeriesRow, input_name: str, common: CommonSettings,
                         role: str = "liver-rtstruct") -> ChosenSeries | None:
    """The liver contour drawn on `ct` (referenced series, else frame of reference), newest first."""
    found = drawn_on(ct, [s for s in case.with_role(role) if liver_roi(s, common) is not None])
    if found is None:
        return None
    return ChosenSeries(input_name, found[0], f"liver contour drawn on the planning CT (its referenced {found[1]})")


def best_of_role(case: CaseSeries, role: str, common: CommonSettings) -> SeriesRow | None:
    """The series of `role` a workflow would most likely use when it cannot select yet (status): the planning CT
    by the planning rule, a SPECT/CT's CT by coverage of its emission series, anything else the newest."""
    if role == "planning-ct":
        chosen = choose_planning_ct(case, common, role)
        return chosen.series if chosen is not None else None
    found = case.with_role(role)
    if role == "spect-ct" and found:
        return max(found, key=lambda s: (_best_coverage(s, emission_partners(s, case.series))[0] or 0.0, _size(s)))
    return found[0] if found else None
