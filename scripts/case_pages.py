"""Render every page the node makes for the phantom patient: run the case in-process and write its outputs.

    .venv/bin/python scripts/case_pages.py OUT [--dicom]    # every page as OUT/NN-what.png (+ every object .dcm)
    .venv/bin/python scripts/case_pages.py --readme         # the README's pictures: docs/pages/*.png

The phantom patient (node/phantom, seed 0) goes through an in-process node exactly as through a running one
(C-STORE on loopback, completion, analysis, report); the outputs are caught before the outbox. --readme keeps
one page of each kind (the middle map page of each method, the summary's first page) under stable names, so the
README stays current.
"""
from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from node.config import parse_config
from node.demo import send_files
from node.phantom import write_phantom
from node.service import Node
from node.workflow import OutputObject

ROOT = Path(__file__).resolve().parents[1]
SC = "1.2.840.10008.5.1.4.1.1.7"


class _Sink:
    def __init__(self) -> None:
        self.items: list[OutputObject] = []

    def produce(self, case_id: str, obj: OutputObject) -> list[int]:
        self.items.append(obj)
        return [len(self.items)]


def run_phantom_case(work: Path, seed: int = 0, timeout: float = 900.0) -> list[OutputObject]:
    """Every output object the node makes for the small phantom patient (in-process node, loopback)."""
    import socket

    phantom = write_phantom(work / "phantom", size="small", seed=seed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = parse_config({"node": {"ae_title": "LIVERNODE", "host": "127.0.0.1", "port": port,
                                    "data_dir": str(work / "var")},
                           "completion": {"stable_seconds": 1}}, base_dir=work)
    sink = _Sink()
    node = Node(config, sink=sink)
    node.start()
    try:
        files = sorted(p for p in phantom.rglob("*.dcm") if "truth" not in p.parts)
        stored, refused = send_files("127.0.0.1", port, "LIVERNODE", files)
        if refused:
            raise RuntimeError(f"{refused} phantom files refused")
        end = time.time() + timeout
        while time.time() < end:
            cases = node.index.cases()
            states = {c.state for c in cases}
            if cases and states <= {"done", "failed"}:
                break
            time.sleep(1.0)
        else:
            raise RuntimeError("the phantom case did not finish")
    finally:
        node.stop()
    return sink.items


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def sc_pixels(ds: Any) -> np.ndarray:
    arr = ds.pixel_array
    return np.stack([arr] * 3, axis=-1) if arr.ndim == 2 else arr


def write_pages(objects: list[OutputObject], out: Path, dicom: bool) -> list[Path]:
    """Each page as NN-what.png (NN counts the pages), and with `dicom` every object as .dcm."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    pages = 0
    for n, obj in enumerate(objects, start=1):
        ds = obj.dataset
        if dicom:
            ds.save_as(out / f"object-{n:02d}-{_slug(obj.description)}.dcm", enforce_file_format=True)
        if str(ds.SOPClassUID) == SC:
            pages += 1
            path = out / f"{pages:02d}-{_slug(obj.description)}.png"
            Image.fromarray(sc_pixels(ds)).save(path, optimize=True)
            written.append(path)
    return written


#: README picture name -> the output descriptions it is chosen from (the middle one when there are several,
#: the first for the pictures in README_FIRST, the last for those in README_LAST: the summary's first and last
#: pages)
README_FIRST = {"summary"}
README_LAST = {"summary-2"}
README_PAGES = {
    "perfusion-max-slope": "maximum slope maps", "perfusion-discm": "DISCM maps",
    "perfusion-curves": "time-attenuation",
    "gsa-axial": "GSA fusion check (axial)", "gsa-coronal": "GSA fusion check (coronal)", "maa": "MAA regions review",
    "dvh": "Y-90 predicted dose DVH page", "summary": "case summary page", "summary-2": "case summary page",
}


def write_readme_pages(objects: list[OutputObject], out: Path) -> list[Path]:
    """One page of each kind as docs/pages/<kind>.png, 8-bit palette PNGs (small in the repository)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, prefix in README_PAGES.items():
        found = [o for o in objects if str(o.dataset.SOPClassUID) == SC and o.description.startswith(prefix)]
        if not found:
            raise RuntimeError(f"no page {prefix!r} among the outputs")
        index = 0 if name in README_FIRST else -1 if name in README_LAST else len(found) // 2
        if name in README_LAST and len(found) < 2:
            raise RuntimeError(f"the summary has one page: no {name!r}")
        image = Image.fromarray(sc_pixels(found[index].dataset))
        path = out / f"{name}.png"
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", nargs="?", type=Path)
    p.add_argument("--dicom", action="store_true", help="also write every output object as .dcm")
    p.add_argument("--readme", action="store_true", help="write the README's pictures to docs/pages/")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = ROOT / "docs" / "pages" if args.readme else args.out
    if out is None:
        p.error("give OUT or --readme")
    with tempfile.TemporaryDirectory(prefix="liver-node-pages-") as tmp:
        objects = run_phantom_case(Path(tmp), seed=args.seed)
    if args.readme:
        if out.exists():
            shutil.rmtree(out)
        written = write_readme_pages(objects, out)
    else:
        written = write_pages(objects, out, args.dicom)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
