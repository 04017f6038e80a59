"""The MAA workflow's part of the case report: tumours, normal and whole liver, lungs, activity, correlation."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom import Dataset

from node.maa.measurements import MaaMeasurements, PredictedDoseRecord, RegionDoseRecord
from node.maa.partition import TISSUE_DENSITY_G_PER_ML
from node.perfusion.report import MAX_SLOPE, METHOD_CODES, PARAMETER_CONCEPTS, PERFUSION_UNITS
from node.report.codes import (
    ABOVE_RANGE,
    ABSORBED_DOSE,
    BELOW_RANGE,
    DOSE_D70,
    DOSE_D90,
    LIVER,
    LUNG,
    MASS,
    MAX_DOSE,
    MEAN_DOSE,
    MEDIAN_DOSE,
    MIN_DOSE,
    NORMALITY,
    REGION_VOLUME,
    TUMOUR,
    VOLUME,
    volume_receiving,
)
from node.report.groups import Coded, Group, fmt, private
from node.workflow import WorkflowResult

__all__ = ["PROCEDURE", "report_groups", "summary_section"]

PROCEDURE = private("LN-P-MAA", "MAA SPECT planning of Y-90 radioembolization")

TN_RATIO = private("LN-TNR", "Tumor to normal liver uptake ratio")
TN_RATIO_UNCORRECTED = private("LN-TNR-U", "Tumor to normal liver uptake ratio, uncorrected")
LSF = private("LN-LSF", "Lung shunt fraction")
ACTIVITY = private("LN-Y90-A", "Planned Y-90 activity")
ACTIVITY_NORMAL_LIMIT = private("LN-Y90-AN", "Y-90 activity at the normal liver dose limit")
ACTIVITY_LUNG_LIMIT = private("LN-Y90-AL", "Y-90 activity at the lung dose limit")
PEARSON_R = private("LN-R-TN-ALP", "Correlation coefficient T/N vs ALP")

TN_GTM = private("LN-M-TNGTM", "Counts/mL ratio, PVC by transfer matrix in tumour cells")
TN_PLAIN = private("LN-M-TNRAW", "Ratio of mean counts inside contours, no PVC")
MASS_DENSITY = private("LN-M-MASS", "Region volume x tissue density")
PARTITION_MODEL = private("LN-M-PART", "Partition model (Ho 1996), Y-90 49.67 Gy kg/GBq")
LSF_SPECT = private("LN-M-LSFS", "SPECT/CT lung and liver counts")
LSF_CONFIG = private("LN-M-LSFC", "Configured value (e.g. from planar imaging)")
PEARSON = private("LN-M-PEARSON", "Pearson correlation over tumours")

TUMOUR_PREFIX = "MAA tumour "
NORMAL_LIVER, WHOLE_LIVER, LUNGS = "MAA normal liver", "MAA whole liver", "MAA lungs"
ACTIVITY_GROUP, CORRELATION_GROUP = "Y-90 activity, partition model", "MAA T/N vs tumour ALP"
DOSE_PREFIX = "Y-90 dose predicted, "
DOSE_ACTIVITY = "Y-90 dose predicted: activity"
LDM = private("LN-M-LDM", "Local deposition, Y-90 49.67 Gy kg/GBq, MAA SPECT/CT")
LUNG_SHUNT_DOSE = private("LN-M-LUNGM", "49.67 x A x LSF / CT lung mass")
DOSE_ACTIVITY_USED = private("LN-Y90-AD", "Y-90 activity of the predicted dose")


def _flag_region(quantity: str) -> str:
    """The dose region a safety flag is about (node.dose.safety quantities)."""
    if quantity.startswith("tumour ") and quantity.endswith(" mean dose"):
        return quantity[len("tumour "):-len(" mean dose")]
    return "lungs" if quantity.startswith("lung") else "non-tumoural liver"


def dose_groups(pd: PredictedDoseRecord, nm: list[Dataset]) -> list[Group]:
    """The predicted dose's figures: one group per region (DVH figures, flags as qualitative evaluations)."""
    limits = ", ".join(f"{k} = {v:g}" for k, v in pd.limits_gy.items() if v is not None)
    params = [f"method = {pd.method}", f"activity (GBq) = {pd.activity_gbq} ({pd.activity_source})",
              f"lung shunt fraction = {pd.lung_shunt_fraction}", f"sphere type = {pd.sphere_type}",
              f"bilobar = {pd.bilobar}, compromised liver = {pd.compromised_liver}, prior lung dose (Gy) = "
              f"{pd.prior_lung_dose_gy:g}", f"limits (Gy): {limits} ({pd.limits_source})",
              f"density = {pd.density_calibration}", f"dose grid = {pd.dose_grid}",
              f"structure grid = {pd.structure_grid}"]
    groups = []
    for name, r in pd.regions.items():
        site = LUNG if r.kind == "lungs" else LIVER
        g = Group("maa", f"{DOSE_PREFIX}{name}", site, TUMOUR if r.kind == "tumour" else None, sources=nm,
                  parameters=params)
        _dose_items(g, r, LDM)
        if r.kind == "lungs" and pd.lungs is not None:
            g.add(MEAN_DOSE, pd.lungs.mean_gy, "Gy", LUNG_SHUNT_DOSE, "Dmean (A x LSF / lung mass)")
        for f in pd.flags:
            if _flag_region(f.quantity) == name:
                g.evaluations.append((NORMALITY, BELOW_RANGE if f.quantity.startswith("tumour") else ABOVE_RANGE))
                g.parameters = g.parameters + [f"flag: {f.message}"]
        groups.append(g)
    if "lungs" not in pd.regions and pd.lungs is not None and pd.lungs.mean_gy is not None:
        g = Group("maa", f"{DOSE_PREFIX}lungs", LUNG, None, sources=nm, parameters=params + [pd.lungs.method])
        g.add(MEAN_DOSE, pd.lungs.mean_gy, "Gy", LUNG_SHUNT_DOSE, "Dmean (A x LSF / lung mass)")
        for f in pd.flags:
            if _flag_region(f.quantity) == "lungs":
                g.evaluations.append((NORMALITY, ABOVE_RANGE))
                g.parameters = g.parameters + [f"flag: {f.message}"]
        groups.append(g)
    g = Group("maa", DOSE_ACTIVITY, LIVER, None, sources=nm, parameters=params)
    g.add(DOSE_ACTIVITY_USED, pd.activity_gbq, "GBq", LDM, f"activity ({pd.activity_source})")
    groups.append(g)
    return groups


def _dose_items(g: Group, r: RegionDoseRecord, method: Coded) -> None:
    g.add(VOLUME, r.volume_ml, "mL", REGION_VOLUME, "volume")
    g.add(MEAN_DOSE, r.mean_gy, "Gy", method, "Dmean")
    g.add(MEDIAN_DOSE, r.d50_gy, "Gy", method, "D50")
    g.add(DOSE_D70, r.d70_gy, "Gy", method, "D70")
    g.add(DOSE_D90, r.d90_gy, "Gy", method, "D90")
    g.add(MIN_DOSE, r.min_gy, "Gy", method, "Dmin")
    g.add(MAX_DOSE, r.max_gy, "Gy", method, "Dmax")
    for dose_gy, percent in r.v_percent.items():
        g.add(volume_receiving(float(dose_gy)), percent, "%", method, f"V{dose_gy}Gy")


def report_groups(result: WorkflowResult[MaaMeasurements], sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
    m = result.measurements
    nm = list(sources.get("spect-maa", []))[:1]
    up, plan, shunt, corr = m.uptake, m.partition_model, m.lung_shunt, m.correlation
    uptake_params = [f"method = {up.method}", f"spill margin (mm) = {up.spill_margin_mm}",
                     f"regions = {m.regions.liver_source} / {m.regions.tumour_source}"]
    plan_params = [f"model = {plan.model}", f"normal liver limit (Gy) = {plan.normal_liver_limit_gy}",
                   f"lung limit (Gy) = {plan.lung_limit_gy}", f"limited by = {plan.limited_by or None}",
                   f"lung mass = {plan.lung_mass_source or None}",
                   f"densities (g/mL) = {plan.densities_g_per_ml or None}"]
    rows = {r.tumour: r for r in corr.rows} if corr is not None else {}
    groups = []
    for name, t in up.tumours.items():
        g = Group("maa", f"{TUMOUR_PREFIX}{name}", LIVER, TUMOUR, sources=nm, parameters=uptake_params + plan_params)
        g.add(TN_RATIO, t.tn_ratio, "{ratio}", TN_GTM, "T/N")
        g.add(TN_RATIO_UNCORRECTED, t.tn_ratio_uncorrected, "{ratio}", TN_PLAIN, "T/N uncorrected")
        g.add(VOLUME, t.volume_ml, "mL", REGION_VOLUME, "volume")
        g.add(MASS, t.volume_ml, "g", MASS_DENSITY, "mass", scale=TISSUE_DENSITY_G_PER_ML)
        g.add(ABSORBED_DOSE, plan.tumour_doses_gy.get(name), "Gy", PARTITION_MODEL, "dose")
        row = rows.get(name)
        for map_method, values in (row.perfusion.items() if row is not None else ()):
            method = METHOD_CODES.get(map_method.lower(), MAX_SLOPE)
            label = "max-slope" if method == MAX_SLOPE else map_method.lower()
            for param, value in (("ALP", values.ALP), ("PVP", values.PVP), ("HPI", values.HPI)):
                g.add(PARAMETER_CONCEPTS[param], value, PERFUSION_UNITS[param], method, f"{param} mean ({label})",
                      "mean")
        groups.append(g)
    g = Group("maa", NORMAL_LIVER, LIVER, None, sources=nm, parameters=uptake_params + plan_params)
    g.add(VOLUME, up.normal_liver_ml, "mL", REGION_VOLUME, "volume")
    g.add(MASS, plan.normal_liver_mass_kg, "g", MASS_DENSITY, "mass", scale=1000.0)
    g.add(ABSORBED_DOSE, plan.normal_liver_dose_gy, "Gy", PARTITION_MODEL, "dose")
    groups.append(g)
    g = Group("maa", WHOLE_LIVER, LIVER, None, sources=nm, parameters=uptake_params)
    g.add(VOLUME, up.liver_ml, "mL", REGION_VOLUME, "volume")
    g.add(TN_RATIO, up.overall_tn_ratio, "{ratio}", TN_GTM, "overall T/N")
    groups.append(g)
    g = Group("maa", LUNGS, LUNG, None, sources=nm,
              parameters=[f"LSF source = {shunt.source}", f"reason = {shunt.reason}",
                          f"method = {shunt.method}"] + plan_params)
    g.add(LSF, shunt.lung_shunt_fraction, "%", LSF_SPECT if shunt.source == "measured on SPECT" else LSF_CONFIG,
          f"LSF ({shunt.source})", scale=100.0)
    g.add(VOLUME, shunt.lung_volume_ml, "mL", REGION_VOLUME, "CT lung volume")
    g.add(MASS, plan.lung_mass_kg, "g", MASS_DENSITY, "mass", scale=1000.0)
    g.add(ABSORBED_DOSE, plan.lung_dose_gy, "Gy", PARTITION_MODEL, "dose")
    groups.append(g)
    g = Group("maa", ACTIVITY_GROUP, LIVER, None, sources=nm, parameters=plan_params)
    g.add(ACTIVITY, plan.activity_gbq, "GBq", PARTITION_MODEL, f"activity (limited by {plan.limited_by or None})")
    g.add(ACTIVITY_NORMAL_LIMIT, plan.activity_normal_liver_limit_gbq, "GBq", PARTITION_MODEL,
          "activity at normal-liver limit")
    g.add(ACTIVITY_LUNG_LIMIT, plan.activity_lung_limit_gbq, "GBq", PARTITION_MODEL, "activity at lung limit")
    groups.append(g)
    if m.predicted_dose is not None and m.predicted_dose.computed:
        groups += dose_groups(m.predicted_dose, nm)
    pearson = corr.pearson_r_tn_vs_alp if corr is not None else {}
    if pearson:
        g = Group("maa", CORRELATION_GROUP, LIVER, TUMOUR, sources=nm,
                  parameters=[f"{k}: n = {v.n}" for k, v in pearson.items()])
        for map_method, v in pearson.items():
            g.add(PEARSON_R, v.r, "1", PEARSON, f"r T/N vs ALP ({map_method})")
        groups.append(g)
    return groups


def summary_section(groups: Sequence[Group]) -> list[str]:
    out = ["99mTc-MAA SPECT: uptake, lung shunt, partition model (Y-90)", ""]
    tumours = [g for g in groups if g.identifier.startswith(TUMOUR_PREFIX)]
    alp = PARAMETER_CONCEPTS["ALP"]
    if tumours:
        out.append(f"{'tumour':<10}{'vol mL':>8}{'T/N':>8}{'T/N raw':>8}{'dose Gy':>8}"
                   f"{'ALP':>8}{'PVP':>8}{'HPI %':>8}")
        for g in tumours:
            methods = [i.method for i in g.items if i.concept == alp]
            method = MAX_SLOPE if MAX_SLOPE in methods else (methods[0] if methods else None)
            name = g.identifier[len(TUMOUR_PREFIX):][:10]
            out.append(f"{name:<10}{fmt(g.get(VOLUME))}{fmt(g.get(TN_RATIO))}"
                       f"{fmt(g.get(TN_RATIO_UNCORRECTED))}{fmt(g.get(ABSORBED_DOSE))}"
                       f"{fmt(g.get(alp, method))}{fmt(g.get(PARAMETER_CONCEPTS['PVP'], method))}"
                       f"{fmt(g.get(PARAMETER_CONCEPTS['HPI'], method))}")
        out.append("  (T/N partial-volume corrected, T/N raw = plain ratio of means; ALP/PVP in mL/min/100 mL from "
                   "the CT perfusion maps, max slope when available)")
    else:
        out.append("no tumour found")
    by_id = {g.identifier: g for g in groups}
    whole, normal = by_id.get(WHOLE_LIVER), by_id.get(NORMAL_LIVER)
    lungs, act = by_id.get(LUNGS), by_id.get(ACTIVITY_GROUP)
    out.append("")
    if whole:
        out.append(f"whole liver {fmt(whole.get(VOLUME), 0)} mL, overall T/N {fmt(whole.get(TN_RATIO), 0)}")
    if normal:
        out.append(f"normal liver {fmt(normal.get(VOLUME), 0)} mL, dose {fmt(normal.get(ABSORBED_DOSE), 0)} Gy")
    if lungs:
        lsf = next((i for i in lungs.items if i.concept == LSF), None)
        out.append(f"lung shunt fraction {fmt(lsf.value if lsf else None, 0)} %"
                   f" ({lsf.label[5:-1] if lsf else 'not available'})")
        out.append(f"lungs {fmt(lungs.get(MASS), 0)} g, dose {fmt(lungs.get(ABSORBED_DOSE), 0)} Gy")
    if act and act.get(ACTIVITY) is not None:
        label = next(i.label for i in act.items if i.concept == ACTIVITY)
        out.append(f"Y-90 ACTIVITY {fmt(act.get(ACTIVITY), 0)} GBq {label[len('activity '):]}")
        out.append(f"  at normal-liver limit {fmt(act.get(ACTIVITY_NORMAL_LIMIT), 0)} GBq, "
                   f"at lung limit {fmt(act.get(ACTIVITY_LUNG_LIMIT), 0)} GBq")
    else:
        out.append("Y-90 activity: NOT COMPUTED (no lung shunt fraction)")
    corr = by_id.get(CORRELATION_GROUP)
    if corr:
        out.append("; ".join(i.label + " = " + fmt(i.value, 0) for i in corr.items))
    dose = [g for g in groups if g.identifier.startswith(DOSE_PREFIX)]
    if dose:
        activity = by_id.get(DOSE_ACTIVITY)
        used = activity.items[0].label if activity and activity.items else ""
        gbq = fmt(activity.get(DOSE_ACTIVITY_USED) if activity else None, 0)
        out += ["", f"Y-90 DOSE PREDICTED (local deposition) for {gbq} GBq {used[len('activity '):]}",
                f"{'region':<20}{'mL':>8}{'Dmean':>8}{'D50':>8}{'D70':>8}{'D90':>8}   V(Gy) %"]
        for g in dose:
            vs = " ".join(f"{i.label[:-2]}={i.value:.0f}" for i in g.items if i.unit == "%")
            mean = g.get(MEAN_DOSE, LUNG_SHUNT_DOSE) or g.get(MEAN_DOSE)
            out.append(f"{g.identifier[len(DOSE_PREFIX):][:20]:<20}{fmt(g.get(VOLUME))}{fmt(mean)}"
                       f"{fmt(g.get(MEDIAN_DOSE))}{fmt(g.get(DOSE_D70))}{fmt(g.get(DOSE_D90))}   {vs}")
        out.append("  (Gy; lungs: 49.67 x A x LSF / CT lung mass; flags below are warnings, not prescriptions)")
    return out
