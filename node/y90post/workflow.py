"""The post-therapy dosimetry workflow: a Y-90 PET/CT or bremsstrahlung SPECT/CT of a patient whose case had MAA
planning -> delivered dose vs the dose the MAA predicted, in its own report (the post-therapy visit's study)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

from node.configtable import ConfigTable
from node.index import SeriesRow
from node.maa.reference import MaaResult
from node.maa.workflow import MAA
from node.report.groups import Group
from node.report.summary import SummaryBlock
from node.selection import choose_spect_ct
from node.seriescontent import emission_problem
from node.workflow import (
    CaseSeries,
    CommonSettings,
    InputSelection,
    RoleContext,
    RoleRule,
    RunContext,
    TruthCheck,
    Workflow,
    WorkflowResult,
    newest,
)
from node.y90post import qa, report
from node.y90post.errors import PostTherapyInputError
from node.y90post.measurements import Y90PostMeasurements
from node.y90post.settings import Y90PostSettings, parse_settings

__all__ = ["Y90POST", "Y90PostWorkflow", "is_y90_code", "names_y90"]

#: SNOMED CT: ^90^Yttrium (the radionuclide), Yttrium^90^ microspheres (the radiopharmaceutical, current and
#: inactive concept).
Y90_RADIONUCLIDE_CODES = frozenset({"14691008"})
Y90_RADIOPHARMACEUTICAL_CODES = frozenset({"764678003", "409105003"})
_Y90_WORDS = ("Y-90", "Y90", "90Y", "YTTRIUM", "SIR-SPHERES", "SIRSPHERES", "THERASPHERE")

IMAGE, IMAGE_CT = "post-therapy image", "post-therapy CT"


def _y90_by_code(series: SeriesRow) -> bool:
    return (series.radionuclide_code.strip() in Y90_RADIONUCLIDE_CODES
            or series.radiopharmaceutical_code.strip() in Y90_RADIOPHARMACEUTICAL_CODES)


def _y90_by_text(series: SeriesRow) -> bool:
    text = series.radiopharmaceutical.upper().replace("^", "").replace(" ", "")
    return any(w.replace(" ", "") in text for w in _Y90_WORDS)


def _volume(series: SeriesRow) -> bool:
    return emission_problem(series.modality, series.sop_class_uid, series.content) is None


def is_y90_code(series: SeriesRow, _ctx: RoleContext) -> bool:
    """A reconstructed PET or SPECT volume whose radionuclide or radiopharmaceutical code is Y-90."""
    return series.modality in ("PT", "NM") and _y90_by_code(series) and _volume(series)


def names_y90(series: SeriesRow, _ctx: RoleContext) -> bool:
    """A reconstructed PET or SPECT volume whose radiopharmaceutical's free text names Y-90 (or a Y-90 microsphere
    product)."""
    return series.modality in ("PT", "NM") and _y90_by_text(series) and _volume(series)


def _tracer(series: SeriesRow) -> str:
    return " / ".join(v for v in (series.radionuclide_code, series.radiopharmaceutical_code,
                                  series.radiopharmaceutical) if v) or "none"


def _why(series: SeriesRow, _ctx: RoleContext) -> str:
    kind = "Y-90 PET" if series.modality == "PT" else "Y-90 bremsstrahlung SPECT"
    volume = "PET volume" if series.modality == "PT" else "NM SPECT"
    return (f"reconstructed {volume} ({series.content.describe_stack()}) whose radionuclide / radiopharmaceutical "
            f"({_tracer(series)}) is Y-90: a post-therapy {kind}")


def _why_not(series: SeriesRow, _ctx: RoleContext) -> str | None:
    """For PT and NM series: why not a post-therapy Y-90 image (the tracer, else what the series holds)."""
    if series.modality not in ("PT", "NM"):
        return None
    if not (_y90_by_code(series) or _y90_by_text(series)):
        return f"{series.modality} whose radionuclide / radiopharmaceutical ({_tracer(series)}) is not Y-90"
    problem = emission_problem(series.modality, series.sop_class_uid, series.content)
    return f"Y-90 {series.modality}, but {problem}" if problem is not None else None


class Y90PostWorkflow(Workflow[Y90PostSettings, Y90PostMeasurements]):
    name = "y90post"
    title = "Y-90 post-therapy dose"  # delivered (post-therapy imaging) vs predicted (MAA)
    procedure = report.PROCEDURE
    needs = ("y90-post", "spect-maa")  # the post-therapy image, and the MAA planning it is compared with
    uses = ("spect-ct",)
    depends_on = (MAA.name,)  # the predicted dose, its regions and the MAA CT
    tracers = ("Y-90 microspheres",)
    role_rules = (
        RoleRule("y90-post", "reconstructed PET or SPECT volume whose radionuclide is Y-90 (SNOMED 14691008) or "
                 "radiopharmaceutical Y-90 microspheres (764678003)", is_y90_code, priority=5, explain=_why,
                 why_not=_why_not),
        RoleRule("y90-post", "reconstructed PET or SPECT volume whose radiopharmaceutical text names Y-90 / yttrium / "
                 "a Y-90 microsphere product", names_y90, explain=_why, why_not=_why_not),
    )
    output_kinds = ("rtdose",)  # the delivered dose, on the MAA grid
    settings_type = Y90PostSettings
    measurements_type = Y90PostMeasurements
    report_rank = 20
    separate_report = True  # the post-therapy visit: its own SR and page in its own study

    def parse_settings(self, table: ConfigTable, common: CommonSettings) -> Y90PostSettings:
        return parse_settings(table, common)

    def select_inputs(self, case: CaseSeries, settings: Y90PostSettings) -> InputSelection:
        image = newest(case, "y90-post", IMAGE)
        if image is None:
            raise PostTherapyInputError(f"no post-therapy Y-90 image in case {case.case_id}")
        ct = choose_spect_ct(case, image.series, IMAGE_CT) if image.series.frame_of_reference_uid else None
        return InputSelection((image,) + ((ct,) if ct is not None else ()))

    def run(self, ctx: RunContext, settings: Y90PostSettings) -> WorkflowResult[Y90PostMeasurements]:
        from node.y90post.pipeline import run_y90post

        maa = ctx.result_of(MAA)
        if not isinstance(maa, MaaResult):
            raise PostTherapyInputError("the MAA planning of this case gave no result: nothing to compare with")
        if maa.dose is None:
            reason = (maa.measurements.predicted_dose.reason if maa.measurements.predicted_dose is not None
                      else "not asked for ([analysis.maa] predicted_dose = false)")
            raise PostTherapyInputError(f"the MAA planning of this case has no predicted dose ({reason})")
        ct = ctx.read_optional(IMAGE_CT) or []
        return run_y90post(ctx.read(IMAGE), ct, maa.dose, settings)

    def report_groups(self, result: WorkflowResult[Y90PostMeasurements],
                      sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
        return report.report_groups(result, sources)

    def summary_section(self, groups: Sequence[Group]) -> list[SummaryBlock]:
        return report.summary_section(groups)

    def phantom_checks(self, measurements: Y90PostMeasurements, truth: Mapping[str, Any]) -> list[TruthCheck]:
        return qa.phantom_checks(measurements, truth)


#: The workflow object the registry lists.
Y90POST = Y90PostWorkflow()
