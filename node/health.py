"""The node's HTTP server (stdlib, one thread per request): health, metrics and the dashboard.

- ``GET /livez``  200 while the process serves requests (liveness). Never needs credentials.
- ``GET /readyz`` 200 if the status provider reports ``"ready": true``, else 503; the body says why not.
  Never needs credentials.
- ``GET /status`` the provider's dictionary as JSON (queue depths, last error, warnings, ...).
- ``GET /metrics`` Prometheus text format (node/metrics.py), when the node has metrics.
- ``/ui/...`` the dashboard (node/dashboard.py), when ``[dashboard] enabled = true``.

Runs when ``[health] enabled`` or ``[dashboard] enabled``, on the ``[health]`` host and port. With a
``[dashboard]`` token or username/password, everything but /livez and /readyz needs them (``Authorization:
Bearer``, HTTP basic auth, or the dashboard login's cookie); with ``[dashboard.tls]`` the server speaks HTTPS only.
Both are required by the configuration for the dashboard when the host is not a loopback address; bound there
without credentials, /status and /metrics are refused (403) and only the probes answer.

Bound to a loopback address, a request whose ``Host`` header names anything but a loopback address,
``localhost`` or the configured host is refused (421): a web page the operator's browser opens cannot reach the
node by pointing its own name at 127.0.0.1 (DNS rebinding). Refused credentials and refused Host headers are
audited (``event=access-refused``).
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Protocol

from node.audit import audit
from node.config import DashboardConfig, HealthConfig, is_loopback

if TYPE_CHECKING:
    from node.metrics import NodeMetrics
    from node.outbox import Outbox
    from node.sender import Sender

__all__ = ["HealthServer", "Response", "Request", "outbox_status", "TOKEN_COOKIE"]

logger = logging.getLogger(__name__)

TOKEN_COOKIE = "livernode_token"
_OPEN_PATHS = ("/livez", "/readyz")
_MAX_FORM = 64 * 1024


def outbox_status(outbox: Outbox, sender: Sender | None) -> dict[str, Any]:
    """Status fragment for the outbox: ready when the sender runs, depths by state, the latest error."""
    last = sender.last_error if sender is not None else None
    return {
        "ready": bool(sender is not None and sender.running),
        "outbox": outbox.depths(),
        "last_error": last or outbox.last_error(),
        "sender": sender.status() if sender is not None else None,
    }


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    operator: str  # who, for the audit trail: user name, "token" or "local", and the client address
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Response:
    code: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


class WebApp(Protocol):
    """What serves /ui/ (node.dashboard.Dashboard)."""

    def handle(self, request: Request) -> Response: ...


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    ssl_context: ssl.SSLContext | None = None

    def finish_request(self, request: Any, client_address: Any) -> None:
        """TLS handshake in the request's own thread, so a slow client never blocks the accept loop."""
        if self.ssl_context is not None:
            request.settimeout(10)
            try:
                request = self.ssl_context.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError) as exc:
                logger.info("HTTPS handshake with %s failed: %s", client_address[0], exc)
                return
        super().finish_request(request, client_address)


class HealthServer:
    """Serves health, /status, /metrics and the dashboard in daemon threads."""

    def __init__(self, config: HealthConfig, status_provider: Callable[[], dict], *,
                 auth: DashboardConfig | None = None, metrics: NodeMetrics | None = None,
                 ui: WebApp | None = None) -> None:
        self._config = config
        self._provider = status_provider
        self._auth = auth or DashboardConfig()
        self._metrics = metrics
        self._ui = ui
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        return self._config.enabled or self._ui is not None

    @property
    def port(self) -> int | None:
        """The bound port (useful with port 0), or None when not started."""
        return self._server.server_address[1] if self._server is not None else None

    @property
    def scheme(self) -> str:
        return "https" if self._auth.tls else "http"

    def start(self) -> None:
        """Bind and serve; does nothing when disabled. Raises OSError if the port is taken."""
        if not self.enabled:
            logger.debug("HTTP endpoint disabled")
            return
        if self._server is not None:
            return
        server = _Server((self._config.host, self._config.port), self._handler_class(), bind_and_activate=False)
        if ":" in self._config.host:
            server.address_family = socket.AF_INET6
            server.socket = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            server.server_bind()
            server.server_activate()
        except OSError:
            server.server_close()
            raise
        if self._auth.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(str(self._auth.cert_file), str(self._auth.key_file))
            server.ssl_context = ctx
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
        self._thread.start()
        what = "livez, readyz, status" + (", metrics" if self._metrics else "") + (", ui" if self._ui else "")
        logger.info("HTTP endpoint on %s://%s:%d/ (%s)%s", self.scheme, self._config.host, self.port, what,
                    "; credentials required" if self._auth.auth_required else "")

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self._server = self._thread = None

    @property
    def loopback(self) -> bool:
        return is_loopback(self._config.host)

    # ------------------------------------------------------------------ requests
    def _host_allowed(self, host_header: str | None) -> bool:
        """Bound to loopback: the Host header must name this machine (anti DNS rebinding). Without a Host header
        (HTTP/1.0 tools) there is no name to rebind."""
        if not self.loopback or not host_header:
            return True
        name = host_header.strip().lower()
        if name.startswith("["):  # [::1]:8080
            name = name[1:].split("]", 1)[0]
        elif name.count(":") == 1:
            name = name.split(":", 1)[0]
        return is_loopback(name) or name == self._config.host.lower()

    def _authorised(self, headers: Any) -> str | None:
        """Who is asking (for the audit trail) if the credentials are right, else None. Without configured
        credentials only a loopback-bound server lets anyone in (as "local")."""
        auth = self._auth
        if not auth.auth_required:
            return "local" if self.loopback else None
        given = headers.get("Authorization", "")
        if auth.token:
            if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), auth.token.encode()):
                return "token"
            cookies = dict(c.strip().split("=", 1) for c in headers.get("Cookie", "").split(";") if "=" in c)
            if hmac.compare_digest(cookies.get(TOKEN_COOKIE, "").encode(), auth.token.encode()):
                return "token"
        if auth.username and given.startswith("Basic "):
            try:
                user, _, pw = base64.b64decode(given[6:].strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            if hmac.compare_digest(user.encode(), auth.username.encode()) and \
                    hmac.compare_digest(pw.encode(), auth.password.encode()):
                return user
        return None

    def _route(self, req: Request, raw_headers: Any) -> Response:
        path = req.path
        if not self._host_allowed(raw_headers.get("Host")):
            audit("access-refused", path=path, address=req.operator, host=raw_headers.get("Host", ""),
                  reason="Host header names another machine (DNS rebinding?)")
            return Response(421, b"this server answers to localhost / 127.0.0.1 only\n", "text/plain; charset=utf-8")
        if path == "/livez":
            return _json(200, {"status": "alive"})
        if path == "/favicon.ico":
            return Response(204)
        if path == "/readyz":
            status = self._provider()
            ready = bool(status.get("ready", True))
            body = {"ready": ready}
            if status.get("not_ready"):
                body["why"] = status["not_ready"]
            if status.get("warnings"):
                body["warnings"] = status["warnings"]
            return _json(200 if ready else 503, body)
        who = self._authorised(raw_headers)
        if path == "/ui/login" and self._ui is not None and self._auth.token:
            return self._login(req)
        if who is None and not self._auth.auth_required:  # beyond loopback, and nothing to authenticate with
            return _json(403, {"error": f"{path} is not served beyond this machine without credentials: set a "
                                        "[dashboard] token or username/password (/livez and /readyz stay open)"})
        if who is None:
            if _presented(raw_headers):
                audit("access-refused", path=path, address=req.operator, reason="wrong credentials")
            if path.startswith("/ui") and self._ui is not None:
                if self._auth.token:
                    return Response(303, headers={"Location": "/ui/login"})
                return Response(401, b"credentials required\n", "text/plain; charset=utf-8",
                                {"WWW-Authenticate": 'Basic realm="liver-node", charset="UTF-8"'})
            hdrs = {"WWW-Authenticate": 'Basic realm="liver-node"'} if self._auth.username else {}
            return Response(401, b'{"error": "credentials required"}\n', "application/json", hdrs)
        req.operator = f"{who}@{req.operator}"
        if path == "/status":
            return _json(200, self._provider())
        if path == "/metrics" and self._metrics is not None:
            from node.metrics import CONTENT_TYPE

            return Response(200, self._metrics.exposition(), CONTENT_TYPE)
        if (path == "/ui" or path.startswith("/ui/")) and self._ui is not None:
            return self._ui.handle(req)
        if path == "/" and self._ui is not None:
            return Response(303, headers={"Location": "/ui/"})
        known = "/livez, /readyz, /status" + (", /metrics" if self._metrics else "") + (", /ui/" if self._ui else "")
        return _json(404, {"error": f"unknown path {path}; use {known}"})

    def _login(self, req: Request) -> Response:
        """Token login for browsers: a form; the right token is kept in an HttpOnly, SameSite=Strict cookie."""
        error = ""
        if req.method == "POST":
            token = req.form.get("token", "")
            if hmac.compare_digest(token.encode(), self._auth.token.encode()):
                secure = "; Secure" if self._auth.tls else ""
                return Response(303, headers={
                    "Location": "/ui/",
                    "Set-Cookie": f"{TOKEN_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict{secure}"})
            error = "<p class='error'>Wrong token.</p>"
            logger.warning("dashboard login with a wrong token from %s", req.operator)
            audit("access-refused", path=req.path, address=req.operator, reason="wrong token at the login form")
        page = ("<!doctype html><html lang='en'><head><meta charset='utf-8'><title>liver-node: sign in</title>"
                "<link rel='stylesheet' href='/ui/static/style.css'></head><body><main><h1>liver-node</h1>"
                f"{error}<form method='post' action='/ui/login'><label>Access token "
                "<input type='password' name='token' autocomplete='current-password' autofocus></label> "
                "<button type='submit'>Sign in</button></form></main></body></html>")
        return Response(401 if error else 200, page.encode())

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        app = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "liver-node"
            sys_version = ""

            def _send(self, rsp: Response) -> None:
                self.send_response(rsp.code)
                self.send_header("Content-Type", rsp.content_type)
                self.send_header("Content-Length", str(len(rsp.body)))
                self.send_header("Cache-Control", "no-store")
                self.send_header("X-Content-Type-Options", "nosniff")
                if rsp.content_type.startswith("text/html"):
                    self.send_header("Content-Security-Policy", "default-src 'self'; script-src 'none'; "
                                                                "frame-ancestors 'none'; form-action 'self'")
                    self.send_header("Referrer-Policy", "same-origin")
                for k, v in rsp.headers.items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(rsp.body)

            def _handle(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                form: dict[str, str] = {}
                if method == "POST":
                    n = int(self.headers.get("Content-Length") or 0)
                    if n > _MAX_FORM:
                        self._send(Response(413, b"form too large\n", "text/plain"))
                        return
                    form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode("utf-8", "replace")))
                req = Request(method=method, path=url.path,
                              query=dict(urllib.parse.parse_qsl(url.query)), form=form,
                              operator=self.client_address[0], headers=dict(self.headers.items()))
                try:
                    rsp = app._route(req, self.headers)
                except Exception as exc:  # report, never crash the endpoint
                    logger.exception("HTTP %s %s failed", method, url.path)
                    rsp = _json(500, {"ready": False, "error": repr(exc)})
                self._send(rsp)

            def do_GET(self) -> None:  # noqa: N802 (http.server naming)
                self._handle("GET")

            def do_HEAD(self) -> None:  # noqa: N802
                self._handle("HEAD")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (stdlib signature)
                logger.debug("http %s - %s", self.address_string(), format % args)

        return Handler


def _presented(headers: Any) -> bool:
    """Did the request carry credentials (an Authorization header or the login cookie)?"""
    return bool(headers.get("Authorization")) or f"{TOKEN_COOKIE}=" in headers.get("Cookie", "")


def _json(code: int, body: Any) -> Response:
    return Response(code, (json.dumps(body, indent=1, default=str) + "\n").encode(), "application/json")
