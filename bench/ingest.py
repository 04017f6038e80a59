"""Ingest benchmark: dcmtk storescu -> {dcmtk storescp, Orthanc, liver-node}, alternating, medians and ratios.

    python bench/ingest.py [--images 600] [--rounds 5] [--concurrent 4]

Every contender gets the same N 512x512 CT instances over ONE association with 128 KiB PDUs, TCP_NODELAY=1 for
the dcmtk tools and Orthanc (see shared/dicom-notes.md), a fresh storage folder per round, a flushed page cache
before each timed transfer, and the node keeps fsync on (it answers success only after fsync + rename). Prints
per-round MB/s, medians, and node/Orthanc and node/storescp ratios; then a concurrency check: 4 storescu
processes at once into the node, nothing lost.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
from testpeers.orthanc import OrthancServer  # noqa: E402  (the project's Orthanc harness)

ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def make_images(folder: Path, n: int, patient: str = "BENCH") -> int:
    """N distinct 512x512 CT slices (one series), written once and reused. Returns total bytes."""
    existing = sorted(folder.glob("*.dcm"))
    if len(existing) == n:
        return sum(p.stat().st_size for p in existing)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    study, series, for_uid = generate_uid(), generate_uid(), generate_uid()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2000, (512, 512), dtype=np.uint16)
    for k in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Bench^Ingest", patient, "", ""
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, for_uid
        ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.AccessionNumber, ds.StudyID = (
            "20261121", "120000", "", "", "1")
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [-250.0, -250.0, 1.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.98, 0.98]
        ds.SliceThickness = 1.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 512
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.roll(base, k, axis=0).tobytes()
        ds.save_as(folder / f"ct{k:04d}.dcm", enforce_file_format=True)
    return sum(p.stat().st_size for p in folder.glob("*.dcm"))


def storescu(port: int, aec: str, folder: Path) -> float:
    """Send the folder over one association; returns elapsed seconds.

    The page cache is flushed first, so no contender pays for writing back the previous one's data
    (dcmtk storescp does not fsync and leaves ~300 MB dirty behind it).
    """
    os.sync()
    cmd = ["storescu", "-aet", "BENCH", "-aec", aec, "-pdu", "131072", "+sd", "+r", "-xs",
           "127.0.0.1", str(port), str(folder)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"storescu failed: {r.stderr[-800:]}")
    return dt


class Storescp:
    name = "dcmtk storescp"

    def __init__(self, work: Path) -> None:
        self.work = work

    def run(self, images: Path) -> float:
        out = self.work / "storescp"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        port = free_port()
        p = subprocess.Popen(["storescp", "-aet", "STORESCP", "-pdu", "131072", "-od", str(out), str(port)],
                             env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            return storescu(port, "STORESCP", images)
        finally:
            p.terminate()
            p.wait()


class Orthanc:
    name = "Orthanc"

    def __init__(self, work: Path) -> None:
        self.work = work

    def run(self, images: Path) -> float:
        d = self.work / "orthanc"
        shutil.rmtree(d, ignore_errors=True)
        # No Lua receipt hook here: plain Orthanc, SyncStorageArea (fsync) on as shipped.
        with OrthancServer(d, ae_title="ORTHANC", extra_config={"LuaScripts": []}) as o:
            return storescu(o.dicom_port, "ORTHANC", images)


class LiverNode:
    name = "liver-node"

    def __init__(self, work: Path) -> None:
        self.work = work

    def start(self, data: Path) -> tuple[subprocess.Popen, int]:
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        port = free_port()
        cfg = data / "config.toml"
        cfg.write_text(f'[node]\nae_title = "LIVERNODE"\nhost = "127.0.0.1"\nport = {port}\ndata_dir = "var"\n'
                       'log_level = "WARNING"\n[completion]\nstable_seconds = 3600\n')
        p = subprocess.Popen([sys.executable, "-m", "node", "serve", "--config", str(cfg)], cwd=ROOT,
                             stdout=subprocess.DEVNULL, stderr=open(data / "node.log", "w"))
        wait_port(port)
        return p, port

    def run(self, images: Path) -> float:
        p, port = self.start(self.work / "node")
        try:
            return storescu(port, "LIVERNODE", images)
        finally:
            p.terminate()
            p.wait()


def concurrency_check(work: Path, images: Path, n_assoc: int) -> None:
    node = LiverNode(work)
    data = work / "node-concurrent"
    p, port = node.start(data)
    try:
        t0 = time.perf_counter()
        procs = [subprocess.Popen(["storescu", "-aet", f"BENCH{i}", "-aec", "LIVERNODE", "-pdu", "131072", "+sd",
                                   "+r", "127.0.0.1", str(port), str(images)], env=ENV,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(n_assoc)]
        codes = [q.wait() for q in procs]
        dt = time.perf_counter() - t0
    finally:
        p.terminate()
        p.wait()
    n_files = len(list((data / "var" / "instances").glob("*/*/*.dcm")))
    db = sqlite3.connect(data / "var" / "index.sqlite3")
    n_index = db.execute("SELECT COUNT(*) FROM instances").fetchone()[0]
    n_expected = len(list(images.glob("*.dcm")))
    print(f"\n{n_assoc} concurrent associations (same {n_expected} instances each, duplicates kept once): "
          f"storescu exit codes {codes}, {dt:.1f} s; stored files {n_files}, indexed {n_index} "
          f"-> {'nothing lost' if n_files == n_index == n_expected and not any(codes) else 'MISMATCH'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--workdir", type=Path, default=HERE / "out")
    args = ap.parse_args(argv)
    for tool in ("storescu", "storescp", "/usr/sbin/Orthanc"):
        if not shutil.which(tool):
            print(f"{tool} not found: run scripts/install-test-tools.sh", file=sys.stderr)
            return 2
    args.workdir.mkdir(parents=True, exist_ok=True)
    images = args.workdir / "ingest-ct"
    total = make_images(images, args.images)
    mb = total / 1e6
    work = Path(tempfile.mkdtemp(prefix="ingest-", dir=args.workdir))
    contenders: list[Any] = [Storescp(work), Orthanc(work), LiverNode(work)]
    results: dict[str, list[float]] = {c.name: [] for c in contenders}
    print(f"{args.images} CT instances 512x512, {mb:.1f} MB, one association, 128 KiB PDUs, "
          f"{args.rounds} alternating rounds")
    for r in range(args.rounds):
        for c in contenders:
            dt = c.run(images)
            results[c.name].append(mb / dt)
            print(f"  round {r + 1}: {c.name:15s} {dt:6.2f} s  {mb / dt:7.1f} MB/s", flush=True)
    med = {k: statistics.median(v) for k, v in results.items()}
    print("\nmedian MB/s: " + ", ".join(f"{k} {v:.1f}" for k, v in med.items()))
    print(f"ratio liver-node / Orthanc:        {med['liver-node'] / med['Orthanc']:.2f}x")
    print(f"ratio liver-node / dcmtk storescp: {med['liver-node'] / med['dcmtk storescp']:.2f}x")
    if args.concurrent > 1:
        concurrency_check(work, images, args.concurrent)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
