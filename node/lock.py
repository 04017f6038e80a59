"""The data-dir lock: one node per data directory.

`flock` on ``data_dir/liver-node.lock`` (released by the kernel when the process dies, so a crash never leaves
a stale lock) holding who took it: pid, host, start time, config file. A second node on the same data dir
refuses to start and names the holder.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

__all__ = ["DataDirLock", "DataDirLocked", "LOCK_NAME"]

LOCK_NAME = "liver-node.lock"


class DataDirLocked(RuntimeError):
    """Another process holds the data dir."""


class DataDirLock:
    def __init__(self, data_dir: Path, config_source: Path | None = None) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self._source = config_source
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds (or last held) the lock, in words."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        return (f"liver-node pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
                f" (config {info.get('config', '?')})")

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise DataDirLocked(f"data dir {self.path.parent} is in use by {self.holder()}; one node per data dir "
                                "(stop the other one or give this one its own data_dir)") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "config": str(self._source or "-")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
