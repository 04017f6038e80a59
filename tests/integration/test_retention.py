"""Retention: `prune --dry-run` lists and deletes nothing; a real prune deletes what the policy allows, one audit
line per deletion, and never touches undelivered outputs or cases that are not done."""
# mypy: disable-error-code="union-attr"
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from pydicom import Dataset

from node.config import load_config
from node.service import Node
from node.workflow import OutputObject

import factories as F
from conftest import free_port, stand_ins, store_over_dicom, wait_until

pytestmark = pytest.mark.network
ROOT = Path(__file__).resolve().parents[2]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _send(port: int, datasets: Sequence[Dataset]) -> None:
    store_over_dicom(port, datasets, calling="RET")


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


def test_the_scheduled_job_prunes_superseded_copies_only_of_cases_done_and_delivered(tmp_path: Path, caplog) -> None:
    """The node's own retention thread (a pass every 0.6 s here) deletes the superseded copy and the received
    images of a case done and delivered, and keeps the superseded copy of a case still waiting, older than the
    policy as it is: a re-sent image of an open case may be what the operator needs."""
    from conftest import make_config

    config = make_config(tmp_path / "var", completion={"stable_seconds": 1},
                         retention={"received_days": 0.00002, "superseded_days": 0.00002,
                                    "check_interval_minutes": 0.01},
                         destinations={"pacs": {"folder": "results/pacs", "outputs": ["secondary-capture"]}})
    data = config.node.data_dir
    done_ct = F.ct_series("P-RET-DONE", 2, time_points=8)
    waiting_ct = F.ct_series("P-RET-WAIT", 3)  # a planning CT alone: never analysed, never done
    node = Node(config)
    node.runner.registry = stand_ins({"perfusion": lambda _ctx: [OutputObject("secondary-capture", done_ct[0], "x")]})
    node.runner.report = None
    with caplog.at_level("INFO"):
        node.start()
        try:
            _send(config.node.port, waiting_ct)
            waiting_ct[0].ImageComments = "corrected"  # re-sent with other content: the first copy is superseded
            _send(config.node.port, waiting_ct[:1])
            assert wait_until(lambda: len(node.index.superseded("P-RET-WAIT")) == 1, timeout=30)
            (kept,) = [r.kept_path for r in node.index.superseded("P-RET-WAIT")]
            _send(config.node.port, done_ct)
            done_ct[0].ImageComments = "corrected"
            _send(config.node.port, done_ct[:1])
            assert wait_until(lambda: len(node.index.superseded("P-RET-DONE")) == 1, timeout=30)
            (pruned,) = [r.kept_path for r in node.index.superseded("P-RET-DONE")]
            assert kept.exists() and pruned.exists() and kept.stat().st_mtime <= pruned.stat().st_mtime
            # a scheduled pass, once the case is done and delivered
            assert wait_until(lambda: not pruned.exists(), timeout=60), node.index.get_case("P-RET-DONE")
            assert wait_until(lambda: not list((data / "instances").rglob(f"{done_ct[0].SeriesInstanceUID}/*")),
                              timeout=30)
            assert node.index.get_case("P-RET-DONE").state == "done"
            assert all(r["state"] == "sent" for r in node.outbox.summary("P-RET-DONE"))
            assert node.index.get_case("P-RET-WAIT").state in ("receiving", "stable")
            assert node.run_retention() == 0 and kept.exists()  # one more pass: the waiting case's copy stays
        finally:
            node.stop()
    # the waiting case: its superseded copy (as old as the pruned one, or older) and its images stay
    assert kept.exists()
    assert len(list((data / "instances").rglob(f"{waiting_ct[0].SeriesInstanceUID}/*.dcm"))) == 3
    lines = [r.getMessage() for r in caplog.records if "AUDIT event=retention-delete" in r.getMessage()]
    assert any("kind=superseded case=P-RET-DONE" in line for line in lines), lines
    assert any("kind=received case=P-RET-DONE" in line for line in lines), lines
    assert not any("P-RET-WAIT" in line for line in lines), lines
