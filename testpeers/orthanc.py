"""Real DICOM peers for tests and benchmarks (not a test module).

- :class:`OrthancServer`: the Debian Orthanc (``/usr/sbin/Orthanc``) on 127.0.0.1 with ephemeral DICOM/HTTP
  ports, storage in a temporary folder, ``TCP_NODELAY=1``, a chosen AE title, optional DICOM TLS and a list of
  known peers. It can be stopped and started again on the same ports and storage (a destination that is down
  for a while). A Lua ``ReceivedInstanceFilter`` logs every C-STORE it receives, duplicates included, so a test
  can prove that nothing arrived twice (Orthanc itself silently drops a second copy of an instance).
- :class:`StorescpServer`: dcmtk ``storescp`` with an optional association-negotiation profile (``-xf``), e.g.
  one that omits the Parametric Map SOP class; every received copy is kept (``--unique-filenames``).
- :func:`make_pki`: a self-signed CA, server and client certificates, and a rogue CA with its own client
  certificate, made with the ``openssl`` command line.
- :func:`make_ct_series` / :func:`make_parametric_map`: tiny objects to send.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

ORTHANC_BIN = "/usr/sbin/Orthanc"
STORESCP_BIN = "storescp"

# Lua hook: Orthanc calls it for every incoming instance before it decides to store it, so duplicates show up.
_RECEIPT_LUA = """
function ReceivedInstanceFilter(dicom, origin, info)
  local f = io.open(%s, "a")
  f:write(string.format("%%s %%s %%s %%s\\n", dicom.SOPInstanceUID or "-", dicom.SOPClassUID or "-",
          info.TransferSyntaxUID or "-", origin.RemoteAet or "-"))
  f:close()
  return true
end
"""


def free_port() -> int:
    """An unused TCP port on 127.0.0.1 (ephemeral range; tiny race until the caller binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _peer_env() -> dict[str, str]:
    # Debian's dcmtk and Orthanc leave Nagle on unless told: loopback C-STORE would crawl.
    return {**os.environ, "TCP_NODELAY": "1"}


class _EarlyExit(RuntimeError):
    """Orthanc exited during start-up (typically: a port was taken)."""


@dataclass(frozen=True)
class Received:
    """One C-STORE as the peer saw it."""

    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    calling_ae: str


@dataclass(frozen=True)
class OrthancTls:
    """PEM files for Orthanc's DICOM TLS (its certificate, its key, the certificates it trusts)."""

    cert_file: Path
    key_file: Path
    trusted_file: Path
    require_peer_cert: bool = True


class OrthancServer:
    """A throw-away Orthanc. Use as a context manager or call start()/stop()."""

    def __init__(self, workdir: Path, ae_title: str = "ORTHANC", peers: dict[str, tuple[str, int]] | None = None,
                 tls: OrthancTls | None = None, accepted_transfer_syntaxes: Iterable[str] | None = None,
                 extra_config: dict[str, Any] | None = None) -> None:
        """`peers` maps a calling AE title to (host, port); if given, only those AEs may store."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.dicom_port = free_port()
        self.http_port = free_port()
        self.receipts = self.workdir / "received.log"
        self.log_file = self.workdir / "orthanc.log"
        self._proc: subprocess.Popen[bytes] | None = None
        lua = self.workdir / "receipts.lua"
        lua.write_text(_RECEIPT_LUA % json.dumps(str(self.receipts)))
        cfg: dict[str, Any] = {
            "Name": f"test-{ae_title}",
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "SyncStorageArea": True,
            "DicomServerEnabled": True,
            "DicomAet": ae_title,
            "DicomPort": self.dicom_port,
            "DicomCheckCalledAet": True,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "WebDavEnabled": False,
            "LuaScripts": [str(lua)],
            "Plugins": [],
            "SaveJobs": False,
            "DicomScpTimeout": 10,
            "StableAge": 1,
            "UnknownSopClassAccepted": False,
        }
        if peers is not None:
            cfg["DicomAlwaysAllowStore"] = False
            cfg["DicomAlwaysAllowEcho"] = False
            cfg["DicomModalities"] = {ae.lower(): [ae, host, port] for ae, (host, port) in peers.items()}
        if tls is not None:
            cfg.update({
                "DicomTlsEnabled": True,
                "DicomTlsCertificate": str(tls.cert_file),
                "DicomTlsPrivateKey": str(tls.key_file),
                "DicomTlsTrustedCertificates": str(tls.trusted_file),
                "DicomTlsRemoteCertificateRequired": tls.require_peer_cert,
            })
        if accepted_transfer_syntaxes is not None:
            cfg["AcceptedTransferSyntaxes"] = list(accepted_transfer_syntaxes)
        cfg.update(extra_config or {})
        self._cfg = cfg
        self._started_once = False
        self.config_file = self.workdir / "orthanc.json"
        self._write_config()

    def _write_config(self) -> None:
        self._cfg.update({"DicomPort": self.dicom_port, "HttpPort": self.http_port})
        self.config_file.write_text(json.dumps(self._cfg, indent=2))

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 30.0) -> OrthancServer:
        """Start Orthanc and wait until both its REST API and its DICOM port answer.

        On the first start only, a port taken meanwhile by another process (the machine is shared) makes it
        retry on fresh ports; later starts keep the ports, as a restarted destination must.
        """
        for attempt in range(3):
            try:
                return self._start(timeout)
            except _EarlyExit:
                if self._started_once or attempt == 2:
                    raise
                self.dicom_port, self.http_port = free_port(), free_port()
                self._write_config()
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> OrthancServer:
        if self.running:
            return self
        log = open(self.log_file, "ab")
        self._proc = subprocess.Popen([ORTHANC_BIN, str(self.config_file)], stdout=log, stderr=subprocess.STDOUT,
                                      env=_peer_env(), cwd=self.workdir)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise _EarlyExit(f"Orthanc exited with {self._proc.returncode}; see {self.log_file}:\n"
                                 + self.log_file.read_text(errors="replace")[-3000:])
            try:
                self.rest("/system")
                if _wait_port(self.dicom_port, 1.0):
                    self._started_once = True
                    return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"Orthanc not ready after {timeout} s; see {self.log_file}")

    def stop(self, timeout: float = 15.0, graceful: bool = True) -> None:
        """Stop Orthanc: SIGTERM (graceful, ~3 s) killing it if it does not exit in time, or SIGKILL at once
        (teardown of a throw-away server)."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            if graceful:
                self._proc.terminate()
            else:
                self._proc.kill()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> OrthancServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ REST queries
    def rest(self, path: str) -> Any:
        """GET a REST resource as parsed JSON."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}{path}", timeout=10) as rsp:
            return json.loads(rsp.read())

    def post(self, path: str, body: bytes | dict[str, Any]) -> Any:
        """POST to the REST API (a dict is sent as JSON); returns the parsed JSON answer. HTTP errors raise
        urllib.error.HTTPError (its body says why)."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        req = urllib.request.Request(f"http://127.0.0.1:{self.http_port}{path}", data=data, method="POST")
        with urllib.request.urlopen(req, timeout=120) as rsp:
            return json.loads(rsp.read())

    def upload(self, dicom: bytes) -> str | None:
        """Store a DICOM file through the REST API, as a modality would; its Orthanc ID, or None if refused."""
        try:
            return str(self.post("/instances", dicom)["ID"])
        except urllib.error.HTTPError:
            return None

    def route(self, modality: str, instance_ids: list[str]) -> dict[str, Any]:
        """C-STORE the instances to a configured modality in one job, as PACS auto-routing does. Raises
        urllib.error.HTTPError if the job failed (one refusal fails the whole job)."""
        return dict(self.post(f"/modalities/{modality.lower()}/store",
                              {"Resources": instance_ids, "Synchronous": True}))

    def instance_count(self) -> int:
        return int(self.rest("/statistics")["CountInstances"])

    def sop_instance_uids(self) -> list[str]:
        """SOP Instance UIDs stored (each once, as Orthanc keeps one copy)."""
        return [i["MainDicomTags"]["SOPInstanceUID"] for i in self.rest("/instances?expand")]

    def instance_tags(self, sop_instance_uid: str) -> dict[str, Any]:
        """Simplified tags of a stored instance, found by SOP Instance UID."""
        for i in self.rest("/instances?expand"):
            if i["MainDicomTags"]["SOPInstanceUID"] == sop_instance_uid:
                return self.rest(f"/instances/{i['ID']}/simplified-tags")
        raise KeyError(sop_instance_uid)

    def received(self) -> list[Received]:
        """Every C-STORE received since the server was created, duplicates included, in order."""
        if not self.receipts.exists():
            return []
        out = []
        for line in self.receipts.read_text().splitlines():
            parts = line.split(" ")
            if len(parts) == 4:
                out.append(Received(*parts))
        return out


class StorescpServer:
    """dcmtk ``storescp`` keeping every received copy; `profile` = (config file, profile name) for ``-xf``."""

    def __init__(self, workdir: Path, ae_title: str = "STORESCP", profile: tuple[Path, str] | None = None) -> None:
        self.workdir = Path(workdir)
        self.out_dir = self.workdir / "received"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.ae_title = ae_title
        self.port = free_port()
        self.profile = profile
        self.log_file = self.workdir / "storescp.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15.0) -> StorescpServer:
        """Start storescp and wait until it listens (on a fresh port if the chosen one was taken meanwhile)."""
        for _ in range(3):
            cmd = [STORESCP_BIN, "--aetitle", self.ae_title, "--output-directory", str(self.out_dir),
                   "--unique-filenames", "--log-level", "info"]
            if self.profile is not None:
                cmd += ["--config-file", str(self.profile[0]), self.profile[1]]
            cmd.append(str(self.port))
            log = open(self.log_file, "ab")
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_peer_env())
            log.close()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and self._proc.poll() is None:
                if _wait_port(self.port, 0.2):
                    return self
            if self._proc.poll() is None:
                break
            self.port = free_port()
        self.stop()
        raise TimeoutError(f"storescp not listening; see {self.log_file}")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._proc = None

    def __enter__(self) -> StorescpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def received_datasets(self) -> list[Dataset]:
        """Every received copy (storescp writes one file per C-STORE with --unique-filenames)."""
        return [pydicom.dcmread(p) for p in sorted(self.out_dir.iterdir()) if p.is_file()]


def storescp_profile_without(path: Path, sop_classes: dict[str, str], name: str = "Restricted") -> tuple[Path, str]:
    """Write a storescp ``-xf`` config accepting only `sop_classes` (dcmtk name -> UID, names used), uncompressed.

    Anything not listed, e.g. ParametricMapStorage, is rejected at association negotiation.
    """
    lines = ["[[TransferSyntaxes]]", "[Uncompressed]", "TransferSyntax1 = LocalEndianExplicit",
             "TransferSyntax2 = LittleEndianImplicit", "", "[[PresentationContexts]]", f"[{name}Contexts]"]
    for i, dcmtk_name in enumerate(sop_classes, 1):
        lines.append(f"PresentationContext{i} = {dcmtk_name}\\Uncompressed")
    lines += ["", "[[Profiles]]", f"[{name}]", f"PresentationContexts = {name}Contexts", ""]
    path.write_text("\n".join(lines))
    return path, name


# ---------------------------------------------------------------------- PKI
@dataclass(frozen=True)
class Pki:
    """PEM files of a test CA, a server and a client signed by it, and a rogue CA's client."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_ca_cert: Path
    rogue_client_cert: Path
    rogue_client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _issue(d: Path, name: str, ca: str, cn: str) -> None:
    _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={cn}", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyAgreement\n"
                   "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-days", "2", "-sha256", "-extfile", ext.name, "-out", f"{name}.crt", cwd=d)


def make_pki(directory: Path) -> Pki:
    """Create the test PKI in `directory` with the openssl CLI (EC P-256 keys, 2-day validity)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    for ca in ("ca", "rogue-ca"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{ca}.key", "-out", f"{ca}.crt", "-days", "2", "-subj", f"/CN=liver-node test {ca}",
                 "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 cwd=d)
    _issue(d, "server", "ca", "localhost")
    _issue(d, "client", "ca", "liver-node client")
    _issue(d, "rogue-client", "rogue-ca", "rogue client")
    return Pki(ca_cert=d / "ca.crt", server_cert=d / "server.crt", server_key=d / "server.key",
               client_cert=d / "client.crt", client_key=d / "client.key", rogue_ca_cert=d / "rogue-ca.crt",
               rogue_client_cert=d / "rogue-client.crt", rogue_client_key=d / "rogue-client.key")


# ---------------------------------------------------------------------- sample objects
def make_ct_series(n_slices: int = 4, rows: int = 16, cols: int = 16, patient_id: str = "OUTBOX01",
                   study_uid: str | None = None, seed: int = 0) -> list[Dataset]:
    """A tiny axial CT series (int16 HU, 1 mm pixels, 2 mm slices) with complete patient/study identification."""
    rng = np.random.default_rng(seed)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    out = []
    for k in range(n_slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.Modality = "CT"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Outbox^Test", patient_id, "19600101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20240101", "120000", "1", "ACC1"
        ds.ReferringPhysicianName, ds.SeriesNumber, ds.InstanceNumber = "", 1, k + 1
        ds.ContentDate, ds.ContentTime, ds.AcquisitionNumber = "20240101", "120000", 1
        ds.Manufacturer, ds.BodyPartExamined, ds.PositionReferenceIndicator = "test", "ABDOMEN", ""
        ds.KVP, ds.PatientPosition = "120", "HFS"
        ds.ImagePositionPatient = [0.0, 0.0, 2.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.PixelData = rng.integers(-100, 200, (rows, cols), dtype=np.int16).tobytes()
        out.append(ds)
    return out


def make_parametric_map(ct: list[Dataset], values: np.ndarray | None = None) -> Dataset:
    """A float32 highdicom Parametric Map (mL/min/100 mL) on the CT grid, one frame per CT slice."""
    import highdicom as hd

    from node.derived import copy_patient_study, equipment_kwargs

    shape = (len(ct), ct[0].Rows, ct[0].Columns)
    if values is None:
        values = np.linspace(0.0, 120.0, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label="ALP", lut_explanation="Arterial liver perfusion", unit=hd.sr.CodedConcept(
            "mL/min/(100.mL)", "UCUM", "mL/min/100 mL"), value_range=(0.0, 200.0), slope=1.0, intercept=0.0)
    eq = equipment_kwargs()
    pm = hd.pm.ParametricMap(
        source_images=ct, pixel_array=values.astype(np.float32), series_instance_uid=generate_uid(),
        series_number=900, sop_instance_uid=generate_uid(), instance_number=1,
        manufacturer=eq["manufacturer"], manufacturer_model_name=eq["manufacturer_model_name"],
        software_versions=eq["software_versions"], device_serial_number=eq["device_serial_number"],
        contains_recognizable_visual_features=False, real_world_value_mappings=[mapping],
        content_label="ALP", content_description="Arterial liver perfusion (max slope) DERIVED",
        series_description="ALP map, DERIVED, not for primary diagnosis",
        image_flavor=hd.pm.ImageFlavorValues.VOLUME, derived_pixel_contrast=hd.pm.DerivedPixelContrastValues.QUANTITY,
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=60.0, window_width=120.0)],
    )
    copy_patient_study(ct[0], pm)
    return pm


def dciodvfy_errors(path: Path) -> list[str]:
    """Lines of `dciodvfy` output that report an Error (empty list = the object is valid)."""
    exe = shutil.which("dciodvfy")
    if exe is None:
        raise RuntimeError("dciodvfy (dicom3tools) is not installed")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True)
    return [ln for ln in (res.stdout + res.stderr).splitlines() if "Error" in ln]
