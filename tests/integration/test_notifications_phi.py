"""Webhooks for held and stalled cases carry no patient data: two patients' images in one study (a real identity
conflict over DICOM) hold both cases; the operator releases one, which then stalls. The held case's reason names
both patients' IDs and the released case's quotes them again: none of it may reach a webhook without
include_phi, while an include_phi webhook gets them (the gate is the configuration, not luck)."""
# mypy: disable-error-code="union-attr"
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from opscase import WebhookReceiver, assert_no_phi
from pydicom import Dataset

from node.notifications import case_ref, node_secret, redact
from node.operations import release
from node.service import Node
from node.workflow import OutputObject

import factories as F
from conftest import make_config, stand_ins, store_over_dicom, wait_until

pytestmark = pytest.mark.network


def _send(port: int, datasets: Sequence[Dataset]) -> None:
    store_over_dicom(port, datasets, calling="PHI")


def test_held_and_stalled_cases_are_notified_without_patient_data(tmp_path: Path) -> None:
    plain, phi = WebhookReceiver(fail_first=0), WebhookReceiver(fail_first=0)
    ct = F.ct_series("P-HELD-A", 2, time_points=8)
    other = F.ct_series("P-HELD-B", 2, study_uid=ct[0].StudyInstanceUID)  # another patient in A's study
    cfg = make_config(tmp_path / "var",
                      destinations={"pacs": {"folder": "results/pacs", "outputs": ["secondary-capture"]}},
                      notifications={"check_interval_seconds": 0.2, "stalled_after_minutes": 0.01,
                                     "webhooks": {"ops": {"url": plain.url},
                                                  "ward": {"url": phi.url, "include_phi": True}}})
    node = Node(cfg)
    node.runner.registry = stand_ins({"perfusion": lambda _ctx: [OutputObject("secondary-capture", ct[0], "x")]})
    node.runner.report = None
    node.start()
    try:
        _send(cfg.node.port, ct)
        assert wait_until(lambda: plain.events("case-done"), timeout=30), plain.received
        _send(cfg.node.port, other)
        assert wait_until(lambda: len(plain.events("case-held")) == 2, timeout=30), plain.received
        held_reason = node.index.get_case("P-HELD-B").reason
        assert "P-HELD-A" in held_reason and "P-HELD-B" in held_reason  # what must not leak
        release(node.index, "P-HELD-B", "test")  # a planning CT alone: stable, waiting for nothing it can get
        ref_b = case_ref(node_secret(cfg.node.data_dir), "P-HELD-B")
        assert wait_until(lambda: [e for e in plain.events("case-stalled") if e["case_ref"] == ref_b], timeout=30)
        assert "P-HELD-A" in node.index.get_case("P-HELD-B").reason
        assert wait_until(lambda: len(phi.events("case-stalled")) == len(plain.events("case-stalled")), timeout=10)
        # a destination's last error may quote an outbox path (data_dir/outbox/<PatientID>/...): redacted
        (out,) = node.node_status().case("P-HELD-A").outputs
        error = f"cannot prepare x.dcm: [Errno 2] No such file: '{out.path}' (Test^P-HELD-B)"
        assert "P-HELD-A" in error
        redacted = redact(error, node.node_status(), node_secret(cfg.node.data_dir))
        ref_a = case_ref(node_secret(cfg.node.data_dir), "P-HELD-A")
        assert f"/outbox/<case {ref_a}>/" in redacted and f"(<case {ref_b}>)" in redacted
        assert_no_phi([redacted.encode()], ["P-HELD-A", "P-HELD-B", "Test^"])
    finally:
        node.stop()
        plain.stop()
        phi.stop()
    held = plain.events("case-held")
    assert [h["identity_conflicts"] for h in held] == [1, 1] and {h["state"] for h in held} == {"held"}
    assert all(h["series"] == 1 and h["instances"] >= 1 for h in held)  # counts (B may be held at its first image)
    (stalled_b,) = [e for e in plain.events("case-stalled") if e["case_ref"] == ref_b]
    assert stalled_b["state"] == "stable" and stalled_b["why"] == ["no workflow has its key input yet"]
    values = ["P-HELD-A", "P-HELD-B", "Test^P-HELD-A", "Test^P-HELD-B", "19600101", "Test"]
    assert_no_phi(plain.raw, values)
    # the include_phi webhook gets the same events with the IDs, names and the reason
    phi_held = phi.events("case-held")
    assert {h["case_id"] for h in phi_held} == {"P-HELD-A", "P-HELD-B"}
    assert all("P-HELD-A" in h["reason"] and "P-HELD-B" in h["reason"] for h in phi_held)
    assert {h["case_ref"] for h in phi_held} == {h["case_ref"] for h in held}
