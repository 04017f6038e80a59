"""The audit trail does not depend on log_level: a node running at WARNING still writes its audit lines (stderr
and data_dir/audit.log), and refused operator actions are audited like done ones: a wrong token, a forged
dashboard form, an unknown case or series, a release of a case that is not held (CLI and dashboard)."""
from __future__ import annotations

import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from pynetdicom import AE

from node.audit import AUDIT_FILE, close_file
from node.cli import main

import factories as F
from conftest import free_port, start_node_process, wait_until

pytestmark = pytest.mark.network
TOKEN = "audit-token-0123456789abcdef"


def _http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _audit_lines(path: Path, event: str) -> list[dict[str, str]]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        if f"AUDIT event={event} " in line:
            out.append({k: v.strip('"') for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', line.split("AUDIT ", 1)[1])})
    return out


def test_audit_is_written_at_log_level_warning_and_refused_actions_are_audited(tmp_path: Path) -> None:
    data, port, http = tmp_path / "var", free_port(), free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[node]\nhost = "127.0.0.1"\nport = {port}\ndata_dir = "{data}"\nlog_level = "WARNING"\n'
                   f'[health]\nenabled = true\nport = {http}\n[dashboard]\nenabled = true\ntoken = "{TOKEN}"\n'
                   '[destinations.pacs]\nfolder = "results/pacs"\noutputs = ["secondary-capture"]\n')
    log = tmp_path / "node.log"
    proc = start_node_process(cfg, port, log)
    audit_log = data / AUDIT_FILE
    try:
        ct = F.ct_series("P-AUD", 2)  # a planning CT alone: the case waits, nothing is analysed
        ae = AE(ae_title="AUDITSCU")
        ae.add_requested_context(F.CT)
        assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE")
        assert all(assoc.send_c_store(ds).Status == 0 for ds in ct)
        assoc.release()
        assert wait_until(lambda: _audit_lines(audit_log, "association"), timeout=30)
        assert wait_until(lambda: "AUDIT event=association" in log.read_text(), timeout=10)
        # the dashboard: a wrong token, then the right one with a forged form
        ui = f"http://127.0.0.1:{http}"
        assert _http(ui + "/status", headers={"Authorization": "Bearer wrong-token-0123456789"}) == 401
        assert _http(ui + "/ui/login", urllib.parse.urlencode({"token": "guessed-token-0123456789"}).encode()) == 401
        form = urllib.parse.urlencode({"csrf": "forged"}).encode()
        assert _http(ui + "/ui/case/P-AUD/action/reprocess", form, {"Authorization": f"Bearer {TOKEN}"}) == 403
        # the command line against the running node's data dir: unknown case / series -> 4, refused -> 1
        series = ct[0].SeriesInstanceUID
        for argv, code in ((["reprocess", "NO-SUCH"], 4), (["release", "P-AUD"], 1), (["resend", "P-AUD"], 1),
                           (["reassign", "9.9.9", "--to", "P-AUD"], 4), (["reassign", series, "--to", "NO-SUCH"], 4),
                           (["reassign", series, "--to", "P-AUD", "--from", "NO-SUCH"], 4)):
            assert main([*argv, "--config", str(cfg)]) == code, argv
    finally:
        close_file(data)  # the in-process CLI's audit file
        proc.terminate()
        proc.wait(30)
    assert proc.returncode == 0
    # at WARNING the node logged no INFO line but its audit lines
    info = [line for line in log.read_text().splitlines() if " INFO " in line]
    assert info and all(" INFO node.audit: AUDIT event=" in line for line in info), info[:5]
    assert len(_audit_lines(audit_log, "association")) >= 1
    (transfer,) = _audit_lines(audit_log, "transfer")
    assert (transfer["direction"], transfer["stored"], transfer["result"]) == ("in", "2", "ok"), transfer
    denied = [(a["path"], a["reason"]) for a in _audit_lines(audit_log, "access-refused")]
    assert denied == [("/status", "wrong credentials"), ("/ui/login", "wrong token at the login form")]
    refused = [(a["action"], a["case"], a.get("uid", ""), a["operator"].split(":")[0], a["detail"])
               for a in _audit_lines(audit_log, "operator-action") if a["result"] == "refused"]
    assert [r[:4] for r in refused] == [
        ("reprocess", "P-AUD", "", "dashboard"), ("reprocess", "NO-SUCH", "", "cli"), ("release", "P-AUD", "", "cli"),
        ("resend", "P-AUD", "", "cli"), ("reassign", "", "9.9.9", "cli"), ("reassign", "", series, "cli"),
        ("reassign", "NO-SUCH", series, "cli")]
    details = [r[4] for r in refused]
    assert details[0].startswith("The form is stale") and "no case 'NO-SUCH'" in details[1]
    assert "not held" in details[2] and "no output to send again" in details[3]
    assert "no series or study '9.9.9'" in details[4]
    assert "no case 'NO-SUCH'" in details[5] and "no case 'NO-SUCH'" in details[6]


def test_an_audit_file_that_cannot_be_opened_does_not_stop_the_node(tmp_path: Path, caplog) -> None:
    """E.g. made by root before the service user's first start: a warning, and the audit lines still reach the log."""
    from node.service import Node

    from conftest import RecordingSink, make_config

    data = tmp_path / "var"
    (data / AUDIT_FILE).mkdir(parents=True)  # cannot be opened for appending, not even by root
    node = Node(make_config(data), sink=RecordingSink())
    with caplog.at_level("INFO"):
        node.start()
        try:
            ae = AE(ae_title="AUDITSCU")
            ae.add_requested_context(F.CT)
            assoc = ae.associate("127.0.0.1", node.config.node.port, ae_title="LIVERNODE")
            assert assoc.is_established
            assoc.release()
            assert wait_until(lambda: "AUDIT event=association" in caplog.text, timeout=10)
        finally:
            node.stop()
    assert f"cannot append audit lines to {(data / AUDIT_FILE).resolve()}" in caplog.text
