"""The running node: store + index + SCP + completion + analysis (+ outbox, sender, health) wired together."""
from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from node import netfast
from node.analysis import AnalysisRunner
from node.completion import Completion
from node.config import Config, ConfigError
from node.index import Index, index_path
from node.receive import Receiver
from node.scp import StorageSCP
from node.store import InstanceStore

logger = logging.getLogger(__name__)


class Node:
    """One liver-node process. `start()` returns once listening; `stop()` shuts down cleanly."""

    def __init__(self, config: Config, sink: Any = None, with_outbox: bool = True) -> None:
        self.config = config
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
        self.receiver = Receiver(self.store, self.index, self.completion, config.completion.stable_seconds,
                                 strict=config.receive.strict)
        ssl_context = None
        if config.security.tls is not None:
            from node.tls import TlsSetupError, server_context

            try:
                ssl_context = server_context(config.security.tls)
            except TlsSetupError as exc:
                raise ConfigError(f"security.tls.{exc.field}", str(exc)) from exc
        self.scp = StorageSCP(config, self.receiver, ssl_context)
        self.health = None
        self.address: tuple[str, int] | None = None

    def start(self) -> tuple[str, int]:
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
        if self.sender is not None:
            self.sender.start()
        if self.config.health.enabled:
            from node.health import HealthServer

            self.health = HealthServer(self.config.health, self.health_status)
            self.health.start()
        self.address = self.scp.start()
        return self.address

    def stop(self) -> None:
        logger.info("stopping")
        self.scp.stop()
        self.receiver.stop()
        self.completion.stop()
        self.runner.stop()
        if self.sender is not None:
            self.sender.stop()
        if self.health is not None:
            self.health.stop()
        self.index.close()
        logger.info("stopped")

    def health_status(self) -> dict[str, Any]:
        """For /readyz and /status: ready = listening and (if there is an outbox) its sender running."""
        status: dict[str, Any] = {"ready": self.scp.server is not None, "last_error": self.runner.last_error}
        if self.outbox is not None:
            from node.health import outbox_status

            out = outbox_status(self.outbox, self.sender)
            status.update(out, ready=status["ready"] and out["ready"],
                          last_error=self.runner.last_error or out["last_error"])
        status.update(self.index.counts(), analysis_queue=self.runner.depth())
        return status


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
    try:
        stop.wait()
    finally:
        node.stop()
    return 0
