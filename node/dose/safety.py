"""Safety checks of a Y-90 dose against configurable limits: warnings for the physicist, never prescriptions.

Defaults per sphere type (EANM procedure guideline for radioembolization, Weber et al. EJNMMI 2022, and the
EANM dosimetry guidance, Chiesa et al. EJNMMI Physics 2021; science.md sections 3 and 4):

==========================  =================================  ==========================================
check                       resin                              glass
==========================  =================================  ==========================================
non-tumoural liver mean     < 40 Gy unilobar;                  <= 70 Gy (usual partition-model limit,
                            < 30 Gy bilobar or compromised     science.md 3; set the compromised-liver
                                                               limit per site)
tumour mean                 >= 100 Gy, goal 120 Gy             >= 205 Gy (DOSISPHERE)
lungs mean                  < 30 Gy this session, < 50 Gy cumulative (both sphere types)
==========================  =================================  ==========================================

The limits are a frozen, validated dataclass so that a site can replace any of them (part of the node's
configuration); errors name the field.

A limit is crossed when the dose, rounded to 0.1 Gy (the precision every output states it with), is above the
limit (:func:`_above`); a tumour is under-treated when that rounded dose is below the minimum. Why: the MAA
workflow plans the activity so that the normal liver (or the lungs) receives exactly the limit
(:meth:`DoseLimits.normal_liver_limit`, :meth:`DoseLimits.lung_limit`, the same numbers the planning uses); a
check of ">= limit" on the unrounded value would flag the node's own plan on floating-point noise, and a report
reading "40.0 Gy exceeds 40 Gy" would contradict itself. A dose stated as 40.1 Gy exceeds 40 Gy; 40.0 Gy does not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from enum import Enum

from node.dose.dvh import Y90DoseSummary

__all__ = ["SphereType", "DoseLimits", "TreatmentContext", "SafetyFlag", "check_y90_safety"]

NOT_A_PRESCRIPTION = "a warning for the physicist, not a prescription"


class SphereType(str, Enum):  # noqa: UP042 (StrEnum would change str() of the members)
    RESIN = "resin"
    GLASS = "glass"


@dataclass(frozen=True)
class DoseLimits:
    """Dose limits and goals for one microsphere type (Gy; mean doses)."""

    sphere_type: SphereType
    normal_liver_max_gy: float  # unilobar treatment of a healthy liver
    normal_liver_compromised_max_gy: float  # bilobar treatment, or cirrhotic / otherwise compromised liver
    tumour_min_gy: float  # below: likely under-treated
    tumour_goal_gy: float | None  # between min and goal: noted
    lung_session_max_gy: float
    lung_cumulative_max_gy: float
    source: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_gy") and v is not None and (not isinstance(v, (int, float)) or not math.isfinite(v)
                                                            or v <= 0):
                raise ValueError(f"dose limits: {f.name} must be a positive number of Gy, got {v!r}")
        if self.normal_liver_compromised_max_gy > self.normal_liver_max_gy:
            raise ValueError("dose limits: normal_liver_compromised_max_gy must not exceed normal_liver_max_gy")
        if self.tumour_goal_gy is not None and self.tumour_goal_gy < self.tumour_min_gy:
            raise ValueError("dose limits: tumour_goal_gy must not be below tumour_min_gy")
        if self.lung_session_max_gy > self.lung_cumulative_max_gy:
            raise ValueError("dose limits: lung_session_max_gy must not exceed lung_cumulative_max_gy")

    @classmethod
    def eanm(cls, sphere_type: SphereType | str) -> DoseLimits:
        """The EANM defaults of the module docstring for `sphere_type`."""
        kind = SphereType(sphere_type)
        if kind is SphereType.RESIN:
            return cls(kind, 40.0, 30.0, 100.0, 120.0, 30.0, 50.0,
                       "EANM 2022 procedure guideline (resin): normal liver < 40 Gy unilobar, < 30 Gy bilobar or "
                       "compromised; tumour >= 100-120 Gy; lungs < 30 Gy per session, < 50 Gy cumulative")
        return cls(kind, 70.0, 70.0, 205.0, None, 30.0, 50.0,
                   "EANM 2022 / DOSISPHERE (glass): tumour >= 205 Gy; normal liver <= 70 Gy (partition-model usual "
                   "limit); lungs < 30 Gy per session, < 50 Gy cumulative")

    def normal_liver_limit(self, context: TreatmentContext) -> float:
        """The non-tumoural liver mean-dose limit of this treatment: the compromised one for a bilobar treatment or
        a compromised liver, the unilobar one otherwise."""
        compromised = context.bilobar or context.compromised_liver
        return self.normal_liver_compromised_max_gy if compromised else self.normal_liver_max_gy

    def lung_limit(self, context: TreatmentContext) -> float:
        """The lung mean-dose limit of this session: the per-session limit, or what the cumulative limit leaves
        after earlier sessions if that is less (<= 0 when earlier sessions used it up: no Y-90 should reach the
        lungs)."""
        return min(self.lung_session_max_gy, self.lung_cumulative_max_gy - context.prior_lung_dose_gy)

    def with_changes(self, **changes: float | None) -> DoseLimits:
        """A copy with some limits replaced (validated again)."""
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TreatmentContext:
    """What the limits depend on besides the dose."""

    bilobar: bool = False
    compromised_liver: bool = False
    prior_lung_dose_gy: float = 0.0  # from earlier radioembolization sessions


@dataclass(frozen=True)
class SafetyFlag:
    """One finding: `severity` is "warning" (a limit is crossed) or "note" (between a minimum and a goal)."""

    severity: str
    quantity: str
    value_gy: float
    limit_gy: float
    message: str


def _rounded(dose_gy: float) -> float:
    """A dose as the outputs state it (0.1 Gy)."""
    return round(dose_gy, 1)


def _above(dose_gy: float, limit_gy: float) -> bool:
    """True when `dose_gy`, stated to 0.1 Gy, exceeds `limit_gy` (module docstring: a plan at the limit passes)."""
    return _rounded(dose_gy) > limit_gy


@dataclass(frozen=True)
class VoxelActivityLimit:
    """The largest activity at which the voxel doses keep the normal-liver and lung mean-dose limits.

    Local-deposition dose is proportional to the activity (same SPECT, same lung shunt fraction), so it is the
    planned activity scaled by the smaller of limit / dose for the two regions. It differs from the partition
    model's activity where uptake is not uniform per compartment (SPECT blur moves tumour counts into the normal
    liver); EANM asks for planning on the non-tumoural liver mean dose, so the physicist sees both.
    """

    activity_gbq: float
    limited_by: str  # "normal liver" or "lungs"
    text: str


def voxel_activity_limit(activity_gbq: float, normal_liver_mean_gy: float, lung_mean_gy: float | None,
                         limits: DoseLimits, context: TreatmentContext) -> VoxelActivityLimit | None:
    """See :class:`VoxelActivityLimit`; None when there is no dose to scale (a normal-liver mean of 0)."""
    if activity_gbq <= 0 or normal_liver_mean_gy <= 0:
        return None
    nl_limit, lung_limit = limits.normal_liver_limit(context), limits.lung_limit(context)
    candidates = [(activity_gbq * nl_limit / normal_liver_mean_gy, "normal liver", nl_limit)]
    if lung_mean_gy is not None and lung_mean_gy > 0:
        candidates.append((activity_gbq * max(lung_limit, 0.0) / lung_mean_gy, "lungs", lung_limit))
    gbq, by, limit = min(candidates)
    text = (f"voxel-based maximum activity {gbq:.3f} GBq: at it the voxel mean dose of the {by} equals its "
            f"{limit:g} Gy limit (planned {activity_gbq:.3f} GBq)")
    return VoxelActivityLimit(gbq, by, text)


def check_y90_safety(summary: Y90DoseSummary, limits: DoseLimits,
                     context: TreatmentContext = TreatmentContext()) -> tuple[SafetyFlag, ...]:
    """Compare a Y-90 dose summary with `limits`; returns the findings (empty when nothing is crossed)."""
    flags = []
    kind = limits.sphere_type.value
    compromised = context.bilobar or context.compromised_liver
    nl_limit = limits.normal_liver_limit(context)
    why = "bilobar or compromised liver" if compromised else "unilobar, healthy liver"
    nl = summary.normal_liver.region.mean_gy
    if _above(nl, nl_limit):
        flags.append(SafetyFlag("warning", "non-tumoural liver mean dose", nl, nl_limit,
                                # said with the case-wide region name (node.report.groups.REGION_NAMES)
                                f"normal liver mean dose {nl:.1f} Gy exceeds the {kind} limit of {nl_limit:g} Gy "
                                f"({why}): risk of radioembolization-induced liver disease; {NOT_A_PRESCRIPTION}"))
    for t in summary.tumours:
        d = t.region.mean_gy
        if _rounded(d) < limits.tumour_min_gy:
            flags.append(SafetyFlag("warning", f"tumour {t.region.name} mean dose", d, limits.tumour_min_gy,
                                    f"tumour {t.region.name} mean dose {d:.1f} Gy is below the {kind} minimum of "
                                    f"{limits.tumour_min_gy:g} Gy: likely under-treated; {NOT_A_PRESCRIPTION}"))
        elif limits.tumour_goal_gy is not None and _rounded(d) < limits.tumour_goal_gy:
            flags.append(SafetyFlag("note", f"tumour {t.region.name} mean dose", d, limits.tumour_goal_gy,
                                    f"tumour {t.region.name} mean dose {d:.1f} Gy is between the {kind} minimum "
                                    f"{limits.tumour_min_gy:g} Gy and goal {limits.tumour_goal_gy:g} Gy; "
                                    f"{NOT_A_PRESCRIPTION}"))
    lung = summary.lungs.mean_gy
    if lung is not None:
        if _above(lung, limits.lung_session_max_gy):
            flags.append(SafetyFlag("warning", "lung mean dose (this session)", lung, limits.lung_session_max_gy,
                                    f"lung mean dose {lung:.1f} Gy exceeds the per-session limit of "
                                    f"{limits.lung_session_max_gy:g} Gy: risk of radiation pneumonitis; "
                                    f"{NOT_A_PRESCRIPTION}"))
        total = lung + context.prior_lung_dose_gy
        if _above(total, limits.lung_cumulative_max_gy):
            flags.append(SafetyFlag("warning", "lung mean dose (cumulative)", total, limits.lung_cumulative_max_gy,
                                    f"cumulative lung mean dose {total:.1f} Gy ({context.prior_lung_dose_gy:g} Gy "
                                    f"before) exceeds the limit of {limits.lung_cumulative_max_gy:g} Gy; "
                                    f"{NOT_A_PRESCRIPTION}"))
    return tuple(flags)
