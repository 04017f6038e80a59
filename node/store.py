"""Durable file storage: nothing counts as stored until it is fsynced and renamed into place.

Layout under ``data_dir``::

    instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   received instances, as received
    tmp/                                                                     spool files (removed at start-up)

A UID that is digits and dots but not conformant in length (more than 64 characters, accepted by the tolerant
receive policy) gets a fixed stand-in file name, ``uid-<sha256 of the UID>``; the index keeps the real UID.

The write protocol is the classic one: write to a temp file on the same filesystem, fsync it, move it to the
final name atomically (a hard link plus unlink: a rename that never overwrites a stored copy), fsync the directory
so the move itself survives a power cut.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

_UID_SYNTAX = re.compile(r"^[0-9]+(\.[0-9]+)*$")  # digits and dots, no empty component: safe in a file name
_NAME_LIMIT = 64  # the UI VR's maximum; longer (non-conformant) UIDs get a hashed stand-in name
MAX_UID_LENGTH = 256  # longer is not a UID that was meant as one


class StorageError(OSError):
    """The instance could not be made durable (disk full, permissions, I/O error)."""


class InvalidUIDError(ValueError):
    """A UID that cannot be used as a file name (not a DICOM UID)."""


def file_name_for_uid(uid: str, what: str = "UID") -> str:
    """The file or folder name standing for `uid`: the UID itself, or for a UID longer than 64 characters a
    fixed name derived from it (same UID, same name: duplicates are still recognised).

    Raises InvalidUIDError for anything that is not digits and dots (never a path: no '/', no '..')."""
    if len(uid) > MAX_UID_LENGTH or not _UID_SYNTAX.match(uid):
        raise InvalidUIDError(f"{what} {uid[:80]!r} is not a valid DICOM UID")
    if len(uid) <= _NAME_LIMIT:
        return uid
    return "uid-" + hashlib.sha256(uid.encode("ascii")).hexdigest()


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


@dataclass
class TmpCleanup:
    """What start-up found in tmp/."""

    empty: int = 0          # spool files made ahead and never used
    partial: int = 0        # spool files holding part of a transfer that was never acknowledged
    partial_bytes: int = 0


class InstanceStore:
    """Received instances on disk, one file per SOP instance, stored byte for byte as received."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir)
        self.instances = self.root / "instances"
        self.tmp = self.root / "tmp"
        for d in (self.root, self.instances, self.tmp):
            d.mkdir(parents=True, exist_ok=True)

    def path_for(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return (self.instances / file_name_for_uid(study_uid, "StudyInstanceUID")
                / file_name_for_uid(series_uid, "SeriesInstanceUID")
                / f"{file_name_for_uid(sop_uid, 'SOPInstanceUID')}.dcm")

    def clean_tmp(self) -> TmpCleanup:
        """Remove what a previous run left in tmp/: empty spool files made ahead of need (the spool pool) and
        partial writes of interrupted transfers (never acknowledged)."""
        found = TmpCleanup()
        for p in self.tmp.iterdir():
            try:
                size = p.stat().st_size
                p.unlink()
            except OSError as exc:
                logger.warning("cannot remove stale spool file %s: %s", p, exc)
                continue
            if size:
                found.partial += 1
                found.partial_bytes += size
            else:
                found.empty += 1
        return found

    def iter_files(self) -> Iterable[Path]:
        """Every stored instance file (used to reconcile the index after a crash)."""
        return self.instances.glob("*/*/*.dcm")

