"""A small HTTP health endpoint (stdlib, one thread), off unless ``[health] enabled = true``.

- ``GET /livez``  200 while the process serves requests (liveness).
- ``GET /readyz`` 200 if the status provider reports ``"ready": true`` (default when absent), else 503.
- ``GET /status`` the provider's dictionary as JSON (queue depths, last error, ...).

Bind it to 127.0.0.1 (the default) or a management network: it has no authentication and reveals case state.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from node.config import HealthConfig

if TYPE_CHECKING:
    from node.outbox import Outbox
    from node.sender import Sender

__all__ = ["HealthServer", "outbox_status"]

logger = logging.getLogger(__name__)


def outbox_status(outbox: Outbox, sender: Sender | None) -> dict[str, Any]:
    """Status fragment for the outbox: ready when the sender runs, depths by state, the latest error."""
    last = sender.last_error if sender is not None else None
    return {
        "ready": bool(sender is not None and sender.running),
        "outbox": outbox.depths(),
        "last_error": last or outbox.last_error(),
        "sender": sender.status() if sender is not None else None,
    }


class HealthServer:
    """Serves /livez, /readyz and /status from `status_provider` in a daemon thread."""

    def __init__(self, config: HealthConfig, status_provider: Callable[[], dict]) -> None:
        self._config = config
        self._provider = status_provider
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port (useful with port 0), or None when not started."""
        return self._server.server_address[1] if self._server is not None else None

    def start(self) -> None:
        """Bind and serve; does nothing when the endpoint is disabled. Raises OSError if the port is taken."""
        if not self._config.enabled:
            logger.debug("health endpoint disabled")
            return
        if self._server is not None:
            return
        self._server = ThreadingHTTPServer((self._config.host, self._config.port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True)
        self._thread.start()
        logger.info("health endpoint on http://%s:%d/ (livez, readyz, status)", self._config.host, self.port)

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        provider = self._provider

        class Handler(BaseHTTPRequestHandler):
            server_version = "liver-node-health"

            def _send(self, code: int, body: Any) -> None:
                data = (json.dumps(body, indent=1, default=str) + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                path = self.path.split("?", 1)[0]
                if path == "/livez":
                    self._send(200, {"status": "alive"})
                    return
                if path not in ("/readyz", "/status"):
                    self._send(404, {"error": f"unknown path {path}; use /livez, /readyz or /status"})
                    return
                try:
                    status = provider()
                except Exception as exc:  # report, do not crash the endpoint
                    logger.exception("health status provider failed")
                    self._send(500, {"ready": False, "error": repr(exc)})
                    return
                if path == "/status":
                    self._send(200, status)
                else:
                    ready = bool(status.get("ready", True))
                    self._send(200 if ready else 503, {"ready": ready})

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
                logger.debug("health %s - %s", self.address_string(), format % args)

        return Handler
