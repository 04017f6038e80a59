"""Durable file storage: nothing counts as stored until it is fsynced and renamed into place.

Layout under ``data_dir``::

    instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   received instances, as received
    tmp/                                                                     partial writes (removed at start-up)

The write protocol is the classic one: write to a temp file on the same filesystem, fsync it, move it to the
final name atomically (a hard link plus unlink: a rename that never overwrites a stored copy), fsync the directory
so the move itself survives a power cut.
"""
from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

logger = logging.getLogger(__name__)

_SAFE_UID = re.compile(r"^[0-9.]{1,64}$")


class StorageError(OSError):
    """The instance could not be made durable (disk full, permissions, I/O error)."""


class InvalidUIDError(ValueError):
    """A UID that cannot be used as a file name (not a DICOM UID)."""


def _check_uid(uid: str, what: str) -> str:
    if not _SAFE_UID.match(uid) or uid.startswith(".") or ".." in uid or uid.endswith("."):
        raise InvalidUIDError(f"{what} {uid!r} is not a valid DICOM UID")
    return uid


def fsync_dir(path: Path) -> None:
    """Make a rename/creation inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_file(path: Path) -> int:
    """fsync a written file (first half of a commit; may run on a worker thread). Returns its size."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            return os.fstat(fd).st_size
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(exc.errno or errno.EIO, f"cannot sync {path.name}: {exc.strerror or exc}") from exc


def publish(src: Path, final: Path) -> bool:
    """Put a synced file in place and fsync its folder (second half of a commit). Returns False, leaving the
    stored file untouched, when `final` already exists: a hard link is an atomic rename that never overwrites."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, final)
        except FileExistsError:
            return False
        os.unlink(src)
        fsync_dir(final.parent)
        return True
    except OSError as exc:
        raise StorageError(exc.errno or errno.EIO, f"cannot store {final.name}: {exc.strerror or exc}") from exc


class InstanceStore:
    """Received instances on disk, one file per SOP instance, stored byte for byte as received."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.instances = self.root / "instances"
        self.tmp = self.root / "tmp"
        for d in (self.root, self.instances, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return (self.instances / _check_uid(study_uid, "StudyInstanceUID") / _check_uid(series_uid, "SeriesInstanceUID")
                / f"{_check_uid(sop_uid, 'SOPInstanceUID')}.dcm")

    def clean_tmp(self) -> int:
        """Remove partial writes left by a crash (they were never acknowledged). Returns how many."""
        n = 0
        for p in self.tmp.iterdir():
            try:
                p.unlink()
                n += 1
            except OSError as exc:
                logger.warning("cannot remove stale partial file %s: %s", p, exc)
        return n

    def iter_files(self) -> Iterable[Path]:
        """Every stored instance file (used to reconcile the index after a crash)."""
        return self.instances.glob("*/*/*.dcm")

