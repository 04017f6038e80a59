"""The case's measurements as a DICOM Comprehensive 3D SR: TID 1500 Measurement Report (highdicom).

One TID 1501 group ("Measurements and qualitative evaluations", no geometry) per region or topic, with its
tracking identifier, finding site, the images it was measured on (Source images for measurement group),
the algorithm (name, version, method details as parameters) and its measurements (TID 300: coded name,
value rounded to its precision, UCUM unit, method, derivation for means and SDs; a value's 1-SD noise as its
measurement uncertainty (TID 310) and, where it is not measurable, the qualifier "Value indeterminate" with the
reason among the algorithm's parameters). Groups of one region (a lesion measured by the perfusion and the MAA
workflows) share one Tracking UID: one finding, one name. Referenced images are the SR's evidence; the SR joins
the study of the first evidence item.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import highdicom as hd
from pydicom import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from node import __version__
from node.derived import MANUFACTURER, MANUFACTURER_MODEL_NAME, NOT_FOR_DIAGNOSIS, equipment_kwargs
from node.report import codes as C
from node.report.groups import PRIVATE_SCHEME, Group, Item
from node.workflow import Workflow

logger = logging.getLogger(__name__)

__all__ = ["SR_SERIES_NUMBER", "build_sr", "DEVICE_UID"]

SR_SERIES_NUMBER = 9700
#: Stable observer-device UID of this software (same in every report).
DEVICE_UID = generate_uid(entropy_srcs=["liver-node", "observer-device"])
#: Stable UID of this software's private coding scheme (node.report.groups.PRIVATE_SCHEME).
CODING_SCHEME_UID = generate_uid(entropy_srcs=["liver-node", "coding scheme 99LIVERNODE"])


def _measurement(i: Item) -> hd.sr.Measurement:
    sd = C.rounded(i.uncertainty, i.unit, i.decimals) if i.uncertainty is not None else None
    return hd.sr.Measurement(
        name=C.concept(i.concept), value=C.rounded(i.value, i.unit, i.decimals), unit=C.unit(i.unit),
        method=C.concept(i.method), derivation=C.derivation(i.derivation) if i.derivation else None,
        # TID 310: the value's 1-SD noise as its measurement uncertainty
        properties=hd.sr.MeasurementProperties(upper_measurement_uncertainty=sd, lower_measurement_uncertainty=sd)
        if sd is not None else None,
        # a value that cannot be trusted is qualified (CID 42 "Value indeterminate"), not bare
        qualifier=C.concept(C.NOT_MEASURABLE) if i.not_measurable else None)


def _reason(text: str) -> str:
    """`text` as a reason that starts with "not measurable" (said once)."""
    return text if text.lower().startswith("not measurable") else f"not measurable: {text}"


def _group(g: Group, tracking_uid: str) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    parameters = [p for p in g.parameters if p]
    # every reason a value is not measurable, once: a workflow that states it in its parameters is not repeated
    for i in g.items:
        if i.not_measurable and not any(i.not_measurable in p for p in parameters):
            parameters.append(f"{i.label}: {_reason(i.not_measurable)}")
    algorithm = hd.sr.AlgorithmIdentification(name=f"liver-node {g.workflow}", version=__version__,
                                              parameters=[p[:1024] for p in parameters] or None)
    measurements = [_measurement(i) for i in g.items]
    sources = [hd.sr.SourceImageForMeasurementGroup(referenced_sop_class_uid=ds.SOPClassUID,
                                                    referenced_sop_instance_uid=ds.SOPInstanceUID)
               for ds in g.sources]
    evaluations = [hd.sr.QualitativeEvaluation(name=C.concept(name), value=C.concept(value))
                   for name, value in g.evaluations]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=tracking_uid, identifier=g.identifier[:64]),
        finding_type=C.concept(g.finding) if g.finding else None,
        finding_sites=[hd.sr.FindingSite(anatomic_location=C.concept(g.site))] if g.site else None,
        algorithm_id=algorithm, measurements=measurements, qualitative_evaluations=evaluations or None,
        source_images=sources or None)


def tracking_uids(groups: Sequence[Group]) -> list[str]:
    """A Tracking UID per group: groups of the same region share one (new for every report)."""
    by_region: dict[str, str] = {}
    out = []
    for g in groups:
        if g.region:
            out.append(by_region.setdefault(g.region, hd.UID()))
        else:
            out.append(hd.UID())
    return out


def _identify_private_scheme(sr: Dataset, groups: Sequence[Group]) -> None:
    """Name this software's coding scheme in the SOP Common module (PS3.3 C.12.1.1.8) when the SR uses it."""
    used = (any(c.scheme == PRIVATE_SCHEME for g in groups for i in g.items for c in (i.concept, i.method))
            or any(c.scheme == PRIVATE_SCHEME for g in groups for pair in g.evaluations for c in pair))
    if not used:
        return
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeUID = CODING_SCHEME_UID
    item.CodingSchemeName = "liver-node concepts"
    item.CodingSchemeResponsibleOrganization = MANUFACTURER
    item.CodingSchemeVersion = __version__
    sr.CodingSchemeIdentificationSequence = DicomSequence([item])


def build_sr(case_id: str, groups: Sequence[Group], evidence: Sequence[Dataset],
             workflows: Sequence[Workflow[Any, Any]],
             series_description: str = f"Case measurements - {NOT_FOR_DIAGNOSIS}") -> Dataset:
    """The Comprehensive 3D SR holding `groups`; `evidence` must include every group source (first = study);
    `workflows` name the procedures reported."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_UID, name="liver-node", manufacturer_name=MANUFACTURER, model_name=MANUFACTURER_MODEL_NAME))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=[C.concept(wf.procedure) for wf in workflows],
        imaging_measurements=[_group(g, uid) for g, uid in zip(groups, tracking_uids(groups), strict=True)])
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence), content=report, series_instance_uid=hd.UID(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, is_complete=True, is_final=False, is_verified=False,
        series_description=series_description[:64], **equipment_kwargs())
    _identify_private_scheme(sr, groups)
    logger.info("case %s: SR with %d groups, %d measurements", case_id, len(groups), sum(len(g.items) for g in groups))
    return sr
