"""DICOM over TLS (PS3.15 Annex B.1, the TLS Secure Transport Connection Profile), as Orthanc's
``DicomTlsEnabled`` and dcm4chee's TLS connections offer it.

With ``dicom_tls_cert`` and ``dicom_tls_key`` (PEM) the DICOM port speaks TLS only: a client
connecting in plain TCP gets no association. With ``dicom_tls_ca`` (PEM bundle) the archive
also asks each caller for a certificate signed by one of those authorities and refuses one
without (mutual authentication, what DCMTK's tools do by default with ``+tls``); without it,
callers are not asked for one. TLS 1.2 or later.

Associations the archive opens (C-MOVE sub-operations, ``archivist send``, forwarding,
Storage Commitment reports) use TLS to the peers named in ``dicom_tls_peers``, presenting the
same certificate and checking the peer's against ``dicom_tls_ca`` (or the system's
authorities); the peer's host name is not checked (DICOM peers are known by address and AE
title, and their certificates seldom name them), its certificate chain is.
"""

from __future__ import annotations

import ssl
from typing import Any

__all__ = ["client_context", "server_context", "tls_problem"]


def server_context(settings: Any) -> ssl.SSLContext | None:
    """The TLS context of the DICOM port, or None when it speaks plain TCP."""
    if not settings.dicom_tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    if settings.dicom_tls_ca:
        context.load_verify_locations(settings.dicom_tls_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(settings: Any, aet: str) -> ssl.SSLContext | None:
    """The TLS context for an association the archive opens with `aet`, or None (plain TCP)."""
    if aet not in settings.dicom_tls_peers:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    if settings.dicom_tls_ca:
        context.load_verify_locations(settings.dicom_tls_ca)
    else:
        context.load_default_certs()
    context.verify_mode = ssl.CERT_REQUIRED
    if settings.dicom_tls_cert:
        context.load_cert_chain(settings.dicom_tls_cert, settings.dicom_tls_key)
    return context


def tls_problem(settings: Any) -> str | None:
    """Why the DICOM TLS settings cannot work, or None (checked before ``serve`` starts)."""
    if not (settings.dicom_tls_cert or settings.dicom_tls_peers):
        return None
    try:
        if settings.dicom_tls_cert:
            server_context(settings)
        for aet in settings.dicom_tls_peers:
            client_context(settings, aet)
    except FileNotFoundError as exc:
        return f"no file {exc.filename}"
    except PermissionError as exc:
        return f"cannot read {exc.filename}"
    except (ssl.SSLError, OSError, ValueError) as exc:
        return f"the certificate, key or authorities cannot be used ({getattr(exc, 'reason', None) or exc})"
    return None
