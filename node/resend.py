"""Re-sent instances: a SOP Instance UID received again.

PACS re-route studies, modalities re-send after a correction (PatientID, radiopharmaceutical, times, pixel data).
The receive hot path stores every copy durably under its own name (:func:`resent_path`) and answers success; the
index writer (off the C-STORE round trip) hands the copies whose SOP Instance UID is indexed already to
:class:`Resender`, which compares the two copies' content:

* identical content (every public attribute but transport bookkeeping, and the pixels; the transfer syntax may
  differ, and so may how a value is written: a decimal string re-encoded within 1e-6, a person name's trailing
  delimiters, an empty type 2 element left out): a no-op, the new copy is removed;
* different content, ``[receive] duplicates = "replace"`` (default): the new copy replaces the stored one, which is
  kept as *superseded* (never deleted silently) under ``data_dir/superseded/<study>/<series>/``; the index moves the
  instance to the series, study and case of its new header, both cases are evaluated again, WARNING + audit;
* different content, ``"keep-first"``: the stored copy stays, the new one is kept under ``superseded/`` unused,
  WARNING + audit.

Crash safety (the rules of node.store): a replacement links the old file into ``superseded/`` (folder fsynced),
then moves the index row to the new file in one transaction that also records the old path, then removes the old
file (folder fsynced). A crash before the commit leaves the index on the old, present file and the new copy
unindexed: start-up (node.receive.Receiver.reconcile) hands it here again; after the commit the index points at the
new file and start-up removes the recorded old path. The index never points at a missing file, nothing is lost.
Retention (node.retention, ``superseded_days``) prunes ``superseded/`` by age.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.valuerep import PersonName

from node.audit import audit
from node.header import read_stored
from node.index import Arrival, Index
from node.store import StorageError, fsync_dir

logger = logging.getLogger(__name__)

__all__ = ["DUPLICATE_POLICIES", "Resender", "ResendOutcome", "compare", "resent_path", "SUPERSEDED_DIR"]

#: ``[receive] duplicates``: what a re-sent instance with different content does.
DUPLICATE_POLICIES = ("replace", "keep-first")
#: Superseded copies, under data_dir (the folder node.retention prunes with ``superseded_days``).
SUPERSEDED_DIR = "superseded"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)
#: Bookkeeping a PACS or a re-send may change without changing what the instance shows.
_IGNORED = {"InstanceCreationDate", "InstanceCreationTime", "InstanceCreatorUID", "RetrieveAETitle",
            "SpecificCharacterSet", "StorageMediaFileSetID", "StorageMediaFileSetUID", "SourceApplicationEntityTitle",
            "TimezoneOffsetFromUTC", "InstanceAvailability"}
#: Differences listed in log lines and audit records (more are counted).
_SHOWN = 6


def resent_path(final: Path) -> Path:
    """Where the hot path stores a copy whose file name is taken: beside it, under a name of its own."""
    return final.with_name(f"{final.stem}~{time.time_ns()}.dcm")


def _read(path: Path) -> Dataset:
    return read_stored(path)  # the node's reader: the file meta it wrote decides the transfer syntax


def _value_text(ds: Dataset, tag: BaseTag) -> str:
    try:
        v = ds[tag].value
    except KeyError:
        return "(absent)"
    text = str(v)
    return text if len(text) <= 40 else text[:37] + "..."


def _pixels_equal(a: Dataset, b: Dataset) -> tuple[bool, str]:
    """Same pixels? Raw bytes when both are stored in one transfer syntax, else the decoded arrays."""
    ta = [t for t in _PIXEL_TAGS if t in a]
    tb = [t for t in _PIXEL_TAGS if t in b]
    if ta != tb:
        return False, "pixel data present in one copy only"
    if not ta:
        return True, ""
    ts_a = str(getattr(a.file_meta, "TransferSyntaxUID", "")) if hasattr(a, "file_meta") else ""
    ts_b = str(getattr(b.file_meta, "TransferSyntaxUID", "")) if hasattr(b, "file_meta") else ""
    if ts_a == ts_b and all(a[t].value == b[t].value for t in ta):
        return True, ""
    try:
        with _quiet("pydicom"):  # pydicom logs a traceback for data its decoders refuse: the reason is enough
            same = bool(np.array_equal(a.pixel_array, b.pixel_array))
    except Exception as exc:  # a codec missing, or data that does not decode: then they cannot be shown equal
        return False, f"pixel data (not comparable: {type(exc).__name__})"
    return same, "" if same else "pixel data"


@contextlib.contextmanager
def _quiet(name: str) -> Iterator[None]:
    log = logging.getLogger(name)
    before = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(before)


def compare(old: Path, new: Path) -> list[str]:
    """What differs between two stored copies of an instance, in words ([] = the same content)."""
    if old.stat().st_size == new.stat().st_size and old.read_bytes() == new.read_bytes():
        return []
    a, b = _read(old), _read(new)
    diffs = _differences(a, b)
    same, why = _pixels_equal(a, b)
    if not same:
        diffs.append(why or "pixel data")
    return diffs


#: Sequences are compared item by item down to this depth (deeper: the sequence as a whole).
_MAX_DEPTH = 6


def _differences(a: Dataset, b: Dataset, path: str = "", depth: int = 0) -> list[str]:
    """Public elements that differ (pixel data, file meta and group lengths aside), in words; inside sequences of
    the same length, the element that differs ("RadiopharmaceuticalInformationSequence > Radiopharmaceutical")."""
    diffs: list[str] = []
    tags = sorted({t for t in (*a.keys(), *b.keys()) if not t.is_private and t.group != 0x0002
                   and t.element != 0 and int(t) not in _PIXEL_TAGS})  # group lengths: encoding, not content
    for tag in tags:
        keyword = pydicom.datadict.keyword_for_tag(tag) or str(tag)
        if keyword in _IGNORED:
            continue
        in_a, in_b = tag in a, tag in b
        if in_a and in_b and _same(a[tag].value, b[tag].value):
            continue
        if not in_a and not in_b:
            continue
        if _empty(a[tag].value if in_a else None) and _empty(b[tag].value if in_b else None):
            continue  # a type 2 element sent empty in one copy and left out in the other: no content
        if in_a and in_b and depth < _MAX_DEPTH and a[tag].VR == "SQ" and b[tag].VR == "SQ" \
                and len(a[tag].value) == len(b[tag].value):
            items = list(zip(a[tag].value, b[tag].value, strict=True))
            nested = [d for i, (x, y) in enumerate(items)
                      for d in _differences(x, y, f"{path}{keyword}{f'[{i + 1}]' if len(items) > 1 else ''} > ",
                                            depth + 1)]
            if nested:
                diffs += nested
                continue
        diffs.append(f"{path}{keyword} {_value_text(a, tag)!r} -> {_value_text(b, tag)!r}")
    return diffs


#: Decimal strings re-encoded by another system (a float32 written back, DS's 16 characters) differ in the last
#: digits only: numbers this close are the same value.
_DS_REL_TOL = 1e-6


def _empty(v: Any) -> bool:
    return v is None or (isinstance(v, str | bytes | list | tuple | MultiValue | Sequence) and len(v) == 0) \
        or (isinstance(v, PersonName) and not str(v).strip("^= "))


def _name(v: PersonName) -> str:
    """A person name without the trailing component/group delimiters PS3.5 6.2.1 lets a writer leave out."""
    return "=".join(group.rstrip("^ ") for group in str(v).split("=")).rstrip("=")


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    return float(v)


def _same(x: Any, y: Any) -> bool:
    """The same value, however written: numbers to _DS_REL_TOL (DS re-encoded), person names without trailing
    delimiters, multi-values element by element; anything else as pydicom compares it."""
    try:
        if isinstance(x, PersonName) or isinstance(y, PersonName):
            return _name(PersonName(x)) == _name(PersonName(y))
        if isinstance(x, MultiValue | list) and isinstance(y, MultiValue | list):
            return len(x) == len(y) and all(_same(u, v) for u, v in zip(x, y, strict=True))
        nx, ny = _number(x), _number(y)
        if nx is not None and ny is not None:
            return math.isclose(nx, ny, rel_tol=_DS_REL_TOL, abs_tol=1e-12)
        return bool(x == y)
    except Exception:  # values pydicom cannot compare (e.g. mismatched sequences): different
        return False


@dataclass(frozen=True)
class ResendOutcome:
    """What handling a re-sent copy did."""

    action: str  # "identical", "replaced", "kept-first"
    differences: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()  # studies whose quiet period starts again
    evaluate: tuple[str, ...] = ()  # cases to evaluate again


class Resender:
    """Compares a re-sent copy with the stored one and applies the ``[receive] duplicates`` policy."""

    def __init__(self, data_dir: Path, index: Index, policy: str = "replace", stable_seconds: float = 30.0) -> None:
        if policy not in DUPLICATE_POLICIES:
            raise ValueError(f"duplicates policy {policy!r}: use one of {DUPLICATE_POLICIES}")
        self.data_dir = Path(data_dir)
        self.index = index
        self.policy = policy
        self.stable_seconds = stable_seconds

    def _set_aside(self, path: Path, study_uid: str, series_uid: str) -> Path:
        """Hard-link `path` into superseded/ (named after the file and its inode, so a repeat after a crash finds
        its own earlier link), date it now (retention's superseded_days count from here), fsync the folder."""
        folder = self.data_dir / SUPERSEDED_DIR / (study_uid or "_") / (series_uid or "_")
        try:
            target = folder / f"{path.stem}.{path.stat().st_ino}.dcm"
            folder.mkdir(parents=True, exist_ok=True)
            try:
                os.link(path, target)
            except FileExistsError:  # linked before a crash: the same file (a linked inode is never reused)
                pass
            os.utime(target)
            fsync_dir(folder)
        except OSError as exc:
            raise StorageError(exc.errno or errno.EIO, f"cannot keep the superseded copy {path.name}: {exc}") from exc
        return target

    def _remove(self, path: Path) -> None:
        try:
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
        except OSError as exc:  # left behind: start-up removes it (recorded in the index as replaced)
            logger.warning("cannot remove %s: %s", path, exc)

    def handle(self, arrival: Arrival) -> ResendOutcome:
        """Apply the policy to a re-sent copy (`arrival.path`) of an indexed instance."""
        info = arrival.info
        stored = self.index.stored_instance(info.sop_instance_uid)
        if stored is None:  # the stored copy went meanwhile (retention): the copy is simply new
            new, case_id = self.index.add_instance(info, arrival.path, arrival.size, arrival.calling_ae,
                                                   self.stable_seconds, arrival.received_at)
            return ResendOutcome("replaced" if new else "identical", studies=(info.study_uid,), evaluate=(case_id,))
        if stored.path == arrival.path:
            return ResendOutcome("identical")
        if not stored.path.exists():  # should not happen (the index never points at a missing file): heal it
            logger.error("indexed copy of %s is missing at %s: the re-sent copy takes its place",
                         info.sop_instance_uid, stored.path)
            diffs = ["stored copy missing"]
        else:
            diffs = compare(stored.path, arrival.path)
        if not diffs:
            self._remove(arrival.path)
            logger.info("SOP Instance %s re-sent by %s with identical content: nothing changed",
                        info.sop_instance_uid, arrival.calling_ae)
            return ResendOutcome("identical")
        shown = "; ".join(diffs[:_SHOWN]) + (f"; and {len(diffs) - _SHOWN} more" if len(diffs) > _SHOWN else "")
        if self.policy == "keep-first":
            kept = self._set_aside(arrival.path, info.study_uid, info.series_uid)
            self.index.record_kept_first(info.sop_instance_uid, kept, stored.path, stored.case_id, shown)
            self._remove(arrival.path)
            logger.warning("SOP Instance %s re-sent by %s with different content (%s): kept the first copy "
                           "([receive] duplicates = keep-first); the re-sent copy is kept unused at %s",
                           info.sop_instance_uid, arrival.calling_ae, shown, kept)
            audit("instance-resent", sop=info.sop_instance_uid, peer_ae=arrival.calling_ae, case=stored.case_id,
                  action="kept-first", differences=shown, kept=str(kept))
            return ResendOutcome("kept-first", tuple(diffs))
        kept = (self._set_aside(stored.path, stored.study_uid, stored.series_uid) if stored.path.exists()
                else stored.path)
        change = self.index.replace_instance(arrival, kept, shown, self.stable_seconds)
        if stored.path != arrival.path:
            self._remove(stored.path)
        moved = f" moved from case {change.old_case} to case {change.new_case};" \
            if change.old_case and change.old_case != change.new_case else ""
        logger.warning("SOP Instance %s re-sent by %s with different content (%s): the new copy replaces the stored "
                       "one;%s the old copy is kept at %s", info.sop_instance_uid, arrival.calling_ae, shown, moved,
                       kept)
        audit("instance-resent", sop=info.sop_instance_uid, peer_ae=arrival.calling_ae, action="replaced",
              from_case=change.old_case, to_case=change.new_case, differences=shown, kept=str(kept))
        studies = tuple(dict.fromkeys(s for s in (change.old_study, change.new_study) if s))
        return ResendOutcome("replaced", tuple(diffs), studies, change.evaluate)
