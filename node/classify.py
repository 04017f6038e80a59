"""Series roles and the workflows a case can run, from what the index knows (no pixel data read).

A role says what a series is for, decided by content (node.seriescontent, node.selection), with the reason in
words for every series (the role reason `status` shows). The registered workflows contribute the rules of the
roles only they know (ct-perfusion, spect-gsa, spect-maa, ...; see each package's ``workflow.py``); this module
adds the generic ones below, tried after them, lets the tracer code decide where code and text disagree (code, then
text; the disagreement is named in the role reason and logged by completion), identifies NM tracers the header does
not name through the site's ``[classify.tracers]`` rules (node.tracers), explains every series no rule claims (why
not each role it could have had), and plans a case from the workflows' ``needs``. The choice among several series
of a role is each workflow's ``select_inputs`` (node.selection helps).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from node.index import SeriesRow
from node.registry import DEFAULT_REGISTRY, Registry
from node.selection import liver_roi, planning_problem, planning_why, spect_ct_problem, spect_ct_why
from node.seriescontent import sop_class_name, spect_problem, tomo_problem
from node.tracers import TracerRules
from node.workflow import CommonSettings, RoleContext, RoleRule

__all__ = ["GENERIC_RULES", "OTHER", "UNKNOWN_TRACER", "CasePlan", "TracerDisagreement", "classify_series",
           "explain_roles", "plan_case", "known_tracers", "recognises_tracer", "tracer_disagreement"]

#: The role of a series no rule claims.
OTHER = "other"
#: The role of a reconstructed NM SPECT whose tracer neither its header nor a [classify.tracers] rule names.
UNKNOWN_TRACER = "spect-unknown-tracer"

_NON_INPUT_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.11.1": "a presentation state", "1.2.840.10008.5.1.4.1.1.11.2": "a presentation state",
    "1.2.840.10008.5.1.4.1.1.88.59": "a key object selection",
    "1.2.840.10008.5.1.4.1.1.88.67": "a radiation dose report", "1.2.840.10008.5.1.4.1.1.88.68": "a dose report",
    "1.2.840.10008.5.1.4.1.1.104.1": "an encapsulated PDF",
}


def _liver_roi(s: SeriesRow, ctx: RoleContext) -> str | None:
    return liver_roi(s, ctx.common)


#: Generic roles, tried after every workflow's rules (priority 10): a CT volume sharing an NM/PT frame of reference
#: and covering it is the CT of a SPECT/CT; a contiguous axial ORIGINAL CT volume is a planning CT; an RTSTRUCT
#: naming the liver is a liver contour, any other a set of regions of interest.
GENERIC_RULES: tuple[RoleRule, ...] = (
    RoleRule("spect-ct", "ORIGINAL axial CT volume sharing the frame of reference of an NM/PET series and covering "
                         "it: the CT of a SPECT/CT",
             lambda s, ctx: s.modality == "CT" and spect_ct_problem(s, ctx) is None, priority=50,
             explain=spect_ct_why,
             why_not=lambda s, ctx: spect_ct_problem(s, ctx) if s.modality == "CT" else None),
    RoleRule("planning-ct", "contiguous axial ORIGINAL CT volume (the one a liver contour was drawn on, else the "
                            "largest, is used)",
             lambda s, ctx: s.modality == "CT" and planning_problem(s, ctx) is None, priority=90,
             explain=planning_why,
             why_not=lambda s, ctx: planning_problem(s, ctx) if s.modality == "CT" else None),
    RoleRule("liver-rtstruct", "RTSTRUCT with an ROI named like the liver ([analysis] liver_roi_names)",
             lambda s, ctx: s.modality == "RTSTRUCT" and _liver_roi(s, ctx) is not None, priority=50,
             explain=lambda s, ctx: f"RTSTRUCT with the liver contour {_liver_roi(s, ctx)!r} "
                                    "([analysis] liver_roi_names)"),
    RoleRule("roi-rtstruct", "any other RTSTRUCT", lambda s, ctx: s.modality == "RTSTRUCT", priority=90,
             explain=lambda s, ctx: "RTSTRUCT without a contour named as in [analysis] liver_roi_names (ROIs: "
                                    f"{', '.join(s.roi_names[:6]) or 'none'})"),
)


def _rules(registry: Registry) -> list[RoleRule]:
    return sorted(registry.role_rules() + list(GENERIC_RULES), key=lambda r: r.priority)


def known_tracers(registry: Registry = DEFAULT_REGISTRY) -> tuple[str, ...]:
    """Radiopharmaceuticals the registered workflows analyse (their ``tracers``), e.g. ("Tc-99m MAA", ...)."""
    return tuple(dict.fromkeys(t for wf in registry for t in getattr(wf, "tracers", ())))


def recognises_tracer(text: str, registry: Registry = DEFAULT_REGISTRY) -> str | None:
    """The role a reconstructed NM SPECT whose Radiopharmaceutical reads `text` gets from a workflow (None: no
    workflow takes it). Used to validate [classify.tracers]."""
    from node.seriescontent import NM_IMAGE_CLASS, SeriesContent

    probe = SeriesRow(series_uid="probe", study_uid="probe", patient_id="", modality="NM", sop_class_uid=NM_IMAGE_CLASS,
                      series_description="", series_number=None, frame_of_reference_uid="", radiopharmaceutical=text,
                      radiopharmaceutical_code="", roi_names=(), referenced_frame_of_reference="", first_received=0.0,
                      last_received=0.0, n_instances=1, max_position_repeats=1, stable=True,
                      content=SeriesContent(instances=1, frames=64, sop_classes=(NM_IMAGE_CLASS,),
                                            image_types=("ORIGINAL\\PRIMARY\\RECON TOMO\\EMISSION",), located=64,
                                            positions=64, time_points=1))
    ctx = RoleContext((probe,), CommonSettings())
    rule = next((r for r in registry.role_rules() if r.matches(probe, ctx)), None)
    return rule.role if rule is not None else None


def _header_tracer(s: SeriesRow) -> str:
    code = s.radiopharmaceutical_code or "absent"
    text = s.radiopharmaceutical or "absent"
    return f"RadiopharmaceuticalCodeSequence {code}, Radiopharmaceutical {text!r}" if s.radiopharmaceutical \
        else f"RadiopharmaceuticalCodeSequence {code}, Radiopharmaceutical {text}"


def _unknown_tracer(s: SeriesRow, tracers: TracerRules, registry: Registry, ambiguous: str = "") -> str:
    names = known_tracers(registry)
    placed = spect_problem(s.modality, s.sop_class_uid, s.content)
    also = f". Even then it could not be analysed: {placed}" if placed else ""
    example_word = next((w for w in (s.series_description or s.protocol_name or s.study_description).split()
                         if len(w) >= 3), "<a word of its SeriesDescription>")
    example = f'[classify.tracers] "{names[0] if names else "Tc-99m MAA"}" = [\'{example_word}\']'
    found = (f"[classify.tracers] rules of several tracers match ({ambiguous}): nothing is guessed" if ambiguous
             else "no [classify.tracers] rule matches " + tracers.describe_fields(s))
    return (f"NM SPECT whose tracer is unknown: the header names none a workflow analyses ({_header_tracer(s)}) and "
            f"{found}. If it is {' or '.join(names) or 'a tracer a workflow analyses'}, name it in the "
            f"configuration, e.g. {example}{also}")


@dataclass(frozen=True)
class TracerDisagreement:
    """An emission series whose coded tracer and free-text tracer name different things: the code wins."""

    role: str  # the role the code gives (OTHER when the code names a tracer no workflow analyses)
    text_role: str  # the role the free text alone would give
    why: str  # the role reason
    note: str  # one line for the operator and the log


def tracer_disagreement(s: SeriesRow, ctx: RoleContext, workflow_rules: Sequence[RoleRule]
                        ) -> TracerDisagreement | None:
    """Code, then text: when RadiopharmaceuticalCodeSequence / RadionuclideCodeSequence and the Radiopharmaceutical
    text lead to different roles, the code decides. A radiopharmaceutical code no workflow knows outranks a text
    that one knows (the series is then no input); a radionuclide code alone names no tracer and never does."""
    rp_code, nuclide = s.radiopharmaceutical_code.strip(), s.radionuclide_code.strip()
    if s.modality not in ("NM", "PT") or not s.radiopharmaceutical.strip() or not (rp_code or nuclide):
        return None
    by_text = next((r for r in workflow_rules if r.matches(
        dataclasses.replace(s, radiopharmaceutical_code="", radionuclide_code=""), ctx)), None)
    if by_text is None:
        return None
    coded = dataclasses.replace(s, radiopharmaceutical="")
    by_code = next((r for r in workflow_rules if r.matches(coded, ctx)), None)
    if by_code is not None and by_code.role == by_text.role or by_code is None and not rp_code:
        return None
    codes = ", ".join(f"{k} {v}" for k, v in (("RadiopharmaceuticalCodeSequence", rp_code),
                                               ("RadionuclideCodeSequence", nuclide)) if v)
    head = (f"{s.modality} {s.series_description or s.series_uid!r}: the tracer code ({codes}) and the "
            f"Radiopharmaceutical text {s.radiopharmaceutical!r} disagree")
    if by_code is None:
        why = (f"{head}: the text alone would make it {by_text.role}, but the code names a tracer no workflow "
               "analyses, and the code wins over the text: not an input of any workflow")
        return TracerDisagreement(OTHER, by_text.role, why, f"{head}; the code wins: not {by_text.role}")
    why = f"{by_code.why(coded, ctx)}; {head} (the text alone would make it {by_text.role}): the code wins"
    return TracerDisagreement(by_code.role, by_text.role, why, f"{head}; the code wins: {by_code.role}, "
                                                                f"not {by_text.role}")


def _unclaimed(s: SeriesRow, ctx: RoleContext, rules: Sequence[RoleRule]) -> str:
    """Why a series gets no role: every rule of its kind says why not (grouped when they agree)."""
    if s.sop_class_uid in _NON_INPUT_CLASSES:
        return (f"{_NON_INPUT_CLASSES[s.sop_class_uid]} ({sop_class_name(s.sop_class_uid)}): not an analysis "
                "input; it never re-runs an analysis")
    if s.modality == "SR":
        return "a structured report: not an analysis input; it never re-runs an analysis"
    if s.modality == "NM":
        problem = tomo_problem(s.modality, s.sop_class_uid, s.content)
        if problem is not None:
            return f"NM, but {problem}: not an input of any workflow"
    reasons: dict[str, list[str]] = {}
    for rule in reversed(rules):  # the broadest roles first (planning-ct before ct-perfusion)
        why = rule.rejection(s, ctx)
        if why is not None and rule.role not in reasons.get(why, []):
            reasons.setdefault(why, []).append(rule.role)
    if reasons:
        return "; ".join(f"{why}: not {', '.join(roles[:-1]) + ' or ' + roles[-1] if len(roles) > 1 else roles[0]}"
                         for why, roles in reasons.items())
    return f"modality {s.modality or '(none)'} is not an input of any workflow"


def classify_series(series: Sequence[SeriesRow], liver_names: Sequence[str],
                    registry: Registry = DEFAULT_REGISTRY, tracers: TracerRules | None = None) -> dict[str, str]:
    """series_uid -> role for every series of one case (OTHER when no rule matches)."""
    return {uid: role for uid, (role, _why) in explain_roles(series, liver_names, registry, tracers).items()}


def explain_roles(series: Sequence[SeriesRow], liver_names: Sequence[str],
                  registry: Registry = DEFAULT_REGISTRY, tracers: TracerRules | None = None
                  ) -> dict[str, tuple[str, str]]:
    """series_uid -> (role, why in words) for every series of one case."""
    tracers = tracers or TracerRules()
    ctx = RoleContext(tuple(series), CommonSettings(tuple(liver_names)))
    rules = _rules(registry)
    workflow_rules = sorted(registry.role_rules(), key=lambda r: r.priority)
    out: dict[str, tuple[str, str]] = {}
    for s in series:
        disagreement = tracer_disagreement(s, ctx, workflow_rules)
        if disagreement is not None:
            out[s.series_uid] = (disagreement.role, disagreement.why)
            continue
        rule = next((r for r in rules if r.matches(s, ctx)), None)
        if rule is not None:
            out[s.series_uid] = (rule.role, rule.why(s, ctx))
            continue
        tomo = s.modality == "NM" and tomo_problem(s.modality, s.sop_class_uid, s.content) is None
        match = tracers.match(s) if tomo else None
        if match is not None and not match.ambiguous:
            named = dataclasses.replace(s, radiopharmaceutical=match.radiopharmaceuticals[0],
                                        radiopharmaceutical_code="")
            rule = next((r for r in workflow_rules if r.matches(named, ctx)), None)
            evidence = f"tracer named by [classify.tracers]: {match.evidence} (the header names none: " \
                       f"{_header_tracer(s)})"
            if rule is not None:
                out[s.series_uid] = (rule.role, f"{rule.why(named, ctx)}; {evidence}")
                continue
            placed = spect_problem(s.modality, s.sop_class_uid, s.content)
            if placed is not None:
                out[s.series_uid] = (OTHER, f"NM SPECT of {match.radiopharmaceuticals[0]} ({evidence}), but "
                                            f"{placed}: not an input of any workflow")
                continue
        if tomo:
            ambiguous = match.evidence if match is not None and match.ambiguous else ""
            out[s.series_uid] = (UNKNOWN_TRACER, _unknown_tracer(s, tracers, registry, ambiguous))
            continue
        out[s.series_uid] = (OTHER, _unclaimed(s, ctx, rules))
    return out


@dataclass(frozen=True)
class CasePlan:
    """What a case can run now and what it still waits for."""

    roles: dict[str, str]
    runnable: tuple[str, ...]  # in run order
    waiting: dict[str, tuple[str, ...]]  # workflow -> missing roles (only for workflows that have begun to arrive)
    #: what the operator should know about the case's series (an NM SPECT of unknown tracer: what to configure)
    notes: tuple[str, ...] = ()
    #: emission series whose tracer code and text disagree (the code decided): logged at WARNING by completion
    tracer_disagreements: tuple[str, ...] = ()


def plan_case(series: Sequence[SeriesRow], liver_names: Sequence[str],
              registry: Registry = DEFAULT_REGISTRY, tracers: TracerRules | None = None) -> CasePlan:
    """Roles of the case's series; a workflow is runnable when every role it needs is present."""
    explained = explain_roles(series, liver_names, registry, tracers)
    roles = {uid: role for uid, (role, _why) in explained.items()}
    present = set(roles.values())
    runnable: list[str] = []
    waiting: dict[str, tuple[str, ...]] = {}
    for wf in registry:
        missing = tuple(r for r in wf.needs if r not in present)
        if not missing:
            runnable.append(wf.name)
        elif wf.needs[0] in present:  # its key input arrived, the rest has not (yet)
            waiting[wf.name] = missing
    notes = tuple(f"NM SPECT {s.series_description or s.series_uid!r} has an unknown tracer: name it in "
                  "[classify.tracers] (its role reason says how)" for s in series
                  if roles.get(s.series_uid) == UNKNOWN_TRACER)
    ctx = RoleContext(tuple(series), CommonSettings(tuple(liver_names)))
    workflow_rules = sorted(registry.role_rules(), key=lambda r: r.priority)
    disagreements = tuple(d.note for s in series if (d := tracer_disagreement(s, ctx, workflow_rules)) is not None)
    return CasePlan(roles=roles, runnable=tuple(runnable), waiting=waiting, notes=notes,
                    tracer_disagreements=disagreements)
