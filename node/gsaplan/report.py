"""The GSA plan evaluation's report (its own SR, in the planning study): FLV20Gy, F20Gy, doses per structure."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom import Dataset

from node.gsaplan.measurements import GsaPlanMeasurements
from node.report.codes import (
    ABOVE_RANGE,
    DOSE_D70,
    DOSE_D90,
    LIVER,
    MEAN_DOSE,
    MEDIAN_DOSE,
    NORMALITY,
    REGION_VOLUME,
    VOLUME,
    volume_receiving,
)
from node.report.groups import Group, private, region_name
from node.report.summary import CM3, Column, Note, SummaryBlock, Table, value_text
from node.workflow import WorkflowResult

__all__ = ["PROCEDURE", "report_groups", "summary_section", "GROUP_PREFIX", "FUNCTION_GROUP"]

PROCEDURE = private("LN-P-GSAPLAN", "Functional-liver dose of a GSA-guided RT plan")
PLAN_DOSE = private("LN-M-PLANDOSE", "Plan RT Dose at planning-CT voxel centres")
F_PERCENT = private("LN-FXGY", "Percent of liver function receiving the threshold dose")
FUNCTIONAL_MEAN = private("LN-FMEAN", "Function-weighted mean liver dose")
GSA_WEIGHTED = private("LN-M-GSAW", "Liver DVH weighted by registered GSA counts")
GROUP_PREFIX = "Plan dose, "
FUNCTION_GROUP = "Plan dose, functional liver (GSA)"


def report_groups(result: WorkflowResult[GsaPlanMeasurements], sources: Mapping[str, Sequence[Dataset]]
                  ) -> list[Group]:
    m = result.measurements
    dose = list(sources.get("plan-dose", []))[:1]
    t = m.threshold_gy
    params = [f"method = {m.method}", f"RT Dose = {m.dose.description} ({m.dose.manufacturer}), {m.dose.dose_type}, "
              f"summation {m.dose.summation_type}", f"plan = {m.dose.plan_label or 'not received'}",
              f"threshold (Gy) = {t:g}", f"FLV warning above (%) = {m.flv_warning_percent:g}",
              f"function = {m.counts}"]
    groups = []
    for name, r in m.regions.items():
        g = Group("gsaplan", f"{GROUP_PREFIX}{region_name(name)}", LIVER, None, sources=dose, parameters=params)
        g.add(VOLUME, r.volume_ml, "mL", REGION_VOLUME, "volume")
        g.add(MEAN_DOSE, r.mean_gy, "Gy", PLAN_DOSE, "Dmean")
        g.add(MEDIAN_DOSE, r.d50_gy, "Gy", PLAN_DOSE, "D50")
        g.add(DOSE_D70, r.d70_gy, "Gy", PLAN_DOSE, "D70")
        g.add(DOSE_D90, r.d90_gy, "Gy", PLAN_DOSE, "D90")
        g.add(volume_receiving(t), r.v_percent.get(f"{t:g}"), "%", PLAN_DOSE,
              f"FLV{t:g}Gy" if name == "FLS" else f"V{t:g}Gy")
        if name == "FLS" and m.flv_percent > m.flv_warning_percent:
            g.evaluations.append((NORMALITY, ABOVE_RANGE))
        groups.append(g)
    g = Group("gsaplan", FUNCTION_GROUP, LIVER, None, sources=dose, parameters=params)
    g.add(F_PERCENT, m.f_percent, "%", GSA_WEIGHTED, f"F{t:g}Gy")
    g.add(FUNCTIONAL_MEAN, m.functional_mean_gy, "Gy", GSA_WEIGHTED, "GSA-weighted mean liver dose")
    groups.append(g)
    return groups


def summary_section(groups: Sequence[Group]) -> list[SummaryBlock]:
    """The plan's dose per GSA structure, as a table, and the functional-liver figures."""
    rows: list[tuple[str, ...]] = []
    blocks: list[SummaryBlock] = []
    threshold = ""
    for g in groups:
        if g.identifier == FUNCTION_GROUP:
            f = g.item(F_PERCENT)
            mean = g.item(FUNCTIONAL_MEAN)
            blocks.append(Note(f"{f.label if f else 'F'} = {value_text(f)} % of the liver function; GSA-weighted "
                               f"mean liver dose {value_text(mean)} Gy."))
            continue
        v = next((i for i in g.items if i.unit == "%"), None)
        flagged = any(e[0] == NORMALITY for e in g.evaluations)
        if v is not None:
            threshold = v.label.removeprefix("FLV").removeprefix("V")
        rows.append((region_name(g.identifier[len(GROUP_PREFIX):]), value_text(g.item(VOLUME)),
                     *(value_text(g.item(c)) for c in (MEAN_DOSE, MEDIAN_DOSE, DOSE_D70, DOSE_D90)),
                     ("!" if flagged else "") + value_text(v)))
    table = Table((Column("structure", align="l", width=1.4), Column("volume", CM3), Column("Dmean", "Gy"),
                   Column("D50", "Gy"), Column("D70", "Gy"), Column("D90", "Gy"),
                   Column(f"V{threshold.replace('Gy', ' Gy')}" if threshold else "V", "% of volume")),
                  tuple(rows), title="Dose of the returned plan in the GSA structures",
                  notes=("FLS row: FLV, the share of the functional liver receiving the threshold dose (flagged "
                         "above the configured warning).",))
    return [table, *blocks] if rows else blocks
