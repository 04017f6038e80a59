"""dcmtk storescu as a sending modality: every file on a presentation context of its own transfer syntax (one
association per transfer syntax, that syntax proposed, so storescu never transcodes), every file tried, and the
store response of each file read from its verbose log."""
from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path

import pydicom

__all__ = ["PROPOSE", "STATUS_CODES", "send", "parse_log"]

ENV = {**os.environ, "TCP_NODELAY": "1"}

#: storescu's option proposing a file's own transfer syntax first (it then sends the file as it is); others: -R
PROPOSE = {"1.2.840.10008.1.2": "-xi", "1.2.840.10008.1.2.1": "-xe", "1.2.840.10008.1.2.2": "-xb",
           "1.2.840.10008.1.2.1.99": "-xd", "1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.51": "-xx",
           "1.2.840.10008.1.2.4.57": "-xs", "1.2.840.10008.1.2.4.70": "-xs", "1.2.840.10008.1.2.4.80": "-xt",
           "1.2.840.10008.1.2.4.81": "-xu", "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.4.91": "-xw",
           "1.2.840.10008.1.2.5": "-xr"}

#: storescu's names of store statuses (PS3.4 B.2.3) -> the status code
STATUS_CODES = {"Success": 0x0000, "Error: CannotUnderstand": 0xC000, "Error: DataSetDoesNotMatchSOPClass": 0xA900,
                "Error: OutOfResources": 0xA700, "Warning: CoercionOfDataElements": 0xB000,
                "Warning: DataSetDoesNotMatchSOPClass": 0xB007, "Warning: ElementsDiscarded": 0xB006}


def _transfer_syntax(path: Path) -> str:
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        return str(ds.file_meta.get("TransferSyntaxUID", "")) if hasattr(ds, "file_meta") else ""
    except Exception:  # unreadable here: storescu decides what it can do with it
        return ""


def parse_log(log: str, files: Sequence[Path]) -> dict[Path, str]:
    """storescu -v output -> file -> its store response ("Success", "Error: ...", "" when none came)."""
    out: dict[Path, str] = {Path(f): "" for f in files}
    current: Path | None = None
    for line in log.splitlines():
        m = re.search(r"Sending file: (.+)$", line)
        if m:
            current = Path(m.group(1).strip())
            continue
        m = re.search(r"Received Store Response \((.*)\)", line)
        if m and current is not None:
            out[current] = m.group(1)
            current = None
    return out


def send(port: int, files: Sequence[Path], called: str = "LIVERNODE", calling: str = "MODALITY",
         host: str = "127.0.0.1") -> tuple[dict[Path, str], str]:
    """Send `files`; returns each file's response and storescu's log (stderr)."""
    groups: dict[str, list[Path]] = {}
    for f in files:
        groups.setdefault(_transfer_syntax(Path(f)), []).append(Path(f))
    responses: dict[Path, str] = {}
    logs = []
    for ts, group in groups.items():
        propose = [PROPOSE[ts]] if ts in PROPOSE else ["-R"]
        r = subprocess.run(["storescu", "-v", *propose, "-nh", "-aet", calling, "-aec", called, host, str(port),
                            *map(str, group)], env=ENV, capture_output=True, text=True, timeout=600)
        responses.update(parse_log(r.stdout + r.stderr, group))
        logs.append(r.stderr)
    return {Path(f): responses[Path(f)] for f in files}, "".join(logs)
