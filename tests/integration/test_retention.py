"""Retention: `prune --dry-run` lists and deletes nothing; a real prune deletes what the policy allows, one audit
line per deletion, and never touches undelivered outputs or cases that are not done."""
# mypy: disable-error-code="union-attr"
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pynetdicom import AE

from node.config import load_config
from node.service import Node
from node.workflow import OutputObject

import factories as F
from conftest import free_port, stand_ins, wait_until

pytestmark = pytest.mark.network
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _send(port: int, datasets) -> None:
    ae = AE(ae_title="RET")
    ae.add_requested_context(F.CT)
    assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE")
    for ds in datasets:
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()


def test_prune_dry_run_then_real_keeps_undelivered_and_unfinished(tmp_path: Path) -> None:
    data = tmp_path / "var"
    dead = free_port()  # nothing listens: the "tps" destination never takes anything
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"""
[node]
host = "127.0.0.1"
port = {free_port()}
data_dir = "{data}"
min_free_disk_mb = 1
[completion]
stable_seconds = 1
[outbox]
max_attempts = 1
[retention]
received_days = 0.00002
outbox_days = 0.00002
superseded_days = 0.00002
[destinations.pacs]
folder = "results/pacs"
outputs = ["secondary-capture"]
[destinations.tps]
ae_title = "TPS"
host = "127.0.0.1"
port = {dead}
outputs = ["rtstruct"]
""")
    config = load_config(cfg)
    delivered_ct = F.ct_series("P-DELIVERED", 2, time_points=8)
    undelivered_ct = F.ct_series("P-UNDELIVERED", 2, time_points=8)
    waiting_ct = F.ct_series("P-WAITING", 3)  # a planning CT alone: no workflow, never done

    def stand_in(ctx) -> list[OutputObject]:  # one Secondary Capture; the undelivered case an RTSTRUCT too
        ct = delivered_ct if ctx.case_id == "P-DELIVERED" else undelivered_ct
        out = [OutputObject("secondary-capture", ct[0], "stand-in picture")]
        if ctx.case_id == "P-UNDELIVERED":
            out.append(OutputObject("rtstruct", F.rtstruct("P-UNDELIVERED", ct[:2]), "stand-in structures"))
        return out

    node = Node(config)
    node.runner.registry, node.runner.report = stand_ins({"perfusion": stand_in}), None
    node.start()
    try:
        for series in (delivered_ct, undelivered_ct, waiting_ct):
            _send(config.node.port, series)

        def settled() -> bool:
            rows = node.outbox.summary()
            return len(rows) == 3 and all(r["state"] in ("sent", "failed") for r in rows)

        assert wait_until(settled, timeout=60), node.outbox.summary()
        assert node.index.get_case("P-DELIVERED").state == "done"
        assert node.index.get_case("P-UNDELIVERED").state == "done"
        assert node.index.get_case("P-WAITING").state in ("receiving", "stable")
    finally:
        node.stop()
    superseded = data / "superseded" / "1.2.3.dcm"
    superseded.parent.mkdir(parents=True)
    superseded.write_bytes(b"old copy")
    old = time.time() - 3600
    os.utime(superseded, (old, old))
    time.sleep(2.0)  # older than the policy's 1.7 s

    def files(case_series) -> list[Path]:
        return sorted((data / "instances").rglob(f"{case_series[0].SeriesInstanceUID}/*.dcm"))

    before = {name: files(s) for name, s in (("d", delivered_ct), ("u", undelivered_ct), ("w", waiting_ct))}
    assert all(before.values())
    outbox_files = sorted((data / "outbox").rglob("*.dcm"))

    dry = _cli("prune", "--dry-run", "--config", str(cfg))
    assert dry.returncode == 0, dry.stderr
    assert "nothing was deleted" in dry.stdout
    listed = [line.split() for line in dry.stdout.splitlines()[1:] if line.startswith("  ")]
    assert {(row[0], row[1]) for row in listed} == {("received", "P-DELIVERED"), ("outbox", "P-DELIVERED"),
                                                    ("superseded", "-")}
    assert {name: files(s) for name, s in (("d", delivered_ct), ("u", undelivered_ct), ("w", waiting_ct))} == before
    assert sorted((data / "outbox").rglob("*.dcm")) == outbox_files and superseded.exists()

    real = _cli("prune", "--config", str(cfg))
    assert real.returncode == 0, real.stderr
    audit = [line for line in real.stderr.splitlines() if "AUDIT event=retention-delete" in line]
    assert len(audit) == 3 and all("result=deleted" in line for line in audit)
    assert any("kind=received case=P-DELIVERED" in line for line in audit)
    assert files(delivered_ct) == []
    assert files(undelivered_ct) == before["u"] and files(waiting_ct) == before["w"]  # untouched
    assert not superseded.exists()
    remaining = sorted((data / "outbox").rglob("*.dcm"))
    assert len(remaining) == len(outbox_files) - 1  # only the delivered case's output went
    assert all("P-UNDELIVERED" in str(p) for p in remaining)

    status = _cli("status", "--json", "--config", str(cfg))
    import json

    cases = {c["case_id"]: c for c in json.loads(status.stdout)["cases"]}
    assert cases["P-DELIVERED"]["state"] == "done" and cases["P-DELIVERED"]["series"] == []
    assert "received instances removed by retention" in cases["P-DELIVERED"]["reason"]
    assert len(cases["P-UNDELIVERED"]["series"]) == 1
    manifest = json.loads((data / "outbox" / "P-DELIVERED" / "manifest.json").read_text())
    assert [o["file"] for o in manifest["outputs"]] == [None]  # the record stays, the file is gone
    again = _cli("resend", "P-DELIVERED", "--config", str(cfg))
    assert again.returncode == 1 and "no output to send again" in again.stderr
    assert "nothing to prune" in _cli("prune", "--dry-run", "--config", str(cfg)).stdout
