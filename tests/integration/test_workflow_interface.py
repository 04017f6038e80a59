"""The workflow interface: a workflow written and registered here only (no other module edited) is classified,
queued, run, recorded, routed and reported by the node; a renamed measurement field fails loudly, never as a
shorter report; the registry orders workflows by their dependencies."""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom import Dataset
from pydicom.pixels import pixel_array

from node.config import ConfigError, ConfigTable, parse_config
from node.gsa.measurements import GsaMeasurements
from node.gsa.workflow import GSA
from node.imaging.capture import secondary_capture
from node.index import SeriesRow
from node.record import CaseRecord, RecordError, decode, encode
from node.registry import DEFAULT_REGISTRY, Registry, RegistryError
from node.report.build import build_report
from node.report.groups import Group, private
from node.service import Node
from node.status import render_status
from node.workflow import (
    CaseSeries,
    CommonSettings,
    InputSelection,
    OutputObject,
    RoleContext,
    RoleRule,
    RunContext,
    Workflow,
    WorkflowResult,
    newest,
)

import factories as F
from conftest import free_port, make_config, store_over_dicom, wait_until


# ------------------------------------------------------------------------------ a workflow that lives in this test
@dataclass(frozen=True)
class BoneSettings:
    hot_fraction: float = 0.5


@dataclass(frozen=True)
class BoneMeasurements:
    total_counts: float
    hot_voxels: int
    hot_fraction: float


#: the datasets the toy's run read, to check the node released their pixel data when the run ended
READ: list[Dataset] = []

HOT_VOXELS = private("LN-TOY-HOT", "Voxels above the hot fraction of the maximum")
COUNTING = private("LN-TOY-M", "Voxel count above a fraction of the maximum")


def names_mdp(series: SeriesRow, _ctx: RoleContext) -> bool:
    return series.modality == "NM" and "MDP" in series.radiopharmaceutical.upper()


class BoneWorkflow(Workflow[BoneSettings, BoneMeasurements]):
    name = "bone"
    title = "Bone SPECT hot voxels (a workflow of this test only)"
    procedure = private("LN-P-TOY", "Toy bone SPECT count")
    needs = ("spect-mdp",)
    role_rules = (RoleRule("spect-mdp", "NM whose radiopharmaceutical names MDP", names_mdp),)
    output_kinds = ("bone-capture",)
    settings_type = BoneSettings
    measurements_type = BoneMeasurements

    def parse_settings(self, table: ConfigTable, common: CommonSettings) -> BoneSettings:
        settings = BoneSettings(table.number("hot_fraction", 0.5, lo=0.0, lo_open=True, hi=1.0))
        table.finish()
        return settings

    def select_inputs(self, case: CaseSeries, settings: BoneSettings) -> InputSelection:
        chosen = newest(case, "spect-mdp", "bone SPECT")
        assert chosen is not None
        return InputSelection((chosen,))

    def run(self, ctx: RunContext, settings: BoneSettings) -> WorkflowResult[BoneMeasurements]:
        nm = ctx.read("bone SPECT")[0]
        READ.append(nm)
        counts = pixel_array(nm).astype(float)
        hot = int((counts >= settings.hot_fraction * counts.max()).sum())
        rgb = np.zeros((16, 16, 3), np.uint8)
        sc = secondary_capture(rgb, nm, [nm], series_uid=hd.UID(), series_number=9900, instance_number=1,
                               series_description="bone hot voxels", comments="toy", derivation="toy count")
        return WorkflowResult(self.name, BoneMeasurements(float(counts.sum()), hot, settings.hot_fraction),
                              [OutputObject("bone-capture", sc, "bone capture")], ["a toy: not for any use"])

    def report_groups(self, result: WorkflowResult[BoneMeasurements],
                      sources: Mapping[str, Sequence[Dataset]]) -> list[Group]:
        g = Group(self.name, "Bone hot voxels", None, None, sources=list(sources.get("spect-mdp", []))[:1])
        g.add(HOT_VOXELS, result.measurements.hot_voxels, "1", COUNTING, "hot voxels")
        return [g]


BONE = BoneWorkflow()




@pytest.mark.network
def test_a_workflow_registered_in_a_test_only_runs_end_to_end(tmp_path: Path) -> None:
    registry = DEFAULT_REGISTRY.with_workflow(BONE)
    raw: dict[str, Any] = {
        "node": {"ae_title": "LIVERNODE", "host": "127.0.0.1", "port": free_port(), "data_dir": str(tmp_path / "var")},
        "completion": {"stable_seconds": 1},
        "analysis": {"bone": {"hot_fraction": 0.9}},
        "outbox": {"backoff_initial_seconds": 0.1, "backoff_max_seconds": 0.5},
        "destinations": {"pacs": {"folder": "out/pacs", "outputs": ["report", "bone-capture"]}},
    }
    with pytest.raises(ConfigError) as exc:  # its settings are validated by it, errors name its key
        parse_config({**raw, "analysis": {"bone": {"hot_fraction": 2}}}, registry=registry)
    assert exc.value.key == "analysis.bone.hot_fraction"
    with pytest.raises(ConfigError):  # without it registered, its output kind is unknown to destinations
        parse_config(raw | {"analysis": {}})
    config = parse_config(raw, registry=registry)
    assert config.analysis.settings_for(BONE).hot_fraction == 0.9
    nm = F.nm_multiframe("P-BONE", tracer_text="Tc-99m MDP", tracer_code="")
    node = Node(config)
    node.start()
    try:
        assert node.address is not None
        store_over_dicom(node.address[1], [nm])
        assert wait_until(lambda: (c := node.index.get_case("P-BONE")) is not None and c.state == "done",
                          timeout=30)
        pacs = tmp_path / "var" / "out" / "pacs"
        assert wait_until(lambda: len(list(pacs.rglob("*.dcm"))) >= 3, timeout=30)  # capture, SR, summary page
        status = render_status(node.node_status())
        case = node.index.get_case("P-BONE")
    finally:
        node.stop()
    assert "spect-mdp" in status  # classified by its own rule
    assert READ and all("PixelData" not in ds and "PatientID" in ds for ds in READ)  # released, headers kept
    assert case is not None
    record = CaseRecord.from_json(case.result)
    assert record.workflows == ["bone"] and record.inputs["bone"][0]["input"] == "bone SPECT"
    measured = record.measurements("bone", BoneMeasurements)
    counts = pixel_array(nm).astype(float)
    assert measured == BoneMeasurements(float(counts.sum()), int((counts >= 0.9 * counts.max()).sum()), 0.9)
    assert record.results["bone"].warnings == ["a toy: not for any use"]
    files = [pydicom.dcmread(p) for p in pacs.rglob("*.dcm")]
    assert any(ds.get("SeriesDescription") == "bone hot voxels" for ds in files)  # routed by its own kind
    (sr,) = [ds for ds in files if ds.Modality == "SR"]
    groups = cast(Any, hd.sr.Comprehensive3DSR.from_dataset(sr).content).get_image_measurement_groups()
    (group,) = [g for g in groups if g.tracking_identifier == "Bone hot voxels"]
    assert float(group.get_measurements()[0].value) == measured.hot_voxels


# ------------------------------------------------------------------------------ typed results fail loudly
def _renamed(m: GsaMeasurements) -> Any:
    """`m` as a GsaMeasurements whose `volumes_cm3` field was renamed `volumes` (a careless refactoring)."""
    fields = [("volumes" if f.name == "volumes_cm3" else f.name, f.type) for f in dataclasses.fields(m)]
    cls = dataclasses.make_dataclass("RenamedGsaMeasurements", fields, frozen=True)
    values = {("volumes" if k == "volumes_cm3" else k): getattr(m, k) for k in (f.name for f in dataclasses.fields(m))}
    return cls(**values)


def _gsa_record() -> dict[str, Any]:
    from test_report_sr import GSA as GSA_RECORD  # a complete, hand-written GSA record

    return encode(GSA_RECORD)


def test_a_renamed_measurement_field_fails_instead_of_shortening_the_report() -> None:
    nm = F.nm_multiframe("P-RENAME")
    good = decode(_gsa_record(), GsaMeasurements)
    groups = GSA.report_groups(WorkflowResult("gsa", good), {"spect-gsa": [nm]})
    assert {g.identifier for g in groups} == {f"{n} (GSA, planning CT)" for n in ("Liver", "FLS", "ITV", "PTV")}
    renamed = _renamed(good)
    with pytest.raises(AttributeError, match="volumes_cm3"):  # the report reads the field, it does not skip it
        build_report("P-RENAME", {"gsa": WorkflowResult("gsa", renamed)}, {"spect-gsa": [nm]})
    # a record whose key was renamed does not decode into fewer figures either
    record = _gsa_record()
    record["volumes"] = record.pop("volumes_cm3")
    with pytest.raises(RecordError, match="volumes"):
        decode(record, GsaMeasurements)
    # and the runner never records such a result: its check refuses measurements of another type
    assert not isinstance(renamed, GSA.measurements_type)
    assert "volumes_cm3" in {f.name for f in dataclasses.fields(GsaMeasurements)}


def test_case_record_has_a_schema_and_refuses_others() -> None:
    record = CaseRecord(workflows=["gsa"])
    data = json.loads(json.dumps(record.to_json()))
    assert data["schema"] == 2 and CaseRecord.from_json(data) == record
    with pytest.raises(RecordError, match="schema"):
        CaseRecord.from_json({"workflows": ["gsa"], "gsa": {}})  # written before typed results


# ------------------------------------------------------------------------------ registry
def _wf(name: str, depends_on: tuple[str, ...] = ()) -> Workflow[Any, Any]:
    cls = type(f"W_{name}", (BoneWorkflow,), {"name": name, "depends_on": depends_on})
    return cls()


def test_registry_orders_by_dependencies_and_refuses_inconsistent_sets() -> None:
    # the dose workflows run after the ones whose results they take (y90post: maa; gsaplan: gsa)
    assert DEFAULT_REGISTRY.names == ("perfusion", "gsa", "maa", "y90post", "gsaplan")
    assert {wf.name: wf.depends_on for wf in DEFAULT_REGISTRY}["y90post"] == ("maa",)
    assert {wf.name: wf.depends_on for wf in DEFAULT_REGISTRY}["gsaplan"] == ("gsa",)
    assert Registry([_wf("c", ("b",)), _wf("a"), _wf("b", ("a",))]).names == ("a", "b", "c")
    with pytest.raises(RegistryError, match="twice"):
        Registry([_wf("a"), _wf("a")])
    with pytest.raises(RegistryError, match="unregistered"):
        Registry([_wf("a", ("z",))])
    with pytest.raises(RegistryError, match="circular"):
        Registry([_wf("a", ("b",)), _wf("b", ("a",))])
    assert "bone-capture" in DEFAULT_REGISTRY.with_workflow(BONE).output_kinds
    assert "bone-capture" not in DEFAULT_REGISTRY.output_kinds


def test_each_workflow_declares_settings_measurements_and_roles() -> None:
    config = make_config(Path("/tmp/unused"))
    roles = {r.role for wf in DEFAULT_REGISTRY for r in wf.role_rules}
    assert roles == {"ct-perfusion", "spect-gsa", "spect-maa", "y90-post", "plan-dose", "rt-plan"}
    for wf in DEFAULT_REGISTRY:
        assert dataclasses.is_dataclass(wf.settings_type) and dataclasses.is_dataclass(wf.measurements_type)
        assert isinstance(config.analysis.settings_for(wf), wf.settings_type)
