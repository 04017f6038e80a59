"""Every file of the real-world corpus (../shared/realworld-dicom) sent to a live node, and what became of it.

    .venv/bin/python -m bench.corpus [--corpus DIR] [--files] [--markdown]

One node (its real workflows, a quiet period long enough that nothing is analysed) receives the whole corpus as
published, folder after folder, with dcmtk storescu (each file on a presentation context of its own transfer
syntax); pynetdicom for the few files storescu cannot send, and a raw C-STORE of the file's own data set bytes
(testpeers/pdufuzz.py) for those neither can (no SOP Class UID, no file meta, sequences nested thousands deep).
Printed per file group (folder): how many files, the store statuses, the roles the node gave (`status --json`
facts: node.casestatus) and why, then the identity conflicts and re-sends the corpus itself produces. With
--files, one line per file.
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from node.casestatus import collect
from node.config import parse_config
from node.service import Node
from testpeers import pdufuzz
from testpeers.storescu import STATUS_CODES, send

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT.parent / "shared" / "realworld-dicom"


@dataclass
class FileOutcome:
    path: str
    sender: str
    response: str
    sop_instance_uid: str = ""
    role: str = "-"
    why: str = ""
    case: str = ""
    state: str = ""


@dataclass
class Group:
    name: str
    files: list[FileOutcome] = field(default_factory=list)


def _groups(corpus: Path) -> list[tuple[str, list[Path]]]:
    """Leaf folders (a folder's own files form one group; its subfolders are groups of their own)."""
    out = []
    for folder in sorted({p.parent for p in corpus.rglob("*") if p.is_file() and p.name not in ("README.md",
                                                                                               "corpus.tsv")}):
        files = sorted(p for p in folder.iterdir() if p.is_file())
        out.append((str(folder.relative_to(corpus)), files))
    return out


def _code(response: str) -> str:
    if not response:
        return "no response"
    code = STATUS_CODES.get(response)
    return f"0x{code:04X}" if code is not None else response


def _pynetdicom(port: int, path: Path) -> str:
    """For files storescu cannot send: pynetdicom, the data set as pydicom reads it."""
    try:
        ds = pydicom.dcmread(path, force=True)
        sop_class = str(ds.SOPClassUID)
        ts = str(ds.file_meta.TransferSyntaxUID)
    except Exception as exc:
        return f"not sendable: {type(exc).__name__}"
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(sop_class, ts)
    assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE")
    if not assoc.is_established:
        return "association refused"
    try:
        response = assoc.send_c_store(ds)
        code = int(response.Status) if response else None
    except Exception as exc:
        return f"not sendable: {type(exc).__name__}"
    finally:
        assoc.release()
    return "no response" if code is None else f"0x{code:04X}"


def _raw(port: int, path: Path) -> tuple[str, str]:
    """For files no toolkit sends: the file's data set bytes in one C-STORE, as they are. Returns the status and
    the SOP Instance UID the C-STORE request named."""
    sop_instance = ""
    try:
        sop_class, sop_instance, ts, dataset = pdufuzz.file_facts(path)
        with pdufuzz.Client("127.0.0.1", port, timeout=60) as c:
            if c.associate(calling="MODALITY", contexts=[(sop_class, [ts])]) != pdufuzz.A_ASSOCIATE_AC:
                return "association refused", sop_instance
            status = c.store(c.context(ts), sop_class, sop_instance, dataset)
            c.release()
    except (OSError, pdufuzz.Closed, AssertionError) as exc:
        return f"not sendable: {type(exc).__name__}", sop_instance
    return f"0x{status:04X}", sop_instance


class Refusals(logging.Handler):
    """The node's refusal log lines ("C-STORE <uid> from <ae> refused (0x....): <reason>"): SOP instance -> why."""

    _LINE = re.compile(r"C-STORE (\S+) from \S+ refused \((0x[0-9A-F]{4})[^)]*\): (.*)", re.S)

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.why: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        m = self._LINE.match(record.getMessage())
        if m is not None:
            self.why[m.group(1)] = f"refused {m.group(2)}: {m.group(3)}"


def run(corpus: Path) -> tuple[list[Group], Node, Path]:
    work = Path(tempfile.mkdtemp(prefix="corpus-"))
    config = parse_config({"node": {"ae_title": "LIVERNODE", "host": "127.0.0.1", "port": 0,
                                    "data_dir": str(work / "var"), "min_free_disk_mb": 0},
                           "completion": {"stable_seconds": 3600}}, base_dir=work)
    node = Node(config)
    _host, port = node.start()
    pynetdicom_config.LOG_HANDLER_LEVEL = "none"
    groups = []
    for name, files in _groups(corpus):
        group = Group(name)
        responses, _log = send(port, files)
        for f in files:
            sender, response = "storescu", _code(responses[f])
            if response == "no response":
                sender, response = "pynetdicom", _pynetdicom(port, f)
            try:
                sop = str(pydicom.dcmread(f, stop_before_pixels=True, force=True).get("SOPInstanceUID", ""))
            except Exception:
                sop = ""
            if response.startswith("not sendable") or response == "no response":
                sender, (response, sop) = "raw", _raw(port, f)
            group.files.append(FileOutcome(str(f.relative_to(corpus)), sender, response, sop))
        groups.append(group)
    node.receiver.flush()
    return groups, node, work


def attach_roles(groups: list[Group], node: Node, refusals: Refusals) -> None:
    """Each file's role and reason, through its SOP instance's series (the status model); a refused file's
    reason, from the node's log line."""
    status = collect(node.config, node.index)
    series_of_sop = {}
    for r in node.index._db.execute("SELECT sop_instance_uid, series_uid, case_id FROM instances"):
        series_of_sop[r[0]] = (r[1], r[2])
    facts = {(s.series_uid, c.case_id): (s.role, s.role_reason, c.case_id, c.state)
             for c in status.cases for s in c.series}
    for g in groups:
        for f in g.files:
            where = series_of_sop.get(f.sop_instance_uid)
            if where is not None and where in facts and f.response == "0x0000":
                f.role, f.why, f.case, f.state = facts[where]
            elif f.response != "0x0000":
                f.why = refusals.why.get(f.sop_instance_uid, "")


def _short(text: str, n: int = 110) -> str:
    return text if len(text) <= n else text[:n - 3] + "..."


def print_table(groups: list[Group], node: Node, per_file: bool, markdown: bool) -> None:
    rows = []
    for g in groups:
        statuses = Counter(f"{f.response}" + (f" ({f.sender})" if f.sender != "storescu" else "") for f in g.files)
        roles = Counter(f.role for f in g.files if f.role != "-")
        whys = list(dict.fromkeys(_short(f.why) for f in g.files if f.why))
        held = sorted({f.case for f in g.files if f.state == "held"})
        rows.append((g.name, str(len(g.files)), ", ".join(f"{k} x{v}" for k, v in statuses.items()),
                     ", ".join(f"{k} x{v}" for k, v in roles.items()) or "-",
                     " | ".join(whys[:3]) + (f" | (+{len(whys) - 3} more)" if len(whys) > 3 else "")
                     + (f" | HELD: {', '.join(held)}" if held else "")))
    headers = ("GROUP", "FILES", "STATUS", "ROLES", "WHY")
    if markdown:
        print("| " + " | ".join(headers) + " |")
        print("|" + "---|" * len(headers))
        for r in rows:
            print("| " + " | ".join(c.replace("|", "/") if i < 4 else c.replace(" | ", "; ")
                                    for i, c in enumerate(r)) + " |")
    else:
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers[:-1])]
        print("  ".join(h.ljust(w) for h, w in zip(headers[:-1], widths, strict=True)) + "  WHY")
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    if per_file:
        print()
        for g in groups:
            for f in g.files:
                print(f"{f.path}\t{f.sender}\t{f.response}\t{f.case or '-'}\t{f.role}\t{_short(f.why, 200)}")
    conflicts = node.index.conflicts()
    print(f"\n{sum(len(g.files) for g in groups)} files in {len(groups)} groups; "
          f"{sum(f.response == '0x0000' for g in groups for f in g.files)} stored; "
          f"{len(node.index.cases())} cases; {len(conflicts)} identity conflict(s); "
          f"{len(node.index.superseded())} re-sent instance(s) replaced or set aside")
    for c in conflicts:
        who = "; ".join(f"{p}/{i or '-'}" for p, i in c.identities)
        print(f"  conflict on {c.kind} {c.key}: {who} -> cases {', '.join(c.cases)} held")
    for s in node.index.superseded():
        print(f"  re-sent {s.sop_instance_uid}: {s.action} ({_short(s.differences, 150)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--corpus", type=Path, default=CORPUS)
    p.add_argument("--files", action="store_true", help="also one line per file")
    p.add_argument("--markdown", action="store_true", help="the group table as Markdown")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    refusals = Refusals()
    logging.getLogger("node.scp").addHandler(refusals)
    started = time.perf_counter()
    groups, node, work = run(args.corpus)
    try:
        attach_roles(groups, node, refusals)
        print_table(groups, node, args.files, args.markdown)
    finally:
        node.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
