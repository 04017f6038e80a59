"""Accepting one received instance: check it, make it durable, then index it and tell completion.

Pure of networking: the SCP hands over a spooled temp file and the request's identifiers; failures raise
specific exceptions (header.InvalidInstanceError, store.StorageError, store.InvalidUIDError) that only the network
edge turns into DIMSE statuses.

Durability is the file: :meth:`Receiver.accept` returns (and the SCP answers success) once the file is fsynced,
linked into place and its folder fsynced. Indexing is derived state and happens right after, on a writer thread
that commits arrivals in batches, off the C-STORE round trip. Should the process die in between, start-up
re-indexes every stored file the index lacks (:meth:`Receiver.reconcile`), so nothing acknowledged is ever lost.
"""
from __future__ import annotations

import errno
import logging
import queue
import shutil
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import NamedTuple

from node.completion import Completion
from node.header import InstanceInfo, read_header
from node.index import Arrival, Index
from node.resend import Resender, resent_path
from node.store import InstanceStore, StorageError, publish, sync_file

logger = logging.getLogger(__name__)

_BATCH = 500
_GATHER_SECONDS = 0.05  # group commit: let a burst of arrivals share one index transaction
_CLEAN_MARK = "clean-shutdown"
#: Free space is looked at most this often while above the watermark (every time while below it): at 200 MB/s
#: that is at most 40 MB past the watermark, which is meant to be gigabytes.
_DISK_CHECK_SECONDS = 0.2  # written by stop(): the index is complete, start-up need not rescan the files


class Accepted(NamedTuple):
    """A received instance made durable: where it is, whether it is new, and its header."""

    path: Path
    new: bool
    info: InstanceInfo


class Receiver:
    def __init__(self, store: InstanceStore, index: Index, completion: Completion | None,
                 stable_seconds: float, min_free_bytes: int = 0, strict: bool = False,
                 duplicates: str = "replace") -> None:
        self.store = store
        #: re-sent SOP instances ([receive] duplicates): compared and replaced or set aside off the hot path
        self.resender = Resender(store.root, index, duplicates, stable_seconds)
        #: disk watermark ([node] min_free_disk_mb): below it, accept() refuses before storing anything
        self.min_free_bytes = min_free_bytes
        self.disk_low = False
        self._disk_checked = 0.0  # monotonic time of the last statvfs
        self.strict = strict  # [receive] strict: refuse what the tolerant policy accepts as unusable
        self.index = index
        self.completion = completion
        self.stable_seconds = stable_seconds
        self.last_error = ""
        self._sync_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="fsync")
        self._arrivals: queue.Queue[Arrival | None] = queue.Queue()
        self._writer: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Recover from an unclean stop, then start the index writer."""
        mark = self.store.root / _CLEAN_MARK
        if mark.exists():
            mark.unlink()
        else:
            self.reconcile()
        self._writer = threading.Thread(target=self._index_loop, name="index-writer", daemon=True)
        self._writer.start()

    def stop(self) -> None:
        """Index everything accepted so far, then mark the stop as clean."""
        if self._writer is not None:
            self._arrivals.put(None)
            self._writer.join()
            self._writer = None
            if not self.last_error:
                try:
                    (self.store.root / _CLEAN_MARK).touch()
                except OSError as exc:  # then the next start rescans the files: slower, never wrong
                    logger.warning("cannot mark a clean stop: %s", exc)
        self._sync_pool.shutdown(wait=True)

    def flush(self) -> None:
        """Wait until every accepted instance is indexed (tests, status)."""
        self._arrivals.join()

    # ------------------------------------------------------------------ hot path
    def accept(self, spooled: Path, sop_class_uid: str, sop_instance_uid: str, calling_ae: str,
               transfer_syntax_uid: str = "") -> Accepted:
        """Validate and durably store a spooled Part 10 file. Returns (stored path, newly stored?, header).

        The spooled file is consumed (linked into place or removed) in every case. A second copy of an instance
        never overwrites the stored one (the link into place never overwrites): it is stored beside it under a name
        of its own and the index writer compares the two (node.resend). Below the disk watermark nothing is stored
        and StorageError (0xA700 at the network edge) says so, before the disk is actually full.
        """
        if self.min_free_bytes:
            self._check_watermark(spooled)
        # fsync releases the GIL: let it run while the header is checked (measured: bench/ingest.py)
        syncing = self._sync_pool.submit(sync_file, spooled)
        try:
            info = read_header(spooled, sop_class_uid, sop_instance_uid, transfer_syntax_uid, strict=self.strict)
            final = self.store.path_for(info.study_uid, info.series_uid, info.sop_instance_uid)
            size = syncing.result()
            new = publish(spooled, final)
            if not new:  # re-sent: kept beside the stored copy until the index writer compares them
                final = resent_path(final)
                publish(spooled, final)
        finally:
            wait([syncing])  # never leave a sync running on a file we are about to remove
            spooled.unlink(missing_ok=True)
        self._arrivals.put(Arrival(info, final, size, calling_ae, time.time()))
        if not new:
            logger.info("SOP Instance %s received again from %s: compared with the stored copy when indexed",
                        info.sop_instance_uid, calling_ae)
        return Accepted(final, new, info)

    def _check_watermark(self, spooled: Path) -> None:
        now = time.monotonic()
        if not self.disk_low and now - self._disk_checked < _DISK_CHECK_SECONDS:
            return
        self._disk_checked = now
        free = shutil.disk_usage(self.store.root).free  # one statvfs (measured 2-15 us)
        if free >= self.min_free_bytes:
            if self.disk_low:
                self.disk_low = False
                logger.warning("free disk space of %s back above the watermark (%d MB free): receiving again",
                               self.store.root, free >> 20)
            return
        spooled.unlink(missing_ok=True)
        if not self.disk_low:
            self.disk_low = True
            logger.error("free disk space of %s below the watermark: %d MB free < [node] min_free_disk_mb %d; "
                         "C-STOREs are refused with 0xA700 until space is freed (see `liver-node prune`)",
                         self.store.root, free >> 20, self.min_free_bytes >> 20)
        raise StorageError(errno.ENOSPC, f"disk low, {free >> 20} MB free < min {self.min_free_bytes >> 20} MB")

    # ------------------------------------------------------------------ indexing
    def _index_loop(self) -> None:
        stop = False
        while not stop:
            item = self._arrivals.get()
            batch: list[Arrival] = []
            if item is None:
                stop = True
            else:
                batch.append(item)
                time.sleep(_GATHER_SECONDS)  # off the C-STORE path: waiting here delays only the index
            while len(batch) < _BATCH:
                try:
                    more = self._arrivals.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            try:
                if batch:
                    self._index(batch)
            finally:
                for _ in range(len(batch) + (1 if stop else 0)):
                    self._arrivals.task_done()

    def _index(self, batch: list[Arrival]) -> None:
        # Instances indexed already (or twice in this batch) are re-sends: node.resend, one at a time, after.
        known = self.index.known_instances(a.info.sop_instance_uid for a in batch)
        fresh: list[Arrival] = []
        again: list[Arrival] = []
        for a in batch:
            (again if a.info.sop_instance_uid in known else fresh).append(a)
            known.add(a.info.sop_instance_uid)
        for attempt in range(3):
            try:
                results = self.index.add_instances(fresh, self.stable_seconds)
                break
            except sqlite3.Error as exc:
                self.last_error = f"index write failed: {exc}"
                logger.error("cannot index %d stored instance(s) (attempt %d): %s; they are safe on disk and "
                             "are re-indexed at the next start", len(batch), attempt + 1, exc)
                time.sleep(0.5)
        else:
            return
        studies = set()
        for arrival, (new, _case) in zip(fresh, results, strict=True):
            if new:
                studies.add(arrival.info.study_uid)
            else:  # indexed meanwhile (start-up reconcile): a re-send after all
                again.append(arrival)
        cases: set[str] = set()
        for arrival in again:
            try:
                outcome = self.resender.handle(arrival)
            except Exception as exc:  # the copy stays on disk: start-up hands it over again (reconcile)
                self.last_error = f"re-sent instance not compared: {exc}"
                logger.error("cannot compare re-sent SOP Instance %s with the stored copy (%s); it stays on disk "
                             "and is handled at the next start", arrival.info.sop_instance_uid, exc)
                continue
            studies.update(outcome.studies)
            cases.update(outcome.evaluate)
        if self.completion is not None:
            for study in studies:
                self.completion.instance_arrived(study)
            for case_id in sorted(cases):
                self.completion.evaluate_case(case_id)

    def reconcile(self) -> int:
        """Index files on disk that the index lacks (the process stopped between storing and indexing)."""
        known = self.index.all_paths()
        replaced = self.index.replaced_paths()
        added = 0
        for path in self.store.iter_files():
            if str(path) in known:
                continue
            if str(path) in replaced and _same_file(path, replaced[str(path)]):
                path.unlink(missing_ok=True)  # a replaced copy, kept under superseded/, whose removal a crash stopped
                continue
            try:
                info = read_header(path)  # already stored: index it whatever the policy
                arrival = Arrival(info, path, path.stat().st_size, "(recovered)", time.time())
                if self.index.stored_instance(info.sop_instance_uid) is not None:
                    outcome = self.resender.handle(arrival)
                    if self.completion is not None:
                        for study in outcome.studies:
                            self.completion.instance_arrived(study)
                    added += int(outcome.action != "identical")
                    continue
                new, _ = self.index.add_instance(info, path, arrival.size, arrival.calling_ae, self.stable_seconds,
                                                 arrival.received_at)
                if new and self.completion is not None:
                    self.completion.instance_arrived(info.study_uid)
                added += int(new)
            except Exception as exc:  # one bad file must not stop start-up
                logger.error("cannot re-index %s: %s", path, exc)
        if added:
            logger.warning("re-indexed %d stored instance(s) the index had lost", added)
        return added


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False
