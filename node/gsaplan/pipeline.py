"""The functional-liver dose of a returned plan: its RT Dose read in the GSA workflow's liver, FLS, ITV and PTV on
the planning CT (node.dose.gsa_plan), a DVH page, and the figures for its own report (the planning study)."""
from __future__ import annotations

import logging
import time

import highdicom as hd
from pydicom import Dataset

from node.derived import NOT_FOR_DIAGNOSIS
from node.dose.gsa_plan import GsaPlanEvaluation, evaluate_gsa_plan
from node.dose.page import PALETTE, Curve, Limit, render_dvh_page
from node.dose.records import RegionDoseRecord
from node.dose.rtdose import RtDose, read_rt_dose
from node.gsa.reference import GsaReference
from node.gsaplan.errors import PlanInputError
from node.gsaplan.measurements import GsaPlanMeasurements, PlanDoseRecord
from node.gsaplan.settings import GsaPlanSettings
from node.imaging.capture import secondary_capture
from node.imaging.pages import Identity, Page
from node.report.groups import region_name
from node.workflow import OutputObject, WorkflowResult

logger = logging.getLogger(__name__)

__all__ = ["run_gsaplan", "PAGE_SERIES_NUMBER"]

PAGE_SERIES_NUMBER = 9614
METHOD = ("plan dose (RT Dose, any grid in the planning CT's frame of reference) interpolated trilinearly at the "
          "planning-CT voxel centres of the GSA workflow's liver, FLS, ITV and PTV; FLV<x>Gy = % of the FLS volume "
          ">= x Gy; F<x>Gy = % of the liver's GSA counts in voxels >= x Gy")


def _fractions(plan: Dataset | None) -> int | None:
    try:
        return int(plan.FractionGroupSequence[0].NumberOfFractionsPlanned) if plan is not None else None
    except (AttributeError, IndexError, TypeError, ValueError):
        return None


def _dose_record(ds: Dataset, rt: RtDose, plan: Dataset | None, notes: list[str]) -> PlanDoseRecord:
    return PlanDoseRecord(
        sop_instance_uid=rt.sop_instance_uid, series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
        description=str(ds.get("SeriesDescription", "")), manufacturer=str(ds.get("Manufacturer", "")),
        dose_type=rt.dose_type, summation_type=rt.summation_type, referenced_plan_uids=list(rt.referenced_plan_uids),
        plan_received=plan is not None, plan_label=str(plan.get("RTPlanLabel", "")) if plan is not None else "",
        plan_name=str(plan.get("RTPlanName", "")) if plan is not None else "", fractions=_fractions(plan),
        grid_mm=[round(float(v), 3) for v in rt.image.GetSpacing()], notes=list(rt.notes) + notes)


def _page(ev: GsaPlanEvaluation, record: PlanDoseRecord, settings: GsaPlanSettings, identity: Identity) -> Page:
    regions = {"whole liver": ev.liver, "FLS": ev.fls, "ITV": ev.itv, "PTV": ev.ptv}
    curves = [Curve(f"{region_name(name)} (volume)", r.dvh, PALETTE[i]) for i, (name, r) in enumerate(regions.items())]
    curves.append(Curve("Liver, GSA-weighted (function)", ev.functional_dvh, PALETTE[0], "--"))
    t = f"{ev.threshold_gy:g}"
    header = ("region", "volume cm3", "Dmean Gy", "D50 Gy", "D70 Gy", "D90 Gy", f"V{t}Gy %")
    rows = [(region_name(name), f"{r.volume_ml:.1f}", f"{r.mean_gy:.1f}", f"{r.d50_gy:.1f}", f"{r.d70_gy:.1f}",
             f"{r.d90_gy:.1f}", f"{r.dvh.v(ev.threshold_gy):.1f}") for name, r in regions.items()]
    rows.append(("Liver, GSA-weighted", "-", f"{ev.functional_dvh.mean_gy():.1f}", "-", "-", "-",
                 f"{ev.f_percent:.1f}"))
    plan = (f"plan {record.plan_label or '(label not received)'} {record.plan_name}".strip()
            + (f", {record.fractions} fractions" if record.fractions else ""))
    notes = [f"FLV{t}Gy = {ev.flv_percent:.1f} % of the functional liver (FLS) receives >= {t} Gy (warning above "
             f"{settings.flv_warning_percent:g} %); F{t}Gy = {ev.f_percent:.1f} % of the liver's GSA counts lie in "
             f"voxels >= {t} Gy.",
             f"RT Dose {record.description or ''} ({record.manufacturer or 'unknown TPS'}; {record.dose_type}, "
             f"summation {record.summation_type}); {plan}.", f"Method: {METHOD}."]
    notes += [f"! {w}" for w in ev.warnings] + [f"note: {n}" for n in record.notes]
    return render_dvh_page(identity, "GSA-guided liver radiotherapy: functional-liver dose of the returned plan",
                           f"FLV{t}Gy {ev.flv_percent:.1f} %, F{t}Gy {ev.f_percent:.1f} %", curves, header, rows,
                           notes, [Limit(ev.threshold_gy, f"{t} Gy")])


def run_gsaplan(dose_ds: Dataset, plan: Dataset | None, reference: GsaReference,
                settings: GsaPlanSettings) -> WorkflowResult[GsaPlanMeasurements]:
    """Evaluate the returned plan dose in the GSA targets of the same planning CT."""
    t0 = time.perf_counter()
    rt = read_rt_dose(dose_ds)
    if rt.frame_of_reference_uid != reference.frame_of_reference_uid:
        raise PlanInputError("the RT Dose is in another frame of reference than the planning CT the GSA targets "
                             "were drawn on: it belongs to another planning CT")
    if rt.patient_id and reference.patient_id and rt.patient_id != reference.patient_id:
        raise PlanInputError(f"the RT Dose belongs to another patient ({rt.patient_id}, not {reference.patient_id})")
    notes = []
    if plan is not None and str(plan.get("SOPInstanceUID", "")) not in rt.referenced_plan_uids:
        notes.append("the received RT Plan is not the one the dose references: its label and fractions are not used")
        plan = None
    ev = evaluate_gsa_plan(rt.image, reference.grid, reference.liver, reference.fls, reference.itv, reference.ptv,
                           reference.gsa_counts, settings.threshold_gy, settings.flv_warning_percent)
    record = _dose_record(dose_ds, rt, plan, notes)
    page = _page(ev, record, settings, Identity.of(dose_ds, f"GSA plan functional dose DVH - {NOT_FOR_DIAGNOSIS}"))
    sc = secondary_capture(
        page, dose_ds, [dose_ds], series_uid=hd.UID(), series_number=PAGE_SERIES_NUMBER, instance_number=1,
        series_description=f"GSA plan functional dose DVH - {NOT_FOR_DIAGNOSIS}",
        comments=f"{NOT_FOR_DIAGNOSIS}. Functional-liver dose of RT Dose {rt.sop_instance_uid}: "
                 f"FLV{settings.threshold_gy:g}Gy {ev.flv_percent:.1f} %, F{settings.threshold_gy:g}Gy "
                 f"{ev.f_percent:.1f} %.",
        derivation="dose-volume histograms of the returned plan dose in the GSA-defined functional liver (FLS), ITV, "
                   "PTV and liver, and the liver's GSA-weighted (functional) DVH", image_plane=False)
    measurements = GsaPlanMeasurements(
        dose=record, method=METHOD, threshold_gy=settings.threshold_gy, flv_percent=round(ev.flv_percent, 3),
        f_percent=round(ev.f_percent, 3), flv_warning_percent=settings.flv_warning_percent,
        regions={name: RegionDoseRecord.of(name, r, (settings.threshold_gy,))
                 for name, r in (("whole liver", ev.liver), ("FLS", ev.fls), ("ITV", ev.itv), ("PTV", ev.ptv))},
        functional_mean_gy=round(ev.functional_dvh.mean_gy(), 3), counts=reference.counts_filter,
        timings_s={"evaluate_s": round(time.perf_counter() - t0, 3)})
    warnings = [f"GSA plan: {w}" for w in ev.warnings] + [f"GSA plan dose: {n}" for n in notes]
    if rt.summation_type not in ("PLAN", "MULTI_PLAN"):
        warnings.append(f"GSA plan dose: summation type {rt.summation_type or 'missing'}, not a whole plan")
    logger.info("GSA plan dose %s: FLV%gGy %.1f %%, F%gGy %.1f %%", rt.sop_instance_uid, settings.threshold_gy,
                ev.flv_percent, settings.threshold_gy, ev.f_percent)
    return WorkflowResult("gsaplan", measurements, [OutputObject("report", sc, "GSA plan functional dose DVH page")],
                          warnings)
