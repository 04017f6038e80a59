"""Tolerant receiving with real vendor files (issue 13 point 6): every file of the corpus's ts/ and odd/ folders,
sent by dcmtk storescu (and, where dcmtk cannot, by pynetdicom or a raw C-STORE), and routed by an Orthanc as a
PACS does. Expectations come from DICOM facts about each file (table EXPECT), not from the node's output.

"Stored as received", precisely: the stored file is a 128-byte zero preamble, "DICM", a file meta group whose
Media Storage SOP Class / Instance UID are the C-STORE request's Affected SOP Class / Instance UID and whose
Transfer Syntax UID is that of the presentation context the data set came on, followed by the data set bytes
exactly as they went over the wire (the P-DATA data set fragments, concatenated), which a recording proxy
between sender and node captures. Senders that send a file without re-encoding it (pynetdicom streaming a file,
the raw sender) put the file's own data set bytes on the wire; that is checked too. dcmtk storescu decodes and
re-encodes (group lengths, padding, deflate level): for it, the wire is the reference.
"""
from __future__ import annotations

import logging
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom import _config as pynetdicom_config

from node.header import read_header, read_stored
from testpeers import pdufuzz as Z
from testpeers.orthanc import OrthancServer

from conftest import make_config

pytestmark = pytest.mark.network

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "realworld-dicom"  # ../shared from the repository
OK, A900, C000 = 0x0000, 0xA900, 0xC000
EXPLICIT = "1.2.840.10008.1.2.1"


@dataclass(frozen=True)
class Expect:
    status: int
    unusable: tuple[str, ...] = ()
    sender: str = "dcmtk"  # dcmtk storescu | pynetdicom (dcmtk 3.6.7 lacks the TS) | raw (nothing else sends it)
    fact: str = ""


E = Expect
#: What a conformant receiver must answer, from what each file is (PS3.4 B.2.3 statuses; corpus.tsv notes).
EXPECT: dict[str, Expect] = {
    # ts/: the same kinds of images in every transfer syntax; all parseable, all stored as received
    "ts/1.2.840.10008.1.2.dcm": E(OK, fact="implicit VR little endian data set without file meta"),
    "ts/1.2.840.10008.1.2.1.99.dcm": E(OK, fact="deflated explicit VR little endian CT"),
    "ts/1.2.840.10008.1.2.2.dcm": E(OK, fact="explicit VR big endian US"),
    "ts/1.2.840.10008.1.2.4.50.dcm": E(OK, fact="JPEG baseline"),
    "ts/1.2.840.10008.1.2.4.51.dcm": E(OK, fact="JPEG extended"),
    "ts/1.2.840.10008.1.2.4.57.dcm": E(OK, fact="JPEG lossless process 14"),
    "ts/1.2.840.10008.1.2.4.70.dcm": E(OK, fact="JPEG lossless SV1"),
    "ts/1.2.840.10008.1.2.4.81.dcm": E(OK, fact="JPEG-LS near-lossless"),
    "ts/1.2.840.10008.1.2.4.90.dcm": E(OK, fact="JPEG 2000 lossless"),
    "ts/1.2.840.10008.1.2.4.91.dcm": E(OK, fact="JPEG 2000"),
    # four codec samples written by toolkits carry no Study or Series Instance UID (Type 1): the transfer syntax
    # is accepted, the object cannot be filed; re-labelled copies with an identity are stored (test below)
    "ts/HTJ2KLossless_08_RGB.dcm": E(A900, sender="pynetdicom", fact="HTJ2K lossless SC without Study UID"),
    "ts/HTJ2K_08_RGB.dcm": E(A900, sender="pynetdicom", fact="HTJ2K SC without Study UID"),
    "ts/JLSL_16_15_1_1F.dcm": E(A900, fact="JPEG-LS lossless SC without Study UID"),
    "ts/JPEGLSNearLossless_16.dcm": E(A900, fact="JPEG-LS near-lossless SC without Study UID"),
    "ts/JPGExtended.dcm": E(OK, fact="JPEG extended 12 bit"),
    "ts/JPGLosslessP14SV1_1s_1f_8b.dcm": E(OK, fact="JPEG lossless SV1"),
    "ts/MR2_J2KI.dcm": E(OK, fact="JPEG 2000"),
    "ts/MR_small_RLE.dcm": E(OK, fact="RLE"),
    "ts/MR_small_bigendian.dcm": E(OK, fact="explicit VR big endian"),
    "ts/MR_small_implicit.dcm": E(OK, fact="implicit VR little endian"),
    "ts/MR_small_jp2klossless.dcm": E(OK, fact="JPEG 2000 lossless"),
    "ts/MR_small_jpeg_ls_lossless.dcm": E(OK, fact="JPEG-LS lossless"),
    "ts/SC_rgb_small_odd_big_endian.dcm": E(OK, fact="big endian RGB, odd size"),
    "ts/YBR_FULL-RLE.dcm": E(OK, fact="RLE YBR_FULL"),
    "ts/image_dfl.dcm": E(OK, fact="deflated Secondary Capture"),
    "ts/liver_deflate.dcm": E(OK, ("pixel-codec-unavailable",), sender="pynetdicom",
                              fact="Segmentation in Deflated Image Frame Compression: no decoder"),
    "ts/report_dfl": E(OK, fact="deflated Enhanced SR"),
    "ts/will-jxl.dcm": E(OK, ("pixel-codec-unavailable",), sender="pynetdicom", fact="JPEG XL: no decoder"),
    # odd/: malformed and edge cases
    "odd/2017-06-27-XSSInjection.dcm": E(OK, ("no-pixel-data",), fact="MR Image without Pixel Data"),
    "odd/2026-05-06-Deeply-Nested-Sequence.dcm": E(C000, sender="raw",
                                                   fact="sequences nested thousands deep (dcmtk crashes on it)"),
    "odd/2026-05-26-oob-monochrome-46341.dcm": E(C000, fact="9330 bytes of native Pixel Data for 46341 x 46341"),
    "odd/DummyCTWithLongTag.dcm": E(OK, ("no-pixel-data",), fact="MR Image without Pixel Data, a huge value"),
    "odd/GH220.dcm": E(A900, fact="Philips private SOP class, accepted at negotiation; no Study/Series UID"),
    "odd/GH223.dcm": E(A900, fact="CT Image header only: no Study Instance UID (Type 1)"),
    "odd/Issue195.dcm": E(A900, sender="raw", fact="no SOP Class UID"),
    "odd/MR_truncated.dcm": E(C000, sender="raw", fact="Pixel Data runs past the end of the file"),
    "odd/Tag-0040-A170-VR-CS.dcm": E(OK, sender="raw", fact="implicit VR; (0040,A170) holds a CS value where the "
                                                            "dictionary says SQ; every length defined: parseable"),
    "odd/UN_sequence.dcm": E(A900, sender="raw", fact="no SOP Class UID"),
    "odd/UnknownSopClassUid.dcm": E(OK, ("unknown-sop-class",), fact="private SOP class 1.2.276.0.19.55..."),
    "odd/badVR.dcm": E(OK, fact="RT Dose with NumberOfFrames '1A': an invalid IS value, structurally fine"),
    "odd/empty_pid_series/Lena-1.dcm": E(OK, fact="empty PatientID (Type 2)"),
    "odd/empty_pid_series/Lena-2.dcm": E(OK, fact="empty PatientID (Type 2)"),
    "odd/empty_pid_series/Lena-3.dcm": E(OK, fact="empty PatientID (Type 2)"),
    "odd/empty_pid_series/Lena-4.dcm": E(OK, fact="empty PatientID (Type 2)"),
    "odd/empty_pid_series/Lena-5.dcm": E(OK, fact="empty PatientID (Type 2)"),
    "odd/no_meta.dcm": E(C000, sender="raw", fact="one stray byte, then an explicit VR data set: not parseable"),
    "odd/no_preamble_dicm_in_data": E(A900, sender="raw", fact="explicit VR data set without SOP Class UID"),
    "odd/reportsi_with_empty_number_tags.dcm": E(OK, fact="SR with empty IS/DS values"),
}
#: A Philips private SOP class with a full identity (outside ts/ and odd/): stored, unusable for analysis.
EXTRA = {"ct_single/GH355.dcm": E(OK, ("unknown-sop-class",), fact="GE CT image under a Philips private class")}


def _corpus_files() -> list[str]:
    return sorted(str(p.relative_to(CORPUS)) for d in ("ts", "odd") for p in (CORPUS / d).rglob("*") if p.is_file())


def test_the_table_covers_every_file_of_ts_and_odd() -> None:
    assert _corpus_files() == sorted(EXPECT), "a corpus file was added or removed: say what it must get"


def _profile(tmp: Path, sop_class: str, ts: str) -> Path:
    """A storescu association profile proposing exactly the file's SOP class in the file's transfer syntax, so
    storescu sends the file as it is (it would otherwise try to convert it)."""
    cfg = tmp / "profile.cfg"
    cfg.write_text(f"[[TransferSyntaxes]]\n[AsFile]\nTransferSyntax1 = {ts}\n\n[[PresentationContexts]]\n"
                   f"[Ctx]\nPresentationContext1 = {sop_class}\\AsFile\n\n[[Profiles]]\n[P]\n"
                   f"PresentationContexts = Ctx\n")
    return cfg


def _send(expect: Expect, path: Path, port: int, tmp: Path) -> int | None:
    """Send `path` to `port` as the table says; returns the status the sender saw (None: nothing answered)."""
    sop_class, sop_instance, ts, dataset = Z.file_facts(path)
    if expect.sender == "dcmtk":
        part10 = path.read_bytes()[128:132] == b"DICM"
        r = subprocess.run(["storescu", "-aet", "CORPUS", "-aec", "LIVERNODE", "-xf", str(_profile(tmp, sop_class, ts)),
                            "P", *([] if part10 else ["-f"]), "127.0.0.1", str(port), str(path)],
                           capture_output=True, text=True, timeout=120)
        assert (r.returncode == 0) == (expect.status == OK), r.stdout + r.stderr
        return None  # the status is read from the proxy
    if expect.sender == "pynetdicom":
        assert pynetdicom_config.STORE_SEND_CHUNKED_DATASET  # file bytes streamed as they are (set by the node)
        ae = AE(ae_title="CORPUS")
        ae.add_requested_context(sop_class, [ts])
        assoc = ae.associate("127.0.0.1", port, ae_title="LIVERNODE")
        assert assoc.is_established
        try:
            return int(assoc.send_c_store(path).Status)
        finally:
            assoc.release()
    with Z.Client("127.0.0.1", port, timeout=60) as c:
        assert c.associate(calling="CORPUS", contexts=[(sop_class, [ts])]) == Z.A_ASSOCIATE_AC
        status = c.store(c.context(ts), sop_class, sop_instance, dataset)
        c.release()
        return status


def _check_stored_as_received(node, wire: Z.Stored) -> Path:
    stored_path = node.index.has_instance(wire.sop_instance)
    assert stored_path, f"{wire.sop_instance} answered Success but not indexed"
    stored = Path(stored_path).read_bytes()
    meta, start = Z.part10_meta(stored)
    assert stored[:128] == bytes(128) and stored[128:132] == b"DICM"
    assert Z.uid_text(meta[0x0002]) == wire.sop_class and Z.uid_text(meta[0x0003]) == wire.sop_instance
    assert Z.uid_text(meta[0x0010]) == wire.transfer_syntax
    assert stored[start:] == wire.dataset  # byte for byte what came over the wire
    return Path(stored_path)


@pytest.mark.parametrize("name", sorted({**EXPECT, **EXTRA}))
def test_corpus_file_gets_its_status_and_is_stored_as_received(name: str, node_factory, tmp_path: Path,
                                                               caplog) -> None:
    expect = {**EXPECT, **EXTRA}[name]
    path = CORPUS / name
    node = node_factory(workflows={})
    with Z.RecordingProxy(("127.0.0.1", node.address[1])) as proxy, caplog.at_level(logging.WARNING):
        seen = _send(expect, path, proxy.port, tmp_path)
        statuses = proxy.statuses()
    assert statuses == [expect.status], f"{name} ({expect.fact}): got {[hex(s) for s in statuses]}"
    assert seen in (None, expect.status)
    (comment,) = proxy.comments()
    (wire,) = [s for r in proxy.recordings for s in r.stores]
    node.receiver.flush()
    if expect.sender in ("pynetdicom", "raw"):  # these put the file's data set on the wire unchanged
        assert wire.dataset == Z.file_facts(path)[3]
    if expect.status != OK:
        assert not node.index.has_instance(wire.sop_instance)
        # the refusal's log line (the per-association audit line, "transfer ... refused=1", comes when the
        # association ends, before or after this check: it is the audit trail, not a second refusal line)
        refusals = [r for r in caplog.records if "refused" in r.getMessage() and r.name != "node.audit"]
        assert len(refusals) == 1 and f"0x{expect.status:04X}" in refusals[0].getMessage()
        # the sender is told why too: an Error Comment (0000,0902), the reason the log line gives
        assert comment and comment[:40] in refusals[0].getMessage(), (comment, refusals[0].getMessage())
        assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text
        return
    stored = _check_stored_as_received(node, wire)
    info = read_header(stored)  # the node's reader on the stored file
    assert info.unusable_reasons() == expect.unusable, info.unusable
    if expect.unusable:
        assert any("not usable as an analysis input" in r.getMessage() and expect.unusable[0] in r.getMessage()
                   for r in caplog.records)


@pytest.mark.parametrize("name", ["ts/HTJ2KLossless_08_RGB.dcm", "ts/HTJ2K_08_RGB.dcm", "ts/JLSL_16_15_1_1F.dcm",
                                  "ts/JPEGLSNearLossless_16.dcm"])
def test_codec_samples_with_an_identity_are_stored_and_decodable(name: str, node_factory, tmp_path: Path) -> None:
    """The same files with a Study and Series Instance UID added (nothing else changed): stored as received, and
    usable: the node decodes HTJ2K and JPEG-LS."""
    ds = pydicom.dcmread(CORPUS / name)
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    path = tmp_path / "with-identity.dcm"
    ds.save_as(path, enforce_file_format=True)
    node = node_factory(workflows={})
    with Z.RecordingProxy(("127.0.0.1", node.address[1])) as proxy:
        assert _send(E(OK, sender="pynetdicom"), path, proxy.port, tmp_path) == OK
    (wire,) = proxy.stores()
    assert wire.dataset == Z.file_facts(path)[3]
    node.receiver.flush()
    stored = _check_stored_as_received(node, wire)
    assert read_header(stored).unusable == ""
    assert (read_stored(stored).pixel_array == ds.pixel_array).all()


def test_orthanc_routing_delivers_everything_the_node_can_store(node_factory, tmp_path: Path) -> None:
    """As a PACS does: Orthanc holds the corpus and routes it to the node in one job. A refusal would fail the
    whole job (Orthanc's routing is all or nothing), so the job succeeding is the point of tolerant receiving;
    every instance is stored exactly as Orthanc sent it, group 0002 elements inside its data sets included."""
    node = node_factory(workflows={})
    with Z.RecordingProxy(("127.0.0.1", node.address[1])) as proxy, \
            OrthancServer(tmp_path / "orthanc", peers={"LIVERNODE": ("127.0.0.1", proxy.port)}) as pacs:
        held: dict[str, str] = {}
        for name in {**EXPECT, **EXTRA, "ct_single/GH1376.dcm": E(OK)}:
            if "Deeply-Nested" in name:
                continue  # it crashes Orthanc 1.10.1 itself: no PACS holds it
            oid = pacs.upload((CORPUS / name).read_bytes())
            if oid is not None:
                held[name] = oid
        # files Orthanc 1.10.1 (dcmtk 3.6.7) cannot send: transfer syntaxes it does not know, no SOP class
        cannot_send = {"ts/liver_deflate.dcm", "ts/will-jxl.dcm", "odd/Issue195.dcm"}
        table = {**EXPECT, **EXTRA}
        good = sorted({held[n] for n in held if n not in cannot_send and table.get(n, E(OK)).status == OK})
        bad = sorted({held[n] for n in held if n not in cannot_send and table.get(n, E(OK)).status != OK})
        assert len(good) >= 25 and len(bad) >= 1, sorted(held)
        job = pacs.route("LIVERNODE", good)
        assert job["FailedInstancesCount"] == 0 and job["InstancesCount"] == len(good)
        import urllib.error

        for oid in bad:  # undecodable data keeps its failure status, which fails a job
            with pytest.raises(urllib.error.HTTPError):
                pacs.route("LIVERNODE", [oid])
        wires = proxy.stores()
        statuses = proxy.statuses()
    assert len(wires) == len(statuses) == len(good) + len(bad)
    assert statuses.count(OK) == len(good)
    node.receiver.flush()
    group2 = 0
    for wire in wires:
        if node.index.has_instance(wire.sop_instance):
            stored = _check_stored_as_received(node, wire)
            if wire.dataset[:2] == b"\x02\x00":  # Orthanc sent group 0002 elements inside the data set
                group2 += 1
                ds = read_stored(stored)
                assert str(ds.file_meta.TransferSyntaxUID) == wire.transfer_syntax
                assert not any(t.group == 2 for t in ds.keys())
    assert group2 >= 1  # GH1376: the case issue 13 saw from Orthanc


#: What Orthanc 1.10.1 (Debian; dcmtk 3.6.7 inside), as the PACS in front of the node, does with each file of ts/
#: and odd/ that it does not route (every other file is routed: the node then answers what EXPECT says).
ORTHANC_DOES_NOT_ROUTE: dict[str, str] = {
    "ts/HTJ2KLossless_08_RGB.dcm": "not stored: no Study Instance UID (Orthanc: 'Inexistent tag')",
    "ts/HTJ2K_08_RGB.dcm": "not stored: no Study Instance UID (Orthanc: 'Inexistent tag')",
    "ts/JLSL_16_15_1_1F.dcm": "not stored: no Study Instance UID (Orthanc: 'Inexistent tag')",
    "ts/JPEGLSNearLossless_16.dcm": "not stored: no Study Instance UID (Orthanc: 'Inexistent tag')",
    "ts/liver_deflate.dcm": "stored, cannot send: Deflated Image Frame Compression is unknown to dcmtk 3.6.7",
    "ts/will-jxl.dcm": "stored, cannot send: JPEG XL is unknown to dcmtk 3.6.7",
    "odd/2026-05-06-Deeply-Nested-Sequence.dcm": "not uploaded: it crashes Orthanc 1.10.1 itself",
    "odd/GH220.dcm": "not stored: no Study/Series Instance UID",
    "odd/GH223.dcm": "not stored: no Study Instance UID",
    "odd/Issue195.dcm": "stored, cannot send: no SOP Class UID",
    "odd/MR_truncated.dcm": "not stored: not parseable",
    "odd/Tag-0040-A170-VR-CS.dcm": "not stored: Orthanc's parser reads (0040,A170) as a sequence",
    "odd/UN_sequence.dcm": "not stored: no SOP Class / Study Instance UID",
    "odd/no_meta.dcm": "not stored: not parseable",
    "odd/no_preamble_dicm_in_data": "not stored: not parseable",
}


def _delete(pacs: OrthancServer, oid: str) -> None:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{pacs.http_port}/instances/{oid}", method="DELETE")
    urllib.request.urlopen(req, timeout=10).read()


def test_orthanc_routes_each_file_of_ts_and_odd_alone_and_the_node_answers_as_for_any_sender(tmp_path: Path) -> None:
    """Every file of ts/ and odd/, routed by Orthanc on its own (a job of one instance), to a node of its own (several
    files are the same SOP instance in other transfer syntaxes): what Orthanc routes gets the status EXPECT gives
    for the file (a refusal fails the job, a success completes it) and is stored exactly as Orthanc sent it; what
    Orthanc does not route, the table ORTHANC_DOES_NOT_ROUTE says why, and that is checked too."""
    import urllib.error

    from node.service import Node

    from conftest import RecordingSink

    assert set(ORTHANC_DOES_NOT_ROUTE) <= set(EXPECT)
    outcomes: dict[str, str] = {}
    with Z.RecordingProxy(("127.0.0.1", 9)) as proxy, \
            OrthancServer(tmp_path / "orthanc", peers={"LIVERNODE": ("127.0.0.1", proxy.port)}) as pacs:
        for i, name in enumerate(_corpus_files()):
            why = ORTHANC_DOES_NOT_ROUTE.get(name, "")
            if why.startswith("not uploaded"):
                outcomes[name] = why
                continue
            oid = pacs.upload((CORPUS / name).read_bytes())
            if why.startswith("not stored"):
                assert oid is None, f"{name}: Orthanc now stores it; route it"
                outcomes[name] = why
                continue
            assert oid is not None, f"{name}: Orthanc did not store it"
            node = Node(make_config(tmp_path / f"var{i}"), sink=RecordingSink())
            _host, port = node.start()
            try:
                proxy.target = ("127.0.0.1", port)
                before, sent = len(proxy.statuses()), len(proxy.stores())
                try:
                    job = pacs.route("LIVERNODE", [oid])
                    routed = job["FailedInstancesCount"] == 0 and job["InstancesCount"] == 1
                except urllib.error.HTTPError:
                    routed = False
                statuses, wires = proxy.statuses()[before:], proxy.stores()[sent:]
                node.receiver.flush()
                if why.startswith("stored, cannot send"):
                    assert not routed and statuses == [] and wires == [], name
                    outcomes[name] = why
                    continue
                expect = EXPECT[name]
                assert statuses == [expect.status], f"{name}: {[hex(s) for s in statuses]} ({expect.fact})"
                assert routed == (expect.status == OK), name  # a refusal fails the routing job, as it must
                (wire,) = wires
                if expect.status == OK:
                    stored = _check_stored_as_received(node, wire)
                    assert read_header(stored).unusable_reasons() == expect.unusable, name
                else:
                    assert not node.index.has_instance(wire.sop_instance)
                outcomes[name] = f"routed, node answered 0x{expect.status:04X}"
            finally:
                node.stop()
                _delete(pacs, oid)
    assert sorted(outcomes) == _corpus_files()
    assert sum(o.startswith("routed") for o in outcomes.values()) == len(EXPECT) - len(ORTHANC_DOES_NOT_ROUTE)


def test_group_0002_inside_the_data_set_does_not_change_how_the_node_reads_it(node_factory, tmp_path: Path) -> None:
    """A data set that starts with file-meta elements claiming another transfer syntax (JPEG 2000) but arrives
    in explicit VR little endian: stored verbatim; the node's reader uses the negotiated syntax."""
    node = node_factory(workflows={})
    src = CORPUS / "ts" / "MR_small_jpeg_ls_lossless.dcm"
    ds = pydicom.dcmread(src)
    ds.decompress()
    ds.SOPInstanceUID = generate_uid()
    plain = tmp_path / "plain.dcm"
    ds.save_as(plain, enforce_file_format=True)
    _, start = Z.part10_meta(plain.read_bytes())
    body = plain.read_bytes()[start:]
    lying = b"".join((struct.pack("<HH2sH", 2, 0x0010, b"UI", 22), b"1.2.840.10008.1.2.4.90"))
    dataset = struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(lying)) + lying + body
    with Z.Client("127.0.0.1", node.address[1]) as c:
        c.associate(contexts=[(str(ds.SOPClassUID), [EXPLICIT])])
        assert c.store(c.context(EXPLICIT), str(ds.SOPClassUID), str(ds.SOPInstanceUID), dataset) == OK
        c.release()
    node.receiver.flush()
    stored = Path(node.index.has_instance(str(ds.SOPInstanceUID)))
    assert stored.read_bytes()[Z.part10_meta(stored.read_bytes())[1]:] == dataset  # verbatim
    assert str(pydicom.dcmread(stored).file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.90"  # the trap
    mine = read_stored(stored)
    assert str(mine.file_meta.TransferSyntaxUID) == EXPLICIT
    assert (mine.pixel_array == ds.pixel_array).all()
    assert read_header(stored).sop_instance_uid == str(ds.SOPInstanceUID)


def _relabelled(tmp_path: Path, **uids: str) -> tuple[pydicom.Dataset, bytes]:
    """A real CT slice (Siemens, explicit VR) with identity UIDs replaced; returns it and its data set bytes."""
    ds = pydicom.dcmread(CORPUS / "ct_single" / "osirix-goudurix.dcm")
    for keyword, value in uids.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = pydicom.uid.UID(EXPLICIT)
    path = tmp_path / "relabelled.dcm"
    ds.save_as(path, enforce_file_format=True)
    raw = path.read_bytes()
    return ds, raw[Z.part10_meta(raw)[1]:]


LONG_UID = "1.2.826.0.1.3680043.8.498." + "1234567890" * 5  # 76 characters


def test_nonconformant_uids_are_stored_under_a_safe_name_and_marked(node_factory, tmp_path: Path, caplog) -> None:
    node = node_factory(workflows={})
    ds, dataset = _relabelled(tmp_path, StudyInstanceUID="1.2.840.0113619.2.5", SeriesInstanceUID=LONG_UID + ".1",
                              SOPInstanceUID=LONG_UID + ".2")
    with caplog.at_level(logging.WARNING), Z.Client("127.0.0.1", node.address[1]) as c:
        c.associate(contexts=[(str(ds.SOPClassUID), [EXPLICIT])])
        assert c.store(c.context(EXPLICIT), str(ds.SOPClassUID), LONG_UID + ".2", dataset) == OK
        c.release()
    node.receiver.flush()
    stored = Path(node.index.has_instance(LONG_UID + ".2"))  # the index keeps the real UID
    assert stored.name.startswith("uid-") and len(stored.name) == len("uid-") + 64 + len(".dcm")
    assert stored.parent.name.startswith("uid-") and stored.parent.parent.name == "1.2.840.0113619.2.5"
    assert stored.is_relative_to(node.store.instances)
    info = read_header(stored)
    assert info.sop_instance_uid == LONG_UID + ".2" and info.unusable_reasons() == ("nonconformant-uid",) * 3
    assert "SOPInstanceUID has 78 characters (at most 64 allowed)" in caplog.text
    assert "StudyInstanceUID has a component with a leading zero" in caplog.text


def test_strict_policy_restores_refusal(node_factory, tmp_path: Path) -> None:
    node = node_factory(make_config(tmp_path / "var", receive={"strict": True}), workflows={})
    port = node.address[1]
    for name in ("ts/HTJ2K_08_RGB.dcm", "odd/UnknownSopClassUid.dcm"):  # refused at negotiation
        sop_class, _, ts, _ = Z.file_facts(CORPUS / name)
        with Z.Client("127.0.0.1", port) as c:
            assert c.associate(contexts=[(sop_class, [ts])]) == Z.A_ASSOCIATE_AC
            assert c.accepted[1][0] != 0, name  # the presentation context is not accepted
            c.release()
    for name, status in (("odd/2017-06-27-XSSInjection.dcm", A900),):  # no pixel data
        sop_class, sop_instance, ts, dataset = Z.file_facts(CORPUS / name)
        with Z.Client("127.0.0.1", port) as c:
            c.associate(contexts=[(sop_class, [ts])])
            assert c.store(c.context(ts), sop_class, sop_instance, dataset) == status
            c.release()
    ds, dataset = _relabelled(tmp_path, StudyInstanceUID="1.2.840.0113619.2.5")
    with Z.Client("127.0.0.1", port) as c:
        c.associate(contexts=[(str(ds.SOPClassUID), [EXPLICIT])])
        assert c.store(c.context(EXPLICIT), str(ds.SOPClassUID), str(ds.SOPInstanceUID), dataset) == A900
        c.release()
