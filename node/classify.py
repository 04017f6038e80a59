"""Series roles and the workflows a case can run, from what the index knows (no pixel data read).

A role says what a series is for. The registered workflows contribute the rules of the roles only they know
(ct-perfusion, spect-gsa, spect-maa, ...; see each package's ``workflow.py``); this module adds the generic
ones below, tried after them, and plans a case from the workflows' ``needs``. This is the seam a real-traffic
series selector replaces: roles here, the choice among several series of a role in each workflow's
``select_inputs``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from node.index import SeriesRow
from node.registry import DEFAULT_REGISTRY, Registry
from node.workflow import CommonSettings, RoleContext, RoleRule

__all__ = ["GENERIC_RULES", "OTHER", "CasePlan", "classify_series", "explain_roles", "plan_case"]

#: The role of a series no rule claims.
OTHER = "other"

#: Generic roles, tried after every workflow's rules (priority 10): any CT that is not claimed by a workflow is
#: the CT of a SPECT/CT when it shares an NM/PT frame of reference, else a planning CT; an RTSTRUCT naming the
#: liver is a liver contour, any other a set of regions of interest.
def _liver_roi(s: SeriesRow, ctx: RoleContext) -> str | None:
    return next((n for n in s.roi_names if ctx.common.is_liver_name(n)), None)


GENERIC_RULES: tuple[RoleRule, ...] = (
    RoleRule("spect-ct", "CT sharing the frame of reference of an NM series: the CT of a SPECT/CT",
             lambda s, ctx: s.modality == "CT" and bool(s.frame_of_reference_uid)
             and s.frame_of_reference_uid in ctx.nuclear_frames_of_reference, priority=50),
    RoleRule("planning-ct", "CT without repeated positions and outside every NM frame of reference: a planning CT",
             lambda s, ctx: s.modality == "CT", priority=90),
    RoleRule("liver-rtstruct", "RTSTRUCT with an ROI named like the liver ([analysis] liver_roi_names)",
             lambda s, ctx: s.modality == "RTSTRUCT" and _liver_roi(s, ctx) is not None, priority=50,
             explain=lambda s, ctx: f"RTSTRUCT with the liver contour {_liver_roi(s, ctx)!r} "
                                    "([analysis] liver_roi_names)"),
    RoleRule("roi-rtstruct", "any other RTSTRUCT", lambda s, ctx: s.modality == "RTSTRUCT", priority=90,
             explain=lambda s, ctx: "RTSTRUCT without a contour named as in [analysis] liver_roi_names (ROIs: "
                                    f"{', '.join(s.roi_names[:6]) or 'none'})"),
)


def _unclaimed(s: SeriesRow) -> str:
    if s.modality == "NM":
        return (f"NM without a recognised radiopharmaceutical (code {s.radiopharmaceutical_code or 'none'}, "
                f"text {s.radiopharmaceutical or 'none'}): not an input of any workflow")
    return f"modality {s.modality or '(none)'} is not an input of any workflow"


def _rules(registry: Registry) -> list[RoleRule]:
    return sorted(registry.role_rules() + list(GENERIC_RULES), key=lambda r: r.priority)


def classify_series(series: Sequence[SeriesRow], liver_names: Sequence[str],
                    registry: Registry = DEFAULT_REGISTRY) -> dict[str, str]:
    """series_uid -> role for every series of one case (OTHER when no rule matches)."""
    return {uid: role for uid, (role, _why) in explain_roles(series, liver_names, registry).items()}


def explain_roles(series: Sequence[SeriesRow], liver_names: Sequence[str],
                  registry: Registry = DEFAULT_REGISTRY) -> dict[str, tuple[str, str]]:
    """series_uid -> (role, why in words) for every series of one case."""
    ctx = RoleContext(tuple(series), CommonSettings(tuple(liver_names)))
    rules = _rules(registry)
    out: dict[str, tuple[str, str]] = {}
    for s in series:
        rule = next((r for r in rules if r.matches(s, ctx)), None)
        out[s.series_uid] = (rule.role, rule.why(s, ctx)) if rule is not None else (OTHER, _unclaimed(s))
    return out


@dataclass(frozen=True)
class CasePlan:
    """What a case can run now and what it still waits for."""

    roles: dict[str, str]
    runnable: tuple[str, ...]  # in run order
    waiting: dict[str, tuple[str, ...]]  # workflow -> missing roles (only for workflows that have begun to arrive)


def plan_case(series: Sequence[SeriesRow], liver_names: Sequence[str],
              registry: Registry = DEFAULT_REGISTRY) -> CasePlan:
    """Roles of the case's series; a workflow is runnable when every role it needs is present."""
    roles = classify_series(series, liver_names, registry)
    present = set(roles.values())
    runnable: list[str] = []
    waiting: dict[str, tuple[str, ...]] = {}
    for wf in registry:
        missing = tuple(r for r in wf.needs if r not in present)
        if not missing:
            runnable.append(wf.name)
        elif wf.needs[0] in present:  # its key input arrived, the rest has not (yet)
            waiting[wf.name] = missing
    return CasePlan(roles=roles, runnable=tuple(runnable), waiting=waiting)
