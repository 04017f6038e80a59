"""Operator commands against a running node: `reprocess` re-runs a case, `resend` re-queues its outputs."""
# mypy: disable-error-code="union-attr, index, arg-type"
from __future__ import annotations

import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest
from pynetdicom import AE

from node.service import Node
from node.workflow import OutputObject

import factories as F
from conftest import make_config, stand_ins, wait_until

pytestmark = pytest.mark.network
ROOT = Path(__file__).resolve().parents[2]
_wait = partial(wait_until, timeout=30.0, poll=0.1)


def _cli(*args: str, cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "node", *args, "--config", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_reprocess_and_resend(tmp_path: Path) -> None:
    data = tmp_path / "var"
    cfg = tmp_path / "config.toml"
    port = make_config(data).node.port  # a free loopback port
    cfg.write_text(f'[node]\nhost = "127.0.0.1"\nport = {port}\ndata_dir = "{data}"\n[completion]\nstable_seconds = 1\n'
                   '[destinations.pacs]\nfolder = "results/pacs"\noutputs = ["secondary-capture"]\n')
    from node.config import load_config

    config = load_config(cfg)
    ct = F.ct_series("P-OPS", 2, time_points=8)
    runs: list[float] = []

    def perfusion(_ctx) -> list[OutputObject]:  # a stand-in analysis that produces one object
        runs.append(time.time())
        return [OutputObject("secondary-capture", ct[0], "stand-in output")]

    node = Node(config)
    node.runner.registry, node.runner.report = stand_ins({"perfusion": perfusion}), None
    node.start()
    try:
        ae = AE(ae_title="OPS")
        ae.add_requested_context(F.CT)
        assoc = ae.associate("127.0.0.1", config.node.port, ae_title="LIVERNODE")
        for ds in ct:
            assert assoc.send_c_store(ds).Status == 0
        assoc.release()
        assert _wait(lambda: node.index.get_case("P-OPS") is not None
                     and node.index.get_case("P-OPS").state == "done")
        assert _wait(lambda: all(r["state"] == "sent" for r in node.outbox.summary("P-OPS"))
                     and node.outbox.summary("P-OPS"))
        delivered = data / "results" / "pacs"
        assert len(list(delivered.rglob("*.dcm"))) == 1

        r = _cli("reprocess", "P-OPS", cfg=cfg)
        assert r.returncode == 0, r.stderr
        assert _wait(lambda: len(runs) == 2 and node.index.get_case("P-OPS").version == 2)
        # an unknown case is exit status 4 for every command that names a case (cli.py's documented statuses)
        for command in ("reprocess", "resend", "release"):
            r = _cli(command, "NO-SUCH-CASE", cfg=cfg)
            assert r.returncode == 4 and "no case 'NO-SUCH-CASE'" in r.stderr, (command, r)
        r = _cli("release", "P-OPS", cfg=cfg)  # a known case that is not held: refused, exit 1
        assert r.returncode == 1 and "not held" in r.stderr

        sent_before = {r["sop_instance_uid"] for r in node.outbox.summary("P-OPS")}
        for p in delivered.rglob("*.dcm"):
            p.unlink()
        r = _cli("resend", "P-OPS", cfg=cfg)
        assert r.returncode == 0 and "queued for sending again" in r.stdout, r.stderr
        assert _wait(lambda: len(list(delivered.rglob("*.dcm"))) == 1)  # delivered again, same object
        assert {r["sop_instance_uid"] for r in node.outbox.summary("P-OPS")} == sent_before

        status = _cli("status", cfg=cfg)
        assert "CASE P-OPS" in status.stdout and "analysis v2" in status.stdout and "OUTBOX" in status.stdout
    finally:
        node.stop()
