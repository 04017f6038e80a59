"""JPEG Lossless (process 14, selection value 1) re-encoding of written files with dcmtk's dcmcjpeg.

pydicom 3 cannot encode JPEG Lossless and no PyPI plugin does; dcmcjpeg (dcmtk) does, keeping the
SOPInstanceUID for lossless compression. JPEG 2000 is encoded in-process instead (see ct.py).
"""
from __future__ import annotations

import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from node.phantom.variants import PhantomError

JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"


def _encode(path: Path) -> None:
    tmp = path.with_suffix(".jpeg.tmp")
    result = subprocess.run(["dcmcjpeg", "+e1", "+un", str(path), str(tmp)], capture_output=True, text=True)
    if result.returncode != 0:
        raise PhantomError(f"dcmcjpeg failed on {path}: {result.stderr.strip()}")
    tmp.replace(path)


def jpeg_lossless_inplace(paths: list[Path]) -> None:
    """Re-encode every file in `paths` as JPEG Lossless SV1, in place (2 parallel dcmcjpeg processes)."""
    if shutil.which("dcmcjpeg") is None:
        raise PhantomError("variant 'jpeg-lossless' needs dcmtk's dcmcjpeg on PATH (apt install dcmtk)")
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(_encode, paths))
