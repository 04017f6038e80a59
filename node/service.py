"""The running node: store + index + SCP + completion + analysis (+ outbox, sender, HTTP, notifications,
retention) wired together.

Start-up order matters for an unattended service: the data-dir lock first, in the constructor before the index
is opened or migrated (one node per data dir), then recovery, then both listening sockets (HTTP and DICOM), and
only then the threads that deliver and notify. A port already taken or a locked data dir is a :class:`StartError`
(exit status 3), a data dir that is a file or not writable a ConfigError (exit status 2); the systemd unit
restarts on neither; everything started so far is stopped again.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

from node import audit as audit_file
from node import netfast
from node.analysis import AnalysisRunner
from node.casestatus import NodeStatus, collect
from node.completion import Completion
from node.config import Config, ConfigError, is_loopback
from node.index import Index, index_path
from node.lock import DataDirLock, DataDirLocked
from node.metrics import NodeMetrics
from node.receive import Receiver
from node.scp import StorageSCP
from node.store import InstanceStore

logger = logging.getLogger(__name__)

#: Exit statuses of `serve` (documented in the README; the systemd unit restarts only on 1).
EXIT_OK, EXIT_FAILURE, EXIT_CONFIG, EXIT_IN_USE = 0, 1, 2, 3


class StartError(RuntimeError):
    """The node cannot start on this host as configured (port taken, data dir in use); restarting cannot help."""

    exit_status = EXIT_IN_USE


class Node:
    """One liver-node process. `start()` returns once listening; `stop()` shuts down cleanly."""

    def __init__(self, config: Config, sink: Any = None, with_outbox: bool = True) -> None:
        """Takes the data-dir lock before anything opens (or migrates) the index: a second node on the same data
        dir is refused here (:class:`StartError`) having touched nothing; a data dir that cannot be used is a
        :class:`ConfigError` naming ``node.data_dir``."""
        self.config = config
        self.lock = DataDirLock(prepare_data_dir(config.node.data_dir), config.source)
        try:
            self.lock.acquire()
        except DataDirLocked as exc:
            raise StartError(str(exc)) from None
        except OSError as exc:
            raise ConfigError("node.data_dir", f"cannot write in {config.node.data_dir}: {exc.strerror or exc}"
                              f" (user {_user()})") from None
        try:
            self._build(config, sink, with_outbox)
        except BaseException:  # e.g. a TLS file that cannot be read (ConfigError): nothing stays open or locked
            for part in ("outbox", "index"):
                if getattr(self, part, None) is not None:
                    getattr(self, part).close()
            self.lock.release()
            raise

    def _build(self, config: Config, sink: Any, with_outbox: bool) -> None:
        self.store = InstanceStore(config.node.data_dir)
        self.index = Index(index_path(config.node.data_dir))
        self.outbox = None
        self.sender = None
        if sink is None and with_outbox:
            from node.outbox import Outbox
            from node.sender import Sender

            self.outbox = Outbox(config)
            self.sender = Sender(config, self.outbox)
            sink = self.outbox
        self.runner = AnalysisRunner(config, self.index, sink)
        self.completion = Completion(self.index, config, on_ready=self.runner.submit)
        self.runner.on_finished = self.completion.evaluate_case  # what arrived during an analysis
        self.receiver = Receiver(self.store, self.index, self.completion, config.completion.stable_seconds,
                                 min_free_bytes=config.node.min_free_disk_mb * 1024 * 1024,
                                 strict=config.receive.strict, duplicates=config.receive.duplicates)
        ssl_context = None
        if config.security.tls is not None:
            from node.tls import TlsSetupError, server_context

            try:
                ssl_context = server_context(config.security.tls)
            except TlsSetupError as exc:
                raise ConfigError(f"security.tls.{exc.field}", str(exc)) from exc
        self.scp = StorageSCP(config, self.receiver, ssl_context)
        self.metrics = NodeMetrics(self.node_status)
        self.scp.observe_store = self.metrics.observe_store
        if self.sender is not None:
            self.sender.on_delivery = self.metrics.on_delivery
        if self.outbox is not None:
            from node.manifest import write_manifests

            outbox = self.outbox
            outbox.on_change = lambda cases: write_manifests(config, self.index, outbox, cases)
        self.notifier: Any = None
        self.health: Any = None
        self.address: tuple[str, int] | None = None
        self._retention_stop = threading.Event()
        self._retention_thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> tuple[str, int]:
        try:
            return self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> tuple[str, int]:
        audit_file.open_file(self.config.node.data_dir)
        for notice in self.config.notices:
            logger.warning("%s", notice)
        logger.info("workflows: %s", ", ".join(wf.name for wf in self.config.workflows))
        netfast.configure_process()  # pynetdicom's process-wide settings, once (the acceptor's own in scp.start)
        left = self.store.clean_tmp()
        if left.partial:
            logger.warning("removed %d partial spool file(s) of interrupted transfers (%d bytes, never acknowledged)",
                           left.partial, left.partial_bytes)
        if left.empty:
            logger.info("removed %d empty spool file(s) made ahead by the last run", left.empty)
        self.receiver.start()  # re-indexes stored files after an unclean stop
        self.runner.start()
        self.completion.start()
        from node.notifications import Notifier, node_secret

        secret = node_secret(self.config.node.data_dir)
        if self.config.http_enabled:
            self.health = self._http_server(secret)
            try:
                self.health.start()
            except OSError as exc:
                raise StartError(_bind_error("HTTP", self.config.health.host, self.config.health.port, exc,
                                             "[health] port")) from None
        try:
            self.address = self.scp.start()
        except OSError as exc:
            raise StartError(_bind_error("DICOM", self.config.node.host, self.config.node.port, exc,
                                         "[node] port")) from None
        if self.sender is not None:
            self.sender.start()
        self.notifier = Notifier(self.config, self.node_status, on_case_finished=self.metrics.analysis_finished)
        self.notifier.start()
        if self.config.retention.enabled:
            self._retention_thread = threading.Thread(target=self._retention_loop, name="retention", daemon=True)
            self._retention_thread.start()
        for warning in self.warnings():
            logger.warning("%s", warning)
        return self.address

    def _http_server(self, secret: bytes) -> Any:
        from node.health import HealthServer

        ui = None
        if self.config.dashboard.enabled:
            from node.dashboard import Dashboard

            ui = Dashboard(self.config, self.index, self.outbox, self.sender, self.completion.evaluate_case, secret)
        return HealthServer(self.config.health, self.health_status, auth=self.config.dashboard, metrics=self.metrics,
                            ui=ui)

    def stop(self) -> None:
        logger.info("stopping")
        self._retention_stop.set()
        self.scp.stop()
        self.receiver.stop()
        self.completion.stop()
        self.runner.stop()
        if self.sender is not None:
            self.sender.stop()
        if self.notifier is not None:
            self.notifier.stop()
            self.notifier = None
        if self.health is not None:
            self.health.stop()
        if self._retention_thread is not None:
            self._retention_thread.join(30)
            self._retention_thread = None
        self.index.close()
        audit_file.close_file(self.config.node.data_dir)
        self.lock.release()
        logger.info("stopped")

    # ------------------------------------------------------------------ status
    def node_status(self, case_id: str | None = None) -> NodeStatus:
        """The status model (node/casestatus.py) of this running node."""
        return collect(self.config, self.index, self.outbox, self.sender, case_id=case_id)

    def warnings(self) -> list[str]:
        """Configuration facts an operator must know at start and in readiness."""
        out = []
        if not self.config.destinations:
            out.append("no destinations configured: results stay in data_dir/outbox and reach nobody")
        elif self.config.unrouted_outputs():
            out.append("no destination takes " + ", ".join(self.config.unrouted_outputs())
                       + " outputs: they stay in data_dir/outbox")
        if self.config.dashboard.enabled and not self.config.dashboard.auth_required \
                and is_loopback(self.config.health.host):
            out.append("dashboard without credentials: reachable by every user of this machine")
        if self.config.http_enabled and not self.config.dashboard.auth_required \
                and not is_loopback(self.config.health.host):
            out.append(f"HTTP server on {self.config.health.host} without credentials: only /livez and /readyz "
                       "answer; /status and /metrics need a [dashboard] token or username/password")
        return out

    def health_status(self) -> dict[str, Any]:
        """For /readyz and /status: ready = listening, (with an outbox) its sender running, a destination
        configured and disk space above the watermark; `not_ready` says what is missing, `warnings` the rest."""
        not_ready = []
        if self.scp.server is None:
            not_ready.append("DICOM port not listening")
        status: dict[str, Any] = {"last_error": self.runner.last_error}
        if self.outbox is not None:
            from node.health import outbox_status

            out = outbox_status(self.outbox, self.sender)
            if not out["ready"]:
                not_ready.append("sender not running")
            status.update(out, last_error=self.runner.last_error or out["last_error"])
            if not self.config.destinations:
                not_ready.append("no destinations configured")
        if self.receiver.disk_low:
            not_ready.append("free disk space below [node] min_free_disk_mb: images are refused")
        status.update(self.index.counts(), analysis_queue=self.runner.depth(), ready=not not_ready,
                      not_ready=not_ready, warnings=self.warnings())
        return status

    # ------------------------------------------------------------------ retention
    def run_retention(self) -> int:
        """Apply the [retention] policy once; returns the number of deletions."""
        from node.retention import apply, plan

        return apply(self.config, self.index, self.outbox, plan(self.config, self.index, self.outbox))

    def _retention_loop(self) -> None:
        interval = self.config.retention.check_interval_minutes * 60
        wait = min(interval, 60.0)  # first pass a minute after start, then every interval
        while not self._retention_stop.wait(wait):
            wait = interval
            try:
                self.run_retention()
            except Exception:  # a failed pass keeps everything; the next one tries again
                logger.exception("retention pass failed")


def _user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # no name for this uid
        return f"uid {os.getuid()}"


def prepare_data_dir(path: Path) -> Path:
    """The data dir, created if missing; a :class:`ConfigError` naming ``node.data_dir`` (exit status 2, no
    restart) when it is a file, cannot be created or is not writable by this user."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError("node.data_dir", f"{path} is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        who = f" (user {_user()})" if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS) else ""
        raise ConfigError("node.data_dir", f"cannot create {path}: {exc.strerror or exc}{who}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError("node.data_dir", f"{path} is not writable by user {_user()}")
    return path


def _bind_error(what: str, host: str, port: int, exc: OSError, key: str) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{what} port {host}:{port} is already in use by another program; stop it or change {key}"
    if exc.errno == errno.EACCES:
        return f"{what} port {host}:{port} needs privileges this process lacks (ports < 1024); change {key}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{what} address {host} is not an address of this machine; change the host next to {key}"
    return f"cannot listen on {what} {host}:{port}: {exc.strerror or exc}"


def serve(config: Config) -> int:
    """Run in the foreground until SIGTERM/SIGINT."""
    node = Node(config)
    stop = threading.Event()

    def _signal(signum: int, _frame: Any) -> None:
        logger.info("received %s", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    node.start()
    started = time.time()
    try:
        stop.wait()
    finally:
        node.stop()
        logger.info("ran %.0f s", time.time() - started)
    return EXIT_OK
