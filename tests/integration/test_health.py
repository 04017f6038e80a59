"""Health endpoint: liveness, readiness, JSON status with queue depths and the last error; off by default."""
# mypy: disable-error-code="union-attr, index, arg-type"
from __future__ import annotations

import base64
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


def _status_of(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as rsp:
            return rsp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_beyond_loopback_status_and_metrics_need_credentials_the_probes_do_not(tmp_path: Path) -> None:
    from node.audit import recent
    from node.service import Node

    from conftest import RecordingSink

    token = "metrics-token-0123456789"
    bare = Node(make_config(tmp_path / "bare", health={"enabled": True, "host": "0.0.0.0", "port": 0}),
                sink=RecordingSink())
    bare.start()
    try:
        url = f"http://127.0.0.1:{bare.health.port}"
        assert _status_of(url + "/livez") == 200 and _status_of(url + "/readyz") in (200, 503)
        assert _status_of(url + "/status") == 403 and _status_of(url + "/metrics") == 403
        assert any("only /livez and /readyz answer" in w for w in bare.warnings())
    finally:
        bare.stop()
    node = Node(make_config(tmp_path / "tok", health={"enabled": True, "host": "0.0.0.0", "port": 0},
                            dashboard={"token": token, "username": "prometheus", "password": "scrape-password-1"}),
                sink=RecordingSink())
    node.start()
    try:
        url = f"http://127.0.0.1:{node.health.port}"
        assert _status_of(url + "/livez") == 200 and _status_of(url + "/readyz") in (200, 503)
        assert _status_of(url + "/status") == 401 and _status_of(url + "/metrics") == 401
        assert _status_of(url + "/metrics", {"Authorization": "Bearer wrong-token-0123456789"}) == 401
        refused = [e for e in recent(20) if e.event == "access-refused"]
        assert refused and (refused[0].fields["path"], refused[0].fields["reason"]) == ("/metrics", "wrong credentials")
        assert _status_of(url + "/status", {"Authorization": f"Bearer {token}"}) == 200
        basic = base64.b64encode(b"prometheus:scrape-password-1").decode()
        assert _status_of(url + "/metrics", {"Authorization": f"Basic {basic}"}) == 200
    finally:
        node.stop()


def test_on_loopback_a_host_header_naming_another_machine_is_refused(tmp_path: Path) -> None:
    """DNS rebinding: a page from attacker.example whose name now resolves to 127.0.0.1 sends Host:
    attacker.example; the node answers only to its own names (the port may differ: an SSH tunnel)."""
    from node.audit import recent
    from node.service import Node

    from conftest import RecordingSink

    node = Node(make_config(tmp_path / "var", health={"enabled": True, "port": 0}, dashboard={"enabled": True}),
                sink=RecordingSink())
    node.start()
    try:
        url = f"http://127.0.0.1:{node.health.port}"
        for path in ("/ui/", "/status", "/metrics"):
            assert _status_of(url + path, {"Host": f"attacker.example:{node.health.port}"}) == 421, path
            assert _status_of(url + path, {"Host": f"localhost:{node.health.port + 1}"}) == 200, path
        assert _status_of(url + "/ui/", {"Host": "127.0.0.1"}) == 200
        assert _status_of(url + "/ui/", {"Host": f"[::1]:{node.health.port}"}) == 200
        assert _status_of(url + "/ui/", {"Host": "127.0.0.1.attacker.example"}) == 421
        hosts = [e.fields.get("host") for e in recent(50) if e.event == "access-refused"][:4]  # newest first
        assert hosts == ["127.0.0.1.attacker.example"] + [f"attacker.example:{node.health.port}"] * 3
    finally:
        node.stop()
