"""The case's measurements as a DICOM Comprehensive 3D SR: TID 1500 Measurement Report (highdicom).

One TID 1501 group ("Measurements and qualitative evaluations", no geometry) per region or topic, with its
tracking identifier, finding site, the images it was measured on (Source images for measurement group),
the algorithm (name, version, method details as parameters) and its measurements (TID 300: coded name,
value, UCUM unit, method, derivation for means and SDs; a value's 1-SD noise as its measurement uncertainty
(TID 310) and, where it is not measurable, the qualifier "Value indeterminate" with the reason among the
algorithm's parameters). Referenced images are the SR's evidence; the SR
joins the study of the first evidence item (the MAA SPECT study when present).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from node import __version__
from node.derived import MANUFACTURER, MANUFACTURER_MODEL_NAME, NOT_FOR_DIAGNOSIS, equipment_kwargs
from node.report import codes as C
from node.report.groups import Group
from node.workflow import Workflow

logger = logging.getLogger(__name__)

__all__ = ["SR_SERIES_NUMBER", "build_sr", "DEVICE_UID"]

SR_SERIES_NUMBER = 9700
#: Stable observer-device UID of this software (same in every report).
DEVICE_UID = generate_uid(entropy_srcs=["liver-node", "observer-device"])


def _group(g: Group) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    algorithm = hd.sr.AlgorithmIdentification(name=f"liver-node {g.workflow}", version=__version__,
                                              parameters=[p[:1024] for p in g.parameters if p] or None)
    measurements = [
        hd.sr.Measurement(name=C.concept(i.concept), value=i.value, unit=C.unit(i.unit), method=C.concept(i.method),
                          derivation=C.derivation(i.derivation) if i.derivation else None,
                          # TID 310: the value's 1-SD noise as its measurement uncertainty
                          properties=hd.sr.MeasurementProperties(upper_measurement_uncertainty=i.uncertainty,
                                                                 lower_measurement_uncertainty=i.uncertainty)
                          if i.uncertainty is not None else None,
                          # a value that cannot be trusted is qualified (CID 42 "Value indeterminate"), not bare
                          qualifier=C.concept(C.NOT_MEASURABLE) if i.not_measurable else None)
        for i in g.items
    ]
    sources = [hd.sr.SourceImageForMeasurementGroup(referenced_sop_class_uid=ds.SOPClassUID,
                                                    referenced_sop_instance_uid=ds.SOPInstanceUID)
               for ds in g.sources]
    evaluations = [hd.sr.QualitativeEvaluation(name=C.concept(name), value=C.concept(value))
                   for name, value in g.evaluations]
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=g.identifier[:64]),
        finding_type=C.concept(g.finding) if g.finding else None,
        finding_sites=[hd.sr.FindingSite(anatomic_location=C.concept(g.site))] if g.site else None,
        algorithm_id=algorithm, measurements=measurements, qualitative_evaluations=evaluations or None,
        source_images=sources or None)


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
        imaging_measurements=[_group(g) for g in groups])
    sr = hd.sr.Comprehensive3DSR(
        evidence=list(evidence), content=report, series_instance_uid=hd.UID(), series_number=SR_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, is_complete=True, is_final=False, is_verified=False,
        series_description=series_description[:64], **equipment_kwargs())
    logger.info("case %s: SR with %d groups, %d measurements", case_id, len(groups), sum(len(g.items) for g in groups))
    return sr
