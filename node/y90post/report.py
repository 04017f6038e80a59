"""The post-therapy dosimetry report: predicted vs delivered per region (its own SR, in the post-therapy study)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydicom import Dataset

from node.report.codes import (
    ABOVE_RANGE,
    ADMINISTERED_ACTIVITY,
    BELOW_RANGE,
    DOSE_D70,
    DOSE_DIFFERENCE,
    LIVER,
    LUNG,
    MEAN_DOSE,
    NORMALITY,
    RATIO,
    TUMOUR,
)
from node.report.groups import Group, private, region_name
from node.report.summary import Column, Note, SummaryBlock, Table, value_text
from node.workflow import WorkflowResult
from node.y90post.measurements import Y90PostMeasurements

__all__ = ["PROCEDURE", "report_groups", "summary_section", "GROUP_PREFIX"]

PROCEDURE = private("LN-P-Y90POST", "Y-90 post-therapy dosimetry, delivered vs predicted")
PREDICTED = private("LN-M-Y90PRED", "Y-90 LDM dose predicted from 99mTc-MAA SPECT/CT")
DELIVERED = private("LN-M-Y90DEL", "Y-90 LDM dose from post-therapy imaging")
DELIVERED_VS_PREDICTED = private("LN-M-Y90CMP", "Delivered vs predicted, registered CT-CT")
#: the qualitative evaluation of a mismatch (delivered / predicted beyond the configured margin); no standard code
AGREEMENT = private("LN-Y90AGREE", "Delivered vs predicted dose agreement")
GROUP_PREFIX = "Y-90 delivered vs predicted, "
SOURCE_GROUP = "Y-90 post-therapy image"


def report_groups(result: WorkflowResult[Y90PostMeasurements], sources: Mapping[str, Sequence[Dataset]]
                  ) -> list[Group]:
    m = result.measurements
    image = list(sources.get("y90-post", []))[:1]
    reg = m.registration
    params = [f"delivered dose = {m.dose_method}", f"source = {m.source.activity_method}",
              f"administered (GBq) = {m.source.administered_gbq} ({m.source.administered_source})",
              f"predicted for (GBq) = {m.predicted_activity_gbq}, scaled to the administered {m.compared_at_gbq}",
              f"registration = {reg.method}; translation (mm) = {reg.translation_mm}, rotation (deg) = "
              f"{reg.rotation_deg}, body Dice = {reg.body_dice}",
              f"mismatch flagged beyond |delivered/predicted - 1| > {m.mismatch_warning:g}"]
    groups = []
    for name, r in m.regions.items():
        if not r.compared:
            continue
        g = Group("y90post", f"{GROUP_PREFIX}{region_name(name)}", LUNG if r.kind == "lungs" else LIVER,
                  TUMOUR if r.kind == "tumour" else None, sources=image, parameters=params)
        g.add(MEAN_DOSE, r.predicted_mean_gy, "Gy", PREDICTED, "Dmean predicted")
        g.add(MEAN_DOSE, r.delivered_mean_gy, "Gy", DELIVERED, "Dmean delivered")
        g.add(DOSE_DIFFERENCE, r.mean_difference_gy, "Gy", DELIVERED_VS_PREDICTED, "Dmean delivered - predicted")
        g.add(RATIO, r.mean_ratio, "{ratio}", DELIVERED_VS_PREDICTED, "Dmean delivered / predicted")
        g.add(DOSE_D70, r.predicted_d70_gy, "Gy", PREDICTED, "D70 predicted")
        g.add(DOSE_D70, r.delivered_d70_gy, "Gy", DELIVERED, "D70 delivered")
        g.add(DOSE_DIFFERENCE, r.d70_difference_gy, "Gy", DELIVERED_VS_PREDICTED, "D70 delivered - predicted")
        g.add(RATIO, r.d70_ratio, "{ratio}", DELIVERED_VS_PREDICTED, "D70 delivered / predicted")
        if r.mean_ratio is not None and abs(r.mean_ratio - 1.0) > m.mismatch_warning:
            g.evaluations.append((AGREEMENT, BELOW_RANGE if r.mean_ratio < 1 else ABOVE_RANGE))
        for f in m.flags:
            if f.quantity.startswith(f"tumour {name} ") or (r.kind == "non-tumoural liver"
                                                           and f.quantity.startswith("non-tumoural")):
                g.evaluations.append((NORMALITY, BELOW_RANGE if f.quantity.startswith("tumour") else ABOVE_RANGE))
                g.parameters = g.parameters + [f"flag: {f.message}"]
        groups.append(g)
    g = Group("y90post", SOURCE_GROUP, LIVER, None, sources=image, parameters=params)
    g.add(ADMINISTERED_ACTIVITY, m.source.administered_gbq, "GBq", DELIVERED,
          f"administered ({m.source.administered_source})")
    groups.append(g)
    return groups


def summary_section(groups: Sequence[Group]) -> list[SummaryBlock]:
    """Delivered vs predicted per region, as a table (Gy; ratios without unit)."""
    rows: list[tuple[str, ...]] = []
    for g in groups:
        if not g.identifier.startswith(GROUP_PREFIX):
            continue
        cells = [value_text(g.item(concept, method)) for concept, method in (
            (MEAN_DOSE, PREDICTED), (MEAN_DOSE, DELIVERED), (DOSE_DIFFERENCE, None), (RATIO, None),
            (DOSE_D70, PREDICTED), (DOSE_D70, DELIVERED))]
        differences = [i for i in g.items if i.concept == DOSE_DIFFERENCE]
        ratios = [i for i in g.items if i.concept == RATIO]
        cells[2], cells[3] = (value_text(differences[0]) if differences else "-",
                              value_text(ratios[0]) if ratios else "-")
        cells += [value_text(differences[1]) if len(differences) > 1 else "-",
                  value_text(ratios[1]) if len(ratios) > 1 else "-"]
        flagged = any(e[0] == AGREEMENT for e in g.evaluations)
        rows.append((region_name(g.identifier[len(GROUP_PREFIX):]),
                     *(("!" + c if flagged and n == 3 else c) for n, c in enumerate(cells))))
    if not rows:
        return [Note("No region inside the post-therapy field of view: nothing compared.", flag=True)]
    return [Table((Column("region", align="l", width=1.5), Column("Dmean P", "Gy"), Column("Dmean D", "Gy"),
                   Column("D − P", "Gy"), Column("D / P"), Column("D70 P", "Gy"), Column("D70 D", "Gy"),
                   Column("D − P", "Gy"), Column("D / P")), tuple(rows),
                  title="Dose delivered (D) vs predicted from the MAA (P)",
                  notes=("Both doses by local deposition in the MAA's regions; D − P < 0: the MAA over-predicted "
                         "the region. A flagged ratio differs from 1 by more than the configured margin.",))]
