"""DICOM TLS both ways, with a CA made in the test: only a certificate from the right CA opens an association.

Sending: the node's sender against Orthanc with DICOM TLS. Receiving: a pynetdicom SCP using
node.tls.server_context, called by dcmtk's echoscu (an independent TLS client) and by node.tls.client_context.
"""
# mypy: disable-error-code="union-attr, index, arg-type"
from __future__ import annotations

import subprocess
from collections import Counter
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from node.config import TlsConfig
from node.outbox import Outbox
from node.sender import Sender
from node.tls import TlsSetupError, client_context, server_context
from node.workflow import OutputObject
from testpeers.orthanc import OrthancServer, OrthancTls, free_port, make_ct_series, make_pki

from conftest import make_config

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_pacs(pki, tmp_path_factory):
    server = OrthancServer(tmp_path_factory.mktemp("tls-pacs"), ae_title="TLSPACS",
                           tls=OrthancTls(pki.server_cert, pki.server_key, pki.ca_cert)).start()
    yield server
    server.stop(graceful=False)


def _send_one(tmp_path: Path, port: int, tls: dict | None) -> tuple[dict, str]:
    dest = {"ae_title": "TLSPACS", "host": "127.0.0.1", "port": port, "outputs": ["secondary-capture"]}
    if tls is not None:
        dest["tls"] = tls
    cfg = make_config(tmp_path, outbox={"max_attempts": 1}, destinations={"pacs": dest})
    ob = Outbox(cfg)
    ds = make_ct_series(n_slices=1, rows=8, cols=8)[0]
    ob.produce("tls", OutputObject("secondary-capture", ds))
    Sender(cfg, ob).run_once()
    return ob.summary()[0], ds.SOPInstanceUID


def test_sending_needs_a_certificate_from_the_peers_ca(pki, tls_pacs, tmp_path: Path) -> None:
    good = {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key), "ca_file": str(pki.ca_cert)}
    row, uid = _send_one(tmp_path / "good", tls_pacs.dicom_port, good)
    assert row["state"] == "sent"
    assert Counter(r.sop_instance_uid for r in tls_pacs.received())[uid] == 1

    rogue = {"cert_file": str(pki.rogue_client_cert), "key_file": str(pki.rogue_client_key),
             "ca_file": str(pki.ca_cert)}
    row, uid = _send_one(tmp_path / "rogue", tls_pacs.dicom_port, rogue)
    assert row["state"] == "failed" and "TLS handshake" in row["last_error"]
    assert uid not in {r.sop_instance_uid for r in tls_pacs.received()}

    row, uid = _send_one(tmp_path / "plain", tls_pacs.dicom_port, None)  # no TLS at all
    assert row["state"] == "failed"
    assert uid not in {r.sop_instance_uid for r in tls_pacs.received()}


def test_sending_refuses_a_peer_whose_certificate_is_from_another_ca(pki, tls_pacs, tmp_path: Path) -> None:
    trusts_rogue_only = {"cert_file": str(pki.client_cert), "key_file": str(pki.client_key),
                         "ca_file": str(pki.rogue_ca_cert)}
    row, uid = _send_one(tmp_path, tls_pacs.dicom_port, trusts_rogue_only)
    assert row["state"] == "failed" and "CERTIFICATE_VERIFY_FAILED" in row["last_error"]
    assert uid not in {r.sop_instance_uid for r in tls_pacs.received()}


@pytest.fixture
def tls_scp(pki):
    ae = AE(ae_title="LIVERNODE")
    ae.add_supported_context(Verification)
    port = free_port()
    ctx = server_context(TlsConfig(cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca_cert,
                                   require_client_cert=True))
    server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=ctx)
    yield port
    server.shutdown()


def _echoscu(port: int, *tls_args: str) -> int:
    cmd = ["echoscu", "-aec", "LIVERNODE", "-to", "5", "-ta", "5", "-td", "5", *tls_args, "127.0.0.1", str(port)]
    return subprocess.run(cmd, capture_output=True, timeout=30).returncode


def test_receiving_needs_a_client_certificate_from_our_ca(pki, tls_scp) -> None:
    port = tls_scp
    assert _echoscu(port, "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.ca_cert)) == 0
    assert _echoscu(port, "+tls", str(pki.rogue_client_key), str(pki.rogue_client_cert),
                    "+cf", str(pki.ca_cert)) != 0
    assert _echoscu(port, "+tla", "+cf", str(pki.ca_cert)) != 0  # TLS without a client certificate
    assert _echoscu(port) != 0  # plain TCP on a TLS port
    # The client checks us too: our certificate is not from the CA it trusts.
    assert _echoscu(port, "+tls", str(pki.client_key), str(pki.client_cert), "+cf", str(pki.rogue_ca_cert)) != 0


def test_client_context_opens_an_association_with_our_scp_only_with_the_right_ca(pki, tls_scp) -> None:
    def associate(ca: Path) -> bool:
        ctx = client_context(TlsConfig(cert_file=pki.client_cert, key_file=pki.client_key, ca_file=ca))
        ae = AE(ae_title="TESTSCU")
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", tls_scp, ae_title="LIVERNODE", tls_args=(ctx, "127.0.0.1"))
        ok = assoc.is_established
        if ok:
            assert assoc.send_c_echo().Status == 0
            assoc.release()
        return ok

    assert associate(pki.ca_cert)
    assert not associate(pki.rogue_ca_cert)


def test_unloadable_certificate_names_the_key(pki, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsSetupError) as err:
        server_context(TlsConfig(cert_file=junk, key_file=pki.server_key, ca_file=pki.ca_cert))
    assert err.value.field == "cert_file" and str(junk) in str(err.value)
    with pytest.raises(TlsSetupError) as err:
        client_context(TlsConfig(cert_file=pki.client_cert, key_file=pki.client_key, ca_file=junk))
    assert err.value.field == "ca_file"
