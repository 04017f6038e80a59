"""A running node with the operator's features on, fed a phantom patient and a waiting case: shared by the
dashboard (browser), metrics, webhook and manifest tests and by scripts/dashboard_screenshots.py.

- the phantom patient (perfusion + GSA + MAA) is analysed and delivered to two folder destinations (pacs, tps);
  a third destination ("archive", a DICOM peer on a closed port) takes the reports and fails, so the outbox has
  failures and a destination-failing alert;
- a second patient sends only a GSA SPECT: a case that waits for its SPECT/CT and planning CT (and stalls);
- one instance without a Series Instance UID is refused (0xA900; an image without pixel data no longer is: the
  tolerant receive policy stores it, marked unusable);
- a local webhook receiver answers 503 to the first POST (retried) and records every notification.
"""
# mypy: disable-error-code="union-attr"
from __future__ import annotations

import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE

from node.config import Config, load_config
from node.demo import send_files
from node.service import Node

import factories as F
from conftest import free_port, wait_until

WAITING_PATIENT = "WAIT-GSA-1"


class WebhookReceiver:
    """A local HTTP receiver: records JSON POSTs; answers 503 to the first `fail_first` requests."""

    def __init__(self, fail_first: int = 1) -> None:
        self.received: list[dict[str, Any]] = []
        self.raw: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.attempts = 0
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                outer.attempts += 1
                if outer.attempts <= outer.fail_first:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.raw.append(body)
                outer.headers.append(dict(self.headers.items()))
                outer.received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.received if e["event"] == name]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class OpsCase:
    node: Node
    config: Config
    config_path: Path
    phantom: Path
    truth: dict[str, Any]
    receiver: WebhookReceiver
    sent_files: list[Path]
    refused: int
    waiting_patient: str = WAITING_PATIENT
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def case_id(self) -> str:
        return str(self.truth["patient_id"])

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.node.health.port}"

    def stop(self) -> None:
        self.node.stop()
        self.receiver.stop()


def write_config(tmp: Path, hook_url: str, extra: str = "") -> Path:
    cfg = tmp / "config.toml"
    cfg.write_text(f"""
[node]
ae_title = "LIVERNODE"
host = "127.0.0.1"
port = {free_port()}
data_dir = "var"
min_free_disk_mb = 1
[completion]
stable_seconds = 2
[outbox]
max_attempts = 2
backoff_initial_seconds = 0.2
backoff_max_seconds = 0.5
[health]
enabled = true
host = "127.0.0.1"
port = 0
[dashboard]
enabled = true
[notifications]
check_interval_seconds = 0.5
stalled_after_minutes = 0.05
destination_failing_after_minutes = 0
[notifications.webhooks.ops]
url = "{hook_url}"
backoff_initial_seconds = 0.3
[destinations.pacs]
folder = "results/pacs"
outputs = ["parametric-map", "secondary-capture", "report"]
[destinations.tps]
folder = "results/tps"
outputs = ["rtstruct"]
[destinations.archive]
ae_title = "ARCHIVE"
host = "127.0.0.1"
port = {closed_port()}
outputs = ["report"]
[analysis.maa]
normal_liver_dose_gy = 70.0  # a plan above resin's 40 Gy limit, so that the safety flags show
{extra}
""")
    return cfg


def start_ops_case(tmp: Path, timeout: float = 900.0) -> OpsCase:
    """Start the node, send both patients and wait until the phantom case is done and delivered."""
    from node.phantom import write_phantom

    phantom = write_phantom(tmp / "phantom", size="small", seed=5)
    truth = json.loads((phantom / "truth.json").read_text())
    receiver = WebhookReceiver(fail_first=1)
    cfg_path = write_config(tmp, receiver.url)
    config = load_config(cfg_path)
    node = Node(config)
    node.start()
    try:
        files = sorted(p for p in phantom.rglob("*.dcm") if "truth" not in p.parts)
        stored, refused = send_files("127.0.0.1", config.node.port, "LIVERNODE", files)
        assert (stored, refused) == (len(files), 0)
        # the waiting patient: a GSA SPECT alone, and one CT without a Series Instance UID (refused 0xA900)
        nm = F.nm_multiframe(WAITING_PATIENT)
        bad = F.ct_series(WAITING_PATIENT, 1)[0]
        del bad.SeriesInstanceUID
        ae = AE(ae_title="WAITSCU")
        ae.add_requested_context(F.NM)
        ae.add_requested_context(F.CT)
        assoc = ae.associate("127.0.0.1", config.node.port, ae_title="LIVERNODE")
        assert assoc.send_c_store(nm).Status == 0
        assert assoc.send_c_store(bad).Status == 0xA900
        assoc.release()
        sent = files + [Path("(generated NM)")]
        case_id = str(truth["patient_id"])

        def finished() -> bool:
            c = node.index.get_case(case_id)
            if c is None or c.state not in ("done", "failed"):
                return False
            rows = node.outbox.summary(case_id)
            return bool(rows) and all(r["state"] in ("sent", "failed") for r in rows)

        assert wait_until(finished, timeout=timeout, poll=0.5), node.index.get_case(case_id)
        assert node.index.get_case(case_id).state == "done", node.index.get_case(case_id)
        waiting = node.index.get_case(WAITING_PATIENT)
        assert waiting is not None
        # the notifier has seen it all (done, failing destination, stalled waiting case)
        assert wait_until(lambda: {"case-done", "destination-failing", "case-stalled"}
                          <= {e["event"] for e in receiver.received}, timeout=60, poll=0.2), receiver.received
        return OpsCase(node=node, config=config, config_path=cfg_path, phantom=phantom, truth=truth,
                       receiver=receiver, sent_files=sent, refused=1)
    except BaseException:
        node.stop()
        receiver.stop()
        raise


def stored_bytes(config: Config) -> int:
    return sum(p.stat().st_size for p in (Path(config.node.data_dir) / "instances").rglob("*.dcm"))


def headers_of(path: Path) -> pydicom.Dataset:
    return pydicom.dcmread(path, stop_before_pixels=True)


def wait_http(url: str, timeout: float = 10.0) -> bool:
    import urllib.request

    end = time.time() + timeout
    while time.time() < end:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return True
        except Exception:
            time.sleep(0.1)
    return False


def assert_no_phi(bodies: list[bytes], values: list[str]) -> None:
    """No patient value (ID, name, birth date ...) anywhere in any notification body."""
    for body in bodies:
        for value in filter(None, values):
            assert value.encode() not in body, (value, body[:300])
