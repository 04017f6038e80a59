"""Series roles and the workflows a case can run, from what the index knows (no pixel data read).

Roles: ct-perfusion, planning-ct, spect-ct, spect-gsa, spect-maa, liver-rtstruct, roi-rtstruct, other.
Workflows: perfusion (needs ct-perfusion), gsa (spect-gsa + its spect-ct + planning-ct), maa (spect-maa).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from node.index import SeriesRow

GSA_CODES = {"446534003"}
MAA_CODES = {"85693008", "81761004"}
PERFUSION_MIN_REPEATS = 3

ROLES = ("ct-perfusion", "planning-ct", "spect-ct", "spect-gsa", "spect-maa", "liver-rtstruct", "roi-rtstruct",
         "other")

#: workflow -> roles it needs, key input first; optional roles (rtstructs, perfusion for MAA) are used when present.
WORKFLOW_NEEDS: dict[str, tuple[str, ...]] = {
    "perfusion": ("ct-perfusion",),
    "gsa": ("spect-gsa", "spect-ct", "planning-ct"),
    "maa": ("spect-maa",),
}


def tracer(series: SeriesRow) -> str:
    """'gsa', 'maa' or '' from the radiopharmaceutical code (SNOMED) or, failing that, its free text."""
    code = series.radiopharmaceutical_code.strip()
    if code in GSA_CODES:
        return "gsa"
    if code in MAA_CODES:
        return "maa"
    text = series.radiopharmaceutical.upper().replace("-", " ")
    words = set(text.replace("^", " ").replace("(", " ").replace(")", " ").split())
    if "GSA" in words or "GALACTOSYL" in text:
        return "gsa"
    if "MAA" in words or "MACROAGGREGATED" in text or "MICROAGGREGATED" in text or "AGGREGATED ALBUMIN" in text:
        return "maa"
    return ""


def _is_liver_name(name: str, liver_names: Sequence[str]) -> bool:
    wanted = {n.strip().lower() for n in liver_names}
    return name.strip().lower() in wanted


def classify_series(series: Sequence[SeriesRow], liver_names: Sequence[str]) -> dict[str, str]:
    """series_uid -> role for every series of one case."""
    roles: dict[str, str] = {}
    nm_fors = {s.frame_of_reference_uid for s in series if s.modality in ("NM", "PT") and s.frame_of_reference_uid}
    for s in series:
        if s.modality == "NM":
            t = tracer(s)
            roles[s.series_uid] = f"spect-{t}" if t else "other"
        elif s.modality == "CT":
            if s.max_position_repeats >= PERFUSION_MIN_REPEATS:
                roles[s.series_uid] = "ct-perfusion"
            elif s.frame_of_reference_uid and s.frame_of_reference_uid in nm_fors:
                roles[s.series_uid] = "spect-ct"
            else:
                roles[s.series_uid] = "planning-ct"
        elif s.modality == "RTSTRUCT":
            liver = any(_is_liver_name(n, liver_names) for n in s.roi_names)
            roles[s.series_uid] = "liver-rtstruct" if liver else "roi-rtstruct"
        else:
            roles[s.series_uid] = "other"
    return roles


@dataclass(frozen=True)
class CasePlan:
    """What a case can run now and what it still waits for."""

    roles: dict[str, str]
    runnable: tuple[str, ...]
    waiting: dict[str, tuple[str, ...]]  # workflow -> missing roles (only for workflows that have begun to arrive)


def plan_case(series: Sequence[SeriesRow], liver_names: Sequence[str]) -> CasePlan:
    roles = classify_series(series, liver_names)
    present = set(roles.values())
    runnable: list[str] = []
    waiting: dict[str, tuple[str, ...]] = {}
    for wf, needs in WORKFLOW_NEEDS.items():
        missing = tuple(r for r in needs if r not in present)
        if not missing:
            runnable.append(wf)
        elif needs[0] in present:  # its key input arrived, the rest has not (yet)
            waiting[wf] = missing
    return CasePlan(roles=roles, runnable=tuple(runnable), waiting=waiting)
