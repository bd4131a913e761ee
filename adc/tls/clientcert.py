"""What an https client's certificate tells the real servers: the `X-SSL-Client-*` request fields.

With `client_ssl.forward_client_cert` (on by default when `verify_client` asks for a
certificate), every request of the connection reaches the real server with:

    X-SSL-Client-Verify     SUCCESS, or NONE when the client sent no certificate
    X-SSL-Client-Subject    subject, RFC 4514 (most specific first: "CN=alice,O=Example")
    X-SSL-Client-Issuer     issuer, RFC 4514
    X-SSL-Client-Serial     serial number, upper-case hex
    X-SSL-Client-Not-After  end of validity, "2027-01-31T23:59:59Z"
    X-SSL-Client-SHA256     SHA-256 of the certificate (DER), lower-case hex
    X-SSL-Client-Cert       the certificate, base64 DER on one line

(the names NGINX users give `$ssl_client_verify`, `$ssl_client_s_dn`... by convention).
A certificate that fails verification never gets this far: its handshake fails. The
fields are the appliance's alone: whatever the client sent under a name starting with
`X-SSL-Client-` is removed first, also spelt with underscores (`X_SSL_Client_Verify`),
which CGI-style servers read as the same name (adc.http.headers.without_client_cert_fields).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib

from cryptography import x509

Fields = tuple[tuple[bytes, bytes], ...]

NO_CERTIFICATE: Fields = ((b"X-SSL-Client-Verify", b"NONE"),)

# certificate (DER) -> its fields: a client comes back with the same certificate
_CACHE: dict[bytes, Fields] = {}
_CACHE_SIZE = 1024


def client_cert_fields(der: bytes | None) -> Fields:
    """The request fields for a connection whose client presented `der` (None: no certificate)."""
    if not der:
        return NO_CERTIFICATE
    fields = _CACHE.get(der)
    if fields is None:
        fields = _fields(der)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[der] = fields
    return fields


def certificate_subject(fields: Fields) -> str | None:
    """What the access log names a client by: its certificate's subject (its SHA-256 if the
    subject could not be read); None without a certificate."""
    found = dict(fields)
    subject = found.get(b"X-SSL-Client-Subject") or found.get(b"X-SSL-Client-SHA256")
    return None if subject is None else subject.decode("ascii")


def _fields(der: bytes) -> Fields:
    described: list[tuple[bytes, bytes]] = [(b"X-SSL-Client-Verify", b"SUCCESS")]
    try:
        cert = x509.load_der_x509_certificate(der)
        described += [
            (b"X-SSL-Client-Subject", dn_text(cert.subject)),
            (b"X-SSL-Client-Issuer", dn_text(cert.issuer)),
            (b"X-SSL-Client-Serial", b"%X" % cert.serial_number),
            (b"X-SSL-Client-Not-After", _utc(cert.not_valid_after_utc)),
        ]
    except ValueError:
        pass  # OpenSSL accepted what cryptography will not parse: the certificate itself still goes
    described += [
        (b"X-SSL-Client-SHA256", hashlib.sha256(der).hexdigest().encode("ascii")),
        (b"X-SSL-Client-Cert", base64.b64encode(der)),
    ]
    return tuple(described)


def dn_text(name: x509.Name) -> bytes:
    """RFC 4514 text of a distinguished name, as a field value: visible ASCII only.

    Non-ASCII and control characters are written as RFC 4514 hex pairs of their UTF-8
    bytes (`\\C3\\A9` for "é"), as NGINX writes them: a field value carries no raw
    control bytes, and a real server that decodes the escapes gets the name back.
    """
    out: list[str] = []
    for ch in name.rfc4514_string():
        if " " <= ch <= "~":
            out.append(ch)
        else:
            out.append("".join(f"\\{b:02X}" for b in ch.encode("utf-8", "surrogatepass")))
    return "".join(out).encode("ascii")


def _utc(when: dt.datetime) -> bytes:
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ").encode("ascii")
