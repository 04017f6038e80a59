"""Health endpoint: liveness, readiness, JSON status with queue depths and the last error; off by default."""
# mypy: disable-error-code="union-attr, index, arg-type"
from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from node.config import HealthConfig
from node.health import HealthServer, outbox_status
from node.outbox import Outbox
from node.sender import Sender
from node.workflow import OutputObject
from testpeers.orthanc import make_ct_series

from conftest import make_config


def _get(port: int, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as rsp:
            return rsp.status, json.loads(rsp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_disabled_by_default_and_then_not_listening() -> None:
    assert HealthConfig().enabled is False
    server = HealthServer(HealthConfig(), lambda: {})
    server.start()
    assert server.port is None
    server.stop()


def test_endpoints_report_liveness_readiness_and_outbox_status(tmp_path: Path) -> None:
    cfg = make_config(tmp_path / "var", health={"enabled": True, "port": 0},
                      destinations={"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 9,
                                             "outputs": ["secondary-capture"]}},
                      outbox={"max_attempts": 1})
    ob = Outbox(cfg)
    for ds in make_ct_series(n_slices=2, rows=8, cols=8):
        ob.produce("h", OutputObject("secondary-capture", ds))
    sender = Sender(cfg, ob)
    state = {"sender": None}
    server = HealthServer(cfg.health, lambda: outbox_status(ob, state["sender"]))
    server.start()
    try:
        port = server.port
        assert port
        assert _get(port, "/livez") == (200, {"status": "alive"})
        assert _get(port, "/readyz") == (503, {"ready": False})  # no sender running yet
        code, status = _get(port, "/status")
        assert code == 200 and status["outbox"]["pending"] == 2 and status["last_error"] is None

        sender.run_once()  # port 9 (discard) refuses: both items parked after their single attempt
        sender.start()
        state["sender"] = sender  # type: ignore[assignment]
        assert _get(port, "/readyz") == (200, {"ready": True})
        code, status = _get(port, "/status")
        assert status["outbox"] == {"pending": 0, "retrying": 0, "sending": 0, "failed": 2, "sent": 0}
        assert "cannot connect to 127.0.0.1:9" in status["last_error"]["error"]
        assert status["sender"]["running"] is True
        assert _get(port, "/nope")[0] == 404
    finally:
        sender.stop()
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2)


def test_a_failing_status_provider_gives_500_not_a_dead_endpoint() -> None:
    def broken() -> dict:
        raise RuntimeError("index unavailable")

    server = HealthServer(HealthConfig(enabled=True, port=0), broken)
    server.start()
    try:
        code, body = _get(server.port, "/status")
        assert code == 500 and "index unavailable" in body["error"]
        assert _get(server.port, "/livez")[0] == 200
    finally:
        server.stop()
