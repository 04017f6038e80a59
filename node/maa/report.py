"""The MAA workflow's part of the case report: tumours, normal and whole liver, lungs, activity, correlation.

Region names are those of every other output: a tumour found on the MAA SPECT that is a lesion of the
perfusion RTSTRUCT carries that lesion's name (node.maa.correlation.lesion_names), so its perfusion group and
its MAA group in the SR share one Tracking UID.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom import Dataset

from node.dose.records import RegionDoseRecord
from node.maa.correlation import MIN_POINTS
from node.maa.measurements import MaaMeasurements, PredictedDoseRecord
from node.maa.partition import TISSUE_DENSITY_G_PER_ML, WHY_TWO_DOSES
from node.perfusion.reference import method_label
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
    MAX_SLOPE,
    MEAN_DOSE,
    MEDIAN_DOSE,
    METHOD_CODES,
    MIN_DOSE,
    NORMALITY,
    PARAMETER_CONCEPTS,
    PERFUSION_UNITS,
    REGION_VOLUME,
    TUMOUR,
    VOLUME,
    volume_receiving,
)
from node.report.groups import Coded, Group, private, region_name
from node.report.summary import CM3, NOT_MEASURABLE_TEXT, Column, Note, SummaryBlock, Table, number, value_text
from node.workflow import WorkflowResult

__all__ = ["PROCEDURE", "report_groups", "summary_section"]

PROCEDURE = private("LN-P-MAA", "MAA SPECT planning of Y-90 radioembolization")

TN_RATIO = private("LN-TNR", "Tumor to normal liver uptake ratio")
TN_RATIO_UNCORRECTED = private("LN-TNR-U", "Tumor to normal liver uptake ratio, uncorrected")
LSF = private("LN-LSF", "Lung shunt fraction")
#: The partition model's result is the largest activity within the dose limits, not an administered or
#: prescribed activity (DCM "Administered activity" would say otherwise): its own concept.
ACTIVITY = private("LN-Y90-A", "Maximum Y-90 activity within the dose limits")
ACTIVITY_NORMAL_LIMIT = private("LN-Y90-AN", "Y-90 activity at the normal liver dose limit")
ACTIVITY_LUNG_LIMIT = private("LN-Y90-AL", "Y-90 activity at the lung dose limit")
PEARSON_R = private("LN-R-TN-ALP", "Correlation coefficient T/N vs ALP")

TN_GTM = private("LN-M-TNGTM", "Counts/mL ratio, PVC by transfer matrix in tumour cells")
TN_PLAIN = private("LN-M-TNRAW", "Ratio of mean counts inside contours, no PVC")
MASS_DENSITY = private("LN-M-MASS", "Region volume x tissue density")
PARTITION_MODEL = private("LN-M-PART", "Partition-model mean (Ho 1996, uniform uptake per compartment)")
LSF_SPECT = private("LN-M-LSFS", "SPECT/CT lung and liver counts")
LSF_CONFIG = private("LN-M-LSFC", "Configured value (e.g. from planar imaging)")
PEARSON = private("LN-M-PEARSON", "Pearson correlation over tumours")

SUFFIX = " (MAA SPECT)"
ACTIVITY_GROUP, CORRELATION_GROUP = "Y-90 activity (partition model)", "T/N vs ALP (MAA SPECT, CT perfusion)"
DOSE_PREFIX = "Y-90 dose predicted, "
DOSE_ACTIVITY = "Y-90 dose predicted: activity"
LDM = private("LN-M-LDM", "Local deposition voxel dose, Y-90 49.67 Gy kg/GBq, MAA SPECT/CT")
LUNG_SHUNT_DOSE = private("LN-M-LUNGM", "49.67 x A x LSF / CT lung mass")
DOSE_ACTIVITY_USED = private("LN-Y90-AD", "Y-90 activity of the predicted dose")


def _tumour_source(m: MaaMeasurements) -> str:
    if m.regions.tumour_source == "RTSTRUCT":
        return "MAA SPECT/CT: RTSTRUCT"
    named = m.regions.automatic.get("names") if isinstance(m.regions.automatic, dict) else None
    return "MAA SPECT: hot region" + (", named after the perfusion RTSTRUCT lesion" if named else "")


#: the dose regions under the names every output of the case gives them (tumours keep their own names), so their
#: SR groups share the region's tracking UID. The dose's whole liver is the MAA liver contour carried to the CT:
#: no region name, so the summary does not list it again among the sources of a liver contour.
_DOSE_REGIONS = {"non-tumoural liver": "Normal liver", "lungs": "Lungs"}
DOSE_REGION_SOURCE = "MAA SPECT/CT: regions carried to its CT (dose grid)"


def _dose_region(name: str, kind: str) -> str:
    """The region name of a dose region: the tumour's own name, else the case-wide name of the organ part."""
    return name if kind == "tumour" else _DOSE_REGIONS.get(kind, "")


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
              f"structure grid = {pd.structure_grid}", WHY_TWO_DOSES]
    groups = []
    for name, r in pd.regions.items():
        site = LUNG if r.kind == "lungs" else LIVER
        g = Group("maa", f"{DOSE_PREFIX}{region_name(name)}", site, TUMOUR if r.kind == "tumour" else None, sources=nm,
                  parameters=params, region=_dose_region(name, r.kind), region_source=DOSE_REGION_SOURCE)
        _dose_items(g, r, LDM)
        if r.kind == "lungs" and pd.lungs is not None:
            g.add(MEAN_DOSE, pd.lungs.mean_gy, "Gy", LUNG_SHUNT_DOSE, "Dmean (A x LSF / lung mass)")
        for f in pd.flags:
            if _flag_region(f.quantity) == name:
                g.evaluations.append((NORMALITY, BELOW_RANGE if f.quantity.startswith("tumour") else ABOVE_RANGE))
                g.parameters = g.parameters + [f"flag: {f.message}"]
        groups.append(g)
    if "lungs" not in pd.regions and pd.lungs is not None and pd.lungs.mean_gy is not None:
        g = Group("maa", f"{DOSE_PREFIX}{region_name('lungs')}", LUNG, None, sources=nm,
                  parameters=params + [pd.lungs.method], region="Lungs", region_source="MAA SPECT/CT CT: lungs")
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
    g.add(MEAN_DOSE, r.mean_gy, "Gy", method, "voxel Dmean (local deposition)")
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
    plan_params = [f"model = {plan.model}", f"sphere type = {plan.sphere_type or None}",
                   f"normal liver limit (Gy) = {plan.normal_liver_limit_gy}",
                   f"lung limit (Gy) = {plan.lung_limit_gy}", f"limited by = {plan.limited_by or None}",
                   f"limits from {plan.limits_basis or None}",
                   f"lung mass = {plan.lung_mass_source or None}",
                   f"densities (g/mL) = {plan.densities_g_per_ml or None}",
                   "the activity is the largest within the limits: a model figure, not a prescription",
                   WHY_TWO_DOSES] + ([] if plan.computed else [f"not computed: {plan.reason}"])
    rows = {r.tumour: r for r in corr.rows} if corr is not None else {}
    groups = []
    for name, t in up.tumours.items():
        g = Group("maa", f"{name}{SUFFIX}", LIVER, TUMOUR, sources=nm, parameters=uptake_params + plan_params,
                  region=name, region_source=_tumour_source(m))
        g.add(TN_RATIO, t.tn_ratio, "{ratio}", TN_GTM, "T/N", decimals=1)
        g.add(TN_RATIO_UNCORRECTED, t.tn_ratio_uncorrected, "{ratio}", TN_PLAIN, "T/N uncorrected", decimals=1)
        g.add(VOLUME, t.volume_ml, "mL", REGION_VOLUME, "volume")
        g.add(MASS, t.volume_ml, "g", MASS_DENSITY, "mass", scale=TISSUE_DENSITY_G_PER_ML)
        g.add(ABSORBED_DOSE, plan.tumour_doses_gy.get(name), "Gy", PARTITION_MODEL, "partition-model mean dose",
              decimals=0)
        row = rows.get(name)
        for map_method, values in (row.perfusion.items() if row is not None else ()):
            method = METHOD_CODES.get(map_method.lower(), MAX_SLOPE)
            label = method_label(map_method)
            for param, value in (("ALP", values.ALP), ("PVP", values.PVP), ("HPI", values.HPI)):
                g.add(PARAMETER_CONCEPTS[param], value, PERFUSION_UNITS[param], method, f"{param} mean ({label})",
                      "mean", not_measurable=values.not_measurable.get(param))
        groups.append(g)
    g = Group("maa", f"{region_name('normal liver')}{SUFFIX}", LIVER, None, sources=nm,
              parameters=uptake_params + plan_params, region="Normal liver",
              region_source="MAA SPECT: liver minus tumours")
    g.add(VOLUME, up.normal_liver_ml, "mL", REGION_VOLUME, "volume")
    g.add(MASS, plan.normal_liver_mass_kg, "g", MASS_DENSITY, "mass", scale=1000.0)
    g.add(ABSORBED_DOSE, plan.normal_liver_dose_gy, "Gy", PARTITION_MODEL, "partition-model mean dose", decimals=0)
    groups.append(g)
    liver_source = ("MAA SPECT/CT: RTSTRUCT" if m.regions.liver_source == "RTSTRUCT"
                    else "MAA SPECT: automatic from the uptake")
    whole = Group("maa", f"Liver{SUFFIX}", LIVER, None, sources=nm, parameters=list(uptake_params), region="Liver",
                  region_source=liver_source)
    whole.add(VOLUME, up.liver_ml, "mL", REGION_VOLUME, "volume")
    whole.add(TN_RATIO, up.overall_tn_ratio, "{ratio}", TN_GTM, "overall T/N", decimals=1)
    groups.append(whole)
    g = Group("maa", f"Lungs{SUFFIX}", LUNG, None, sources=nm,
              parameters=[f"LSF source = {shunt.source}", f"reason = {shunt.reason}",
                          f"method = {shunt.method}"] + plan_params, region="Lungs",
              region_source="MAA SPECT/CT CT: lungs")
    g.add(LSF, shunt.lung_shunt_fraction, "%", LSF_SPECT if shunt.source == "measured on SPECT" else LSF_CONFIG,
          f"LSF ({shunt.source})", scale=100.0)
    g.add(VOLUME, shunt.lung_volume_ml, "mL", REGION_VOLUME, "CT lung volume", decimals=0)
    g.add(MASS, plan.lung_mass_kg, "g", MASS_DENSITY, "mass", scale=1000.0)
    g.add(ABSORBED_DOSE, plan.lung_dose_gy, "Gy", PARTITION_MODEL, "partition-model mean dose")
    groups.append(g)
    g = Group("maa", ACTIVITY_GROUP, LIVER, None, sources=nm, parameters=plan_params)
    g.add(ACTIVITY, plan.activity_gbq, "GBq", PARTITION_MODEL,
          f"maximum activity (limited by {plan.limited_by or None})")
    g.add(ACTIVITY_NORMAL_LIMIT, plan.activity_normal_liver_limit_gbq, "GBq", PARTITION_MODEL,
          "activity at normal-liver limit")
    g.add(ACTIVITY_LUNG_LIMIT, plan.activity_lung_limit_gbq, "GBq", PARTITION_MODEL, "activity at lung limit")
    groups.append(g)
    if m.predicted_dose is not None and m.predicted_dose.computed:
        groups += dose_groups(m.predicted_dose, nm)
    pearson = corr.pearson_r_tn_vs_alp if corr is not None else {}
    if pearson:
        # r only from MIN_POINTS tumours on (node.maa.correlation); the summary says so when there is none
        g = Group("maa", CORRELATION_GROUP, LIVER, TUMOUR, sources=nm,
                  parameters=[f"{method_label(k)}: n = {v.n}" + ("" if v.r is not None and v.n >= MIN_POINTS else
                                                    f" tumours, below {MIN_POINTS}: no coefficient")
                              for k, v in pearson.items()])
        for map_method, v in pearson.items():
            g.add(PEARSON_R, v.r if v.n >= MIN_POINTS else None, "1", PEARSON,
                  f"r T/N vs ALP ({method_label(map_method)})")
        if g.items:
            groups.append(g)
        else:
            whole.parameters += [f"T/N vs ALP correlation: {p}" for p in g.parameters]
    return groups


def _g(text: str | None) -> str:
    """A number recorded as text ("70.0") as people write it ("70")."""
    try:
        return f"{float(text or ''):g}"
    except ValueError:
        return text or "?"


def summary_section(groups: Sequence[Group]) -> list[SummaryBlock]:
    blocks: list[SummaryBlock] = []
    dose_ids = {g.identifier for g in groups if g.identifier.startswith(DOSE_PREFIX)}  # the dose: its own table
    tumours = [g for g in groups if g.finding == TUMOUR and g.region and g.identifier not in dose_ids]
    alp, pvp, hpi = (PARAMETER_CONCEPTS[p] for p in ("ALP", "PVP", "HPI"))
    if tumours:
        rows: list[tuple[str, ...]] = []
        for g in tumours:
            methods = [i.method for i in g.items if i.concept == alp]
            method = MAX_SLOPE if MAX_SLOPE in methods else (methods[0] if methods else None)
            vol, tn, raw, dose = (g.item(c) for c in (VOLUME, TN_RATIO, TN_RATIO_UNCORRECTED, ABSORBED_DOSE))

            def cell(concept: Coded, g: Group = g, method: Coded | None = method) -> str:
                item = g.item(concept, method) if method is not None else None
                return "-" if item is None else value_text(item)  # n.m. where the CT perfusion says so

            rows.append((g.region, number(vol.value if vol else None, "cm3"),
                         number(tn.value if tn else None, "{ratio}", 1),
                         number(raw.value if raw else None, "{ratio}", 1),
                         number(dose.value if dose else None, "Gy", 0), cell(alp), cell(pvp), cell(hpi)))
        blocks.append(Table(
            (Column("tumour", align="l", width=0.7), Column("volume", CM3, width=0.9), Column("T/N", width=0.6),
             Column("T/N uncorr.", width=1.1), Column("partition mean", "Gy", width=1.4),
             Column("ALP map", "mL/min/100 mL", width=1.5), Column("PVP map", "mL/min/100 mL", width=1.5),
             Column("HPI map", "%")), tuple(rows), title="Tumours",
            notes=("T/N corrected for partial volume (uncorrected: plain ratio of means); partition mean: the "
                   "partition-model mean dose at the maximum activity below; ALP/PVP/HPI map: mean of the CT "
                   "perfusion maps over the tumour as found on the MAA SPECT (maximum slope where available), not "
                   "the CT perfusion's region value."
                   + (" n.m.: the CT perfusion reports the lesion's value as not measurable (its section says why)."
                      if any(c.endswith(NOT_MEASURABLE_TEXT) for r in rows for c in r) else ""),)))
    else:
        blocks.append(Note("No tumour found on the MAA SPECT."))
    by_region = {g.region: g for g in groups if g.region and g.identifier not in dose_ids}
    rows = []
    for region in ("Normal liver", "Lungs"):
        found = by_region.get(region)
        if found is None:
            continue
        vol, mass, dose = found.item(VOLUME), found.item(MASS), found.item(ABSORBED_DOSE)
        rows.append((region, number(vol.value if vol else None, "cm3", 0), number(mass.value if mass else None, "g"),
                     number(dose.value if dose else None, "Gy", dose.decimals if dose else None)))
    if rows:
        blocks.append(Table((Column("region", align="l", width=1.6), Column("volume", CM3), Column("mass", "g"),
                             Column("partition mean", "Gy")), tuple(rows), title="Normal liver and lungs"))
    lungs = by_region.get("Lungs")
    lsf = next((i for i in lungs.items if i.concept == LSF), None) if lungs else None
    if lsf is not None:
        blocks.append(Note(f"Lung shunt fraction {number(lsf.value, '%')} % ({lsf.label[5:-1]})."))
    else:
        blocks.append(Note("Lung shunt fraction not available.", flag=True))
    act = next((g for g in groups if g.identifier == ACTIVITY_GROUP), None)
    params = {p.split(" = ")[0]: p.split(" = ", 1)[1] for p in (act.parameters if act else []) if " = " in p}
    activity = act.item(ACTIVITY) if act else None
    if act is not None and activity is not None:
        sphere = params.get("sphere type", "None")
        limited = params.get("limited by", "None")
        limits = [f"{what} \u2264 {_g(params.get(key))} Gy" for what, key in
                  (("normal liver", "normal liver limit (Gy)"), ("lungs", "lung limit (Gy)"))]
        basis = next((p[len("limits from "):] for p in act.parameters if p.startswith("limits from ")), "")
        blocks.append(Note(f"Partition model ({'Y-90 ' + sphere + ' microspheres' if sphere != 'None' else 'Y-90'}; "
                           f"{', '.join(limits)}" + (f"; limits from {basis}" if basis else "") + "):"))
        blocks.append(Note(f"maximum activity within these limits {number(activity.value, 'GBq')} GBq", key=True))
        at_lung = act.item(ACTIVITY_LUNG_LIMIT)
        lung_alone = f"; the lung limit alone would allow {number(at_lung.value, 'GBq')} GBq" if at_lung else ""
        blocks.append(Note(f"reached first: {limited} limit{lung_alone}. A model maximum for the physicist's "
                           "plan, not a prescription."))
    else:
        why = next((p[len("not computed: "):] for p in (act.parameters if act else [])
                    if p.startswith("not computed: ")), "no lung shunt fraction")
        blocks.append(Note(f"Partition model not computed ({why}).", flag=True))
    corr = next((g for g in groups if g.identifier == CORRELATION_GROUP), None)
    texts = []
    recorded = (corr.parameters if corr is not None else
                [p.split(": ", 1)[1] for g in groups for p in g.parameters if p.startswith("T/N vs ALP correlation: ")])
    for text in recorded:
        map_method, _, rest = text.partition(": n = ")
        n = rest.split()[0] if rest else "?"
        r = next((i for i in corr.items if i.label.endswith(f"({map_method})")), None) if corr is not None else None
        texts.append(f"{map_method}: r = {number(r.value, '1')} (n = {n})" if r is not None
                     else f"{map_method}: n = {n} {'tumour' if n == '1' else 'tumours'}, too few for a correlation "
                          f"coefficient (needs {MIN_POINTS})")
    if texts:
        blocks.append(Note("T/N vs tumour ALP: " + "; ".join(texts) + "."))
    blocks += _dose_blocks(groups)
    return blocks


def _dose_blocks(groups: Sequence[Group]) -> list[SummaryBlock]:
    """The predicted Y-90 dose: one row per region (DVH figures); its safety flags are the section's warnings."""
    dose = [g for g in groups if g.identifier.startswith(DOSE_PREFIX)]
    if not dose:
        return []
    activity = next((g for g in groups if g.identifier == DOSE_ACTIVITY), None)
    used = activity.item(DOSE_ACTIVITY_USED) if activity is not None else None
    what = f"{number(used.value, 'GBq')} GBq" if used is not None else "-"
    # the activity's source ("(partition model (limited by ...))") under the table: the title stays one line
    source = used.label[len("activity "):].strip().removeprefix("(").removesuffix(")") if used is not None else ""
    rows = []
    for g in dose:
        mean = g.item(MEAN_DOSE, LUNG_SHUNT_DOSE) or g.item(MEAN_DOSE)
        vs = ", ".join(f"{i.label[:-2]} {number(i.value, '%', 0)}" for i in g.items if i.unit == "%")
        # no volume column: each region's volume is stated once, in the tables above (the DVH's own, on the CT
        # grid, is in the SR and on the DVH page)
        rows.append((region_name(g.region or g.identifier[len(DOSE_PREFIX):]), value_text(mean),
                     *(value_text(g.item(c)) for c in (MEDIAN_DOSE, DOSE_D70, DOSE_D90)), vs or "-"))
    return [Table(
        (Column("region", align="l", width=1.6), Column("voxel Dmean", "Gy"), Column("D50", "Gy"),
         Column("D70", "Gy"), Column("D90", "Gy"), Column("V (Gy)", "% of volume", align="l", width=2.2)),
        tuple(rows), title=f"Y-90 dose predicted (local deposition) at {what}",
        notes=((f"Activity: {source}. " if source else "") + "Lungs: 49.67 x A x LSF / CT lung mass (the partition "
               "model's lung mass too). Safety flags (warnings below) are warnings, not prescriptions.",
               WHY_TWO_DOSES[0].upper() + WHY_TWO_DOSES[1:] + "."))]
