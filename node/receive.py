"""Accepting one received instance: check it, make it durable, index it, tell completion.

Pure of networking: the SCP hands over a spooled temp file and the request's identifiers; failures raise
specific exceptions (header.InvalidInstanceError, store.StorageError, store.InvalidUIDError, IndexWriteError)
that only the network edge turns into DIMSE statuses.
"""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from node.completion import Completion
from node.header import read_header
from node.index import Index
from node.store import InstanceStore, StorageError, commit_file

logger = logging.getLogger(__name__)


class IndexWriteError(StorageError):
    """The instance is on disk but the index could not record it (reconciled at the next start)."""


class Receiver:
    def __init__(self, store: InstanceStore, index: Index, completion: Completion | None,
                 stable_seconds: float) -> None:
        self.store = store
        self.index = index
        self.completion = completion
        self.stable_seconds = stable_seconds

    def accept(self, spooled: Path, sop_class_uid: str, sop_instance_uid: str, calling_ae: str,
               transfer_syntax_uid: str = "") -> tuple[Path, bool]:
        """Validate and store a spooled Part 10 file. Returns (stored path, newly stored?).

        The spooled file is consumed (renamed into place or removed) in every case.
        """
        try:
            info = read_header(spooled, sop_class_uid, sop_instance_uid, transfer_syntax_uid)
            existing = self.index.has_instance(info.sop_instance_uid)
            if existing:
                logger.info("duplicate SOP Instance %s from %s: kept the stored copy", info.sop_instance_uid,
                            calling_ae)
                return Path(existing), False
            final = self.store.path_for(info.study_uid, info.series_uid, info.sop_instance_uid)
            size = commit_file(spooled, final)
        finally:
            if spooled.exists():
                spooled.unlink(missing_ok=True)
        try:
            new, case_id = self.index.add_instance(info, final, size, calling_ae, self.stable_seconds)
        except sqlite3.Error as exc:
            raise IndexWriteError(28, f"stored {final.name} but cannot index it: {exc}") from exc
        if new and self.completion is not None:
            self.completion.instance_arrived(info.study_uid)
        return final, new

    def reconcile(self) -> int:
        """Index files on disk that the index lacks (a crash or power cut between rename and commit)."""
        known = self.index.all_paths()
        added = 0
        for path in self.store.iter_files():
            if str(path) in known:
                continue
            try:
                info = read_header(path)
                self.index.add_instance(info, path, path.stat().st_size, "(recovered)", self.stable_seconds)
                if self.completion is not None:
                    self.completion.instance_arrived(info.study_uid)
                added += 1
            except Exception as exc:  # one bad file must not stop start-up
                logger.error("cannot re-index %s: %s", path, exc)
        if added:
            logger.warning("re-indexed %d stored instance(s) the index had lost", added)
        return added
