"""TLS contexts for DICOM TLS (PS3.15 B.1, "Basic TLS Secure Transport Connection Profile").

Both directions authenticate with X.509 certificates from PEM files named in the configuration. TLS 1.2 is the
minimum (the BCP 195 profiles of PS3.15 B.9/B.10 forbid older versions). Peers are verified against `ca_file`
(the site's DICOM CA); host names are not checked because DICOM peers are configured by IP address and AE title
and their certificates rarely name the address the node uses.
"""
from __future__ import annotations

import logging
import ssl

from node.config import TlsConfig

__all__ = ["TlsSetupError", "server_context", "client_context"]

logger = logging.getLogger(__name__)


class TlsSetupError(RuntimeError):
    """A certificate, key or CA file could not be loaded; the message names the file, `field` the config key
    (``cert_file`` or ``ca_file``) so callers can raise a ConfigError naming e.g. ``security.tls.cert_file``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _load_chain(ctx: ssl.SSLContext, tls: TlsConfig) -> None:
    try:
        ctx.load_cert_chain(certfile=str(tls.cert_file), keyfile=str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError("cert_file",
                            f"cannot load certificate {tls.cert_file} with key {tls.key_file}: {exc}") from exc


def _load_ca(ctx: ssl.SSLContext, tls: TlsConfig) -> None:
    if tls.ca_file is None:
        return
    try:
        ctx.load_verify_locations(cafile=str(tls.ca_file))
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError("ca_file", f"cannot load CA certificates {tls.ca_file}: {exc}") from exc


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """Context for the node's SCP: presents our certificate; with `require_client_cert`, peers must present one
    signed by `ca_file` or the handshake fails."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, tls)
    _load_ca(ctx, tls)
    if tls.require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
    elif tls.ca_file is not None:
        ctx.verify_mode = ssl.CERT_OPTIONAL
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def client_context(tls: TlsConfig) -> ssl.SSLContext:
    """Context for sending: presents our certificate and verifies the peer against `ca_file` (or, if none is
    configured, the system's trusted CAs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # see module docstring: the CA, not the address, is the trust anchor
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_chain(ctx, tls)
    if tls.ca_file is not None:
        _load_ca(ctx, tls)
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx
