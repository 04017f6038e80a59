"""Dashboard operator actions over HTTP on a node with a stand-in analysis: reprocess and release a held case
(each audited, the held case notified), reassign a series of an identity conflict, a read-only dashboard, and the
same action for an unknown case."""
# mypy: disable-error-code="union-attr"
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from pynetdicom import AE

from node.service import Node
from node.workflow import OutputObject

import factories as F
from conftest import make_config, stand_ins, wait_until

pytestmark = pytest.mark.network


def _node(tmp_path: Path, **dashboard) -> tuple[Node, list]:
    ct = F.ct_series("P-ACT", 2, time_points=8)
    cfg = make_config(tmp_path / "var", health={"enabled": True, "port": 0}, dashboard={"enabled": True, **dashboard},
                      destinations={"pacs": {"folder": "results/pacs", "outputs": ["secondary-capture"]}},
                      notifications={"check_interval_seconds": 0.2, "webhooks": {}})
    runs: list = []

    def stand_in(ctx) -> list[OutputObject]:
        runs.append(ctx.case_id)
        return [OutputObject("secondary-capture", ct[0], "stand-in")]

    node = Node(cfg)
    node.runner.registry, node.runner.report = stand_ins({"perfusion": stand_in}), None
    node.start()
    ae = AE(ae_title="ACT")
    ae.add_requested_context(F.CT)
    assoc = ae.associate("127.0.0.1", cfg.node.port, ae_title="LIVERNODE")
    for ds in ct:
        assert assoc.send_c_store(ds).Status == 0
    assoc.release()
    assert wait_until(lambda: node.index.get_case("P-ACT") is not None and node.index.get_case("P-ACT").state == "done",
                      timeout=30)
    return node, runs


def _post(node: Node, path: str, csrf: str, **form: str) -> tuple[int, str, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{node.health.port}{path}",
                                 data=urllib.parse.urlencode({"csrf": csrf, **form}).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as rsp:
            return rsp.status, rsp.url, rsp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", exc.read().decode()


def _page(node: Node, path: str) -> str:
    return urllib.request.urlopen(f"http://127.0.0.1:{node.health.port}{path}", timeout=10).read().decode()


def _text(html: str) -> str:
    """The page as a reader sees it (tags removed)."""
    return re.sub(r"<[^>]+>", "", html)


def test_reprocess_and_release_a_held_case_are_done_and_audited(tmp_path: Path, caplog) -> None:
    node, runs = _node(tmp_path)
    try:
        page = _page(node, "/ui/case/P-ACT")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        assert 'id="release"' not in page  # only a held case can be released
        code, url, body = _post(node, "/ui/case/P-ACT/action/reprocess", csrf)
        assert code == 200 and "queued for re-analysis" in body
        assert wait_until(lambda: node.index.get_case("P-ACT").version == 2 and node.index.get_case("P-ACT").state
                          == "done", timeout=30)
        assert "action=reprocess" in _text(body) and "action=reprocess" in _text(_page(node, "/ui/audit"))

        # a held case (identity conflicts set this state; here it is set directly in the index)
        db = sqlite3.connect(node.config.node.data_dir / "index.sqlite3")
        db.execute("UPDATE cases SET state='held', reason='identity conflict (test)' WHERE case_id='P-ACT'")
        db.commit()
        db.close()
        with caplog.at_level("WARNING"):
            assert wait_until(lambda: "notification case-held" in caplog.text, timeout=10)
        page = _page(node, "/ui/case/P-ACT")
        assert 'id="release"' in page and "identity conflict (test)" in page
        code, url, body = _post(node, "/ui/case/P-ACT/action/release", csrf)
        # analysed before it was held and no input changed: back to done, its analysis v2 stands (issue 13 B2)
        assert code == 200 and "case P-ACT released" in body and "released and queued" not in body
        case = node.index.get_case("P-ACT")
        assert case.state == "done" and case.version == 2 and "back to analysis v2 (done)" in case.reason
        audit = _text(_page(node, "/ui/audit"))
        assert "action=release" in audit and "operator=dashboard:local@127.0.0.1" in audit
        assert runs[:2] == ["P-ACT"] * 2
        # the command line does the same for a running node; an input that changed while the case was held makes
        # it released, queued and analysed again
        db = sqlite3.connect(node.config.node.data_dir / "index.sqlite3")
        db.execute("UPDATE cases SET state='held', reason='identity conflict (test)' WHERE case_id='P-ACT'")
        now = time.time()  # as an instance arriving while held would: its series and the case's input time
        db.execute("UPDATE series SET changed_at=? WHERE case_id='P-ACT'", (now,))
        db.execute("UPDATE cases SET last_input_at=? WHERE case_id='P-ACT'", (now,))
        db.commit()
        db.close()
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[node]\nport = {node.config.node.port}\ndata_dir = "{node.config.node.data_dir}"\n')
        r = subprocess.run([sys.executable, "-m", "node", "release", "P-ACT", "--config", str(cfg)],
                           cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and "case P-ACT released and queued for analysis" in r.stdout, r.stderr
        assert wait_until(lambda: node.index.get_case("P-ACT").version == 3, timeout=30)
        assert runs[:3] == ["P-ACT"] * 3
        # the same form for a case that does not exist: 404, nothing done
        code, _, body = _post(node, "/ui/case/NO-SUCH/action/reprocess", csrf)
        assert code == 404 and "no case &#39;NO-SUCH&#39;" in body
    finally:
        node.stop()


def test_a_read_only_dashboard_has_no_buttons_and_refuses_actions(tmp_path: Path) -> None:
    node, runs = _node(tmp_path, actions=False)
    try:
        page = _page(node, "/ui/case/P-ACT")
        assert "<form" not in page and "Operator actions" not in page
        code, _, body = _post(node, "/ui/case/P-ACT/action/reprocess", "anything")
        assert code == 403 and "switched off" in body
        assert node.index.get_case("P-ACT").version == 1 and runs == ["P-ACT"]
    finally:
        node.stop()


def test_an_identity_conflict_is_shown_and_a_series_reassigned_from_the_dashboard(tmp_path: Path) -> None:
    node, runs = _node(tmp_path)
    try:
        study = pydicom_study(node)
        other = F.ct_series("P-OTHER", 2, study_uid=study)  # another patient's images in P-ACT's study
        ae = AE(ae_title="ACT")
        ae.add_requested_context(F.CT)
        assoc = ae.associate("127.0.0.1", node.config.node.port, ae_title="LIVERNODE")
        for ds in other:
            assert assoc.send_c_store(ds).Status == 0
        assoc.release()
        assert wait_until(lambda: node.index.get_case("P-ACT").state == "held", timeout=20)
        assert node.index.get_case("P-OTHER").state == "held"
        cases = _text(_page(node, "/ui/"))
        assert "1 patient-identity conflict(s)" in cases
        page = _page(node, "/ui/case/P-OTHER")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        assert f"Identity conflict on study {study}" in _text(page) and 'id="reassign"' in page
        code, _, body = _post(node, "/ui/case/P-OTHER/action/reassign", csrf, series=other[0].SeriesInstanceUID,
                              to="P-ACT")
        assert code == 200 and "moved from case P-OTHER to case P-ACT" in _text(body)
        assert node.index.get_case("P-OTHER") is None and node.index.conflicts() == []
        assert node.index.get_case("P-ACT").state != "held"
        assert len(node.index.series_of_case("P-ACT")) == 2
        audit = _text(_page(node, "/ui/audit"))
        assert "action=reassign" in audit and "identity-conflict-resolved" in audit
    finally:
        node.stop()


def pydicom_study(node: Node) -> str:
    (series,) = node.index.series_of_case("P-ACT")
    return series.study_uid
