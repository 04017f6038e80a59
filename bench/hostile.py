"""Hostile network input against a live node (issue 17): the figures the fuzz test only bounds.

    .venv/bin/python -m bench.hostile [--stock] [--probes 200] [--idle 300]

The node runs as its own process (`python -m node serve`, default settings but a quiet period long enough that
nothing is analysed); with --stock it believes its pynetdicom version is unknown and receives with stock pynetdicom
(the fallback). Printed, one phase after the other:

1. oversized PDU headers: `--probes` connections (20 at once) announcing 4 GiB - 1 (A-ASSOCIATE-RQ, and P-DATA-TF
   after a valid association), each then trickling 64 KiB: peak RSS growth (VmHWM) of the node;
2. the largest legal PDUs: `max_associations` associations each sending a P-DATA-TF of node.max_pdu_size and
   stalling just before its end: RSS while they stall (the documented bound is max_associations x max_pdu_size);
3. idle connections: `--idle` connections that send 3 bytes and stop (half from 127.0.0.1, half spread over
   127.0.0.2-127.0.0.101), then the time a real sender (pynetdicom C-STORE, from a fresh address and from
   127.0.0.1) needs to store one instance;
4. idle *associations*: one address holds every association slot with established, silent associations; whether
   a second address can store at once, and once they have been idle for receive.idle_association_seconds (10 s);
5. the project's fuzzer (testpeers/pdufuzz.py, about 320 hostile associations) while a pynetdicom sender stores 30
   instances: stored/acknowledged, traceback lines in the node's log, non-empty and empty `.part` files in tmp/
   five seconds after the fuzz.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from testpeers import pdufuzz as Z

ROOT = Path(__file__).resolve().parents[1]
CT = "1.2.840.10008.5.1.4.1.1.2"
_STOCK = ("import sys, runpy, node.netfast as n; n.SUPPORTED_PYNETDICOM = (); sys.argv[0] = 'node'; "
          "runpy.run_module('node', run_name='__main__')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reset_peak(pid: int) -> None:
    """Linux >= 4.0: writing 5 to clear_refs resets VmHWM to the current RSS (root, or the process owner)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def ct(patient: str, size: int = 256) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = CT, generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Bench^Hostile", patient, "", ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.StudyDate, ds.StudyTime, ds.ReferringPhysicianName, ds.AccessionNumber, ds.StudyID = (
        "20261207", "120000", "", "", "1")
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 0.0], [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing, ds.SliceThickness = [0.98, 0.98], 1.0
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.Rows, ds.Columns = 1, "MONOCHROME2", size, size
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = bytes(2 * size * size)
    return ds


def store(port: int, datasets: list[Dataset], source: str = "127.0.0.1", aet: str = "LEGIT") -> tuple[int, float]:
    """C-STOREs over one association: (successes, seconds)."""
    t0 = time.monotonic()
    ae = AE(ae_title=aet)
    ae.add_requested_context(CT, ExplicitVRLittleEndian)
    ae.acse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE", bind_address=(source, 0))
    ok = 0
    if assoc.is_established:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            ok += int(getattr(status, "Status", -1) == 0)
        assoc.release()
    return ok, time.monotonic() - t0


class NodeProcess:
    def __init__(self, work: Path, stock: bool) -> None:
        self.port = free_port()
        self.data = work / "var"
        self.log = work / "node.log"
        cfg = work / "node.toml"
        cfg.write_text(f'[node]\nae_title = "LIVERNODE"\nhost = "127.0.0.1"\nport = {self.port}\n'
                       f'data_dir = "{self.data}"\nlog_level = "INFO"\n[completion]\nstable_seconds = 3600\n')
        start = ["-c", _STOCK] if stock else ["-m", "node"]
        self.proc = subprocess.Popen([sys.executable, *start, "serve", "--config", str(cfg)], cwd=ROOT,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"node did not start: {self.log.read_text()[-2000:]}")

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def _oversized(port: int, after_association: bool) -> None:
    try:
        with Z.Client("127.0.0.1", port, timeout=5) as c:
            kind = Z.A_ASSOCIATE_RQ
            if after_association:
                if c.associate() != Z.A_ASSOCIATE_AC:
                    return
                kind = Z.P_DATA_TF
            c.send(struct.pack(">BBL", kind, 0, 0xFFFFFFFF))
            for _ in range(16):  # 64 KiB in 4 KiB steps: data really arrives
                c.send(b"\0" * 4096)
                time.sleep(0.005)
            Z._drain(c.sock, 0.5)
    except (OSError, Z.Closed):
        pass  # aborted and closed by the node: the expected end


def phase_oversized(node: NodeProcess, probes: int) -> float:
    reset_peak(node.proc.pid)
    before = Z.memory_kib(node.proc.pid)
    with ThreadPoolExecutor(20) as pool:
        list(pool.map(lambda i: _oversized(node.port, after_association=bool(i % 2)), range(probes)))
    after = Z.memory_kib(node.proc.pid)
    growth = (after["VmHWM"] - before["VmRSS"]) / 1024
    print(f"1. {probes} PDU headers announcing 4 GiB - 1 (half before, half after association), 64 KiB each: "
          f"RSS {before['VmRSS'] / 1024:.0f} MB before, peak {after['VmHWM'] / 1024:.0f} MB "
          f"(growth {growth:.1f} MB); node {'alive' if node.alive else 'DEAD'}", flush=True)
    return growth


def phase_legal_max(node: NodeProcess, n_assoc: int, max_pdu: int) -> float:
    reset_peak(node.proc.pid)
    before = Z.memory_kib(node.proc.pid)
    clients: list[Z.Client] = []
    try:
        for _ in range(n_assoc):
            c = Z.Client("127.0.0.1", node.port, timeout=30)
            if c.associate() != Z.A_ASSOCIATE_AC:
                c.close()
                break
            clients.append(c)
        for c in clients:  # the PDU header, then all but the last KiB of its announced length
            c.send(struct.pack(">BBL", Z.P_DATA_TF, 0, max_pdu - 6))
            c.send(b"\0" * (max_pdu - 6 - 1024))
        time.sleep(2.0)
        during = Z.memory_kib(node.proc.pid)
    finally:
        for c in clients:
            c.close()
    growth = (during["VmHWM"] - before["VmRSS"]) / 1024
    bound = n_assoc * max_pdu / 2**20
    print(f"2. {len(clients)} associations each sending a {max_pdu >> 20} MiB P-DATA-TF and stalling 1 KiB short: "
          f"peak growth {growth:.1f} MB (documented bound {bound:.0f} MiB); node {'alive' if node.alive else 'DEAD'}",
          flush=True)
    return growth


def phase_idle(node: NodeProcess, idle: int) -> tuple[float, float]:
    socks: list[socket.socket] = []
    try:
        for i in range(idle):
            source = "127.0.0.1" if i % 2 == 0 else f"127.0.0.{2 + (i // 2) % 100}"
            try:
                s = socket.create_connection(("127.0.0.1", node.port), timeout=5, source_address=(source, 0))
                s.sendall(b"\x01\x00\x00")
                socks.append(s)
            except OSError:
                pass
        ok_new, t_new = store(node.port, [ct("P-IDLE-NEW")], source="127.0.0.250")
        ok_same, t_same = store(node.port, [ct("P-IDLE-SAME")], source="127.0.0.1")
    finally:
        for s in socks:
            s.close()
    print(f"3. {len(socks)} idle connections (3 bytes each; half from 127.0.0.1, half from 100 other addresses): "
          f"a real sender stored {ok_new}/1 in {t_new:.2f} s from a new address, {ok_same}/1 in {t_same:.2f} s "
          "from 127.0.0.1", flush=True)
    return t_new, t_same


def phase_idle_associations(node: NodeProcess, slots: int, idle_seconds: float = 10.0) -> None:
    held: list[Z.Client] = []
    try:
        for _ in range(slots):
            c = Z.Client("127.0.0.1", node.port, timeout=10)
            if c.associate() == Z.A_ASSOCIATE_AC:
                held.append(c)
            else:
                c.close()
        at_once, _ = store(node.port, [ct("P-SLOTS-0")], source="127.0.0.250")
        time.sleep(idle_seconds + 1)
        later, seconds = store(node.port, [ct("P-SLOTS-1")], source="127.0.0.250")
    finally:
        for c in held:
            c.close()
    print(f"4. {len(held)} established, silent associations from 127.0.0.1 (every slot): another address stored "
          f"{at_once}/1 at once, {later}/1 ({seconds:.2f} s) after they had been idle {idle_seconds + 1:g} s",
          flush=True)


def phase_fuzz(node: NodeProcess) -> tuple[int, int, int]:
    cases = Z.hostile_cases()
    legit = [ct(f"P-FUZZ-{i}", 128) for i in range(30)]
    result: list[tuple[int, float]] = []
    sender = threading.Thread(target=lambda: result.append(store(node.port, legit, source="127.0.0.250")))
    t0 = time.monotonic()
    sender.start()
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda case: case[1]("127.0.0.1", node.port), cases))
    sender.join(300)
    fuzz = time.monotonic() - t0
    time.sleep(5)
    tmp = node.data / "tmp"
    parts = [(p.name, p.stat().st_size) for p in tmp.glob("*.part")] if tmp.exists() else []
    full = [p for p in parts if p[1] > 0]
    text = node.log.read_text(errors="replace")
    tracebacks = sum(1 for line in text.splitlines() if line.startswith("Traceback") or line.startswith("  File "))
    ok = result[0][0] if result else 0
    print(f"5. fuzz: {len(cases)} hostile connections in {fuzz:.1f} s beside a sender of {len(legit)} instances "
          f"({ok} acknowledged); node {'alive' if node.alive else 'DEAD'}; traceback lines in its log: "
          f"{tracebacks}; .part files 5 s later: {len(full)} with data {full[:5]}, {len(parts) - len(full)} empty "
          "(the spool pool)", flush=True)
    return ok, tracebacks, len(full)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stock", action="store_true", help="the fallback: stock pynetdicom behind the edge server")
    ap.add_argument("--probes", type=int, default=200)
    ap.add_argument("--idle", type=int, default=300)
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    node = NodeProcess(work, args.stock)
    try:
        print(f"node pid {node.proc.pid}, {'stock pynetdicom' if args.stock else 'fast path'}, default settings "
              "(max_associations 10, max_pdu_size 4 MiB)", flush=True)
        phase_oversized(node, args.probes)
        phase_legal_max(node, 10, 4 * 1024 * 1024)
        phase_idle(node, args.idle)
        phase_idle_associations(node, 10)
        phase_fuzz(node)
        ok, _ = store(node.port, [ct("P-AFTER")])
        print(f"after all: {'serving' if ok else 'NOT SERVING'}; node log {node.log}")
    finally:
        node.stop()
        shutil.rmtree(work / "var", ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
