"""The X-SSL-Client-* fields made from a client's certificate."""

from __future__ import annotations

import base64

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from adc.tls import certs, clientcert


def test_distinguished_names_are_visible_ascii_with_rfc4514_escapes():
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "José, \"the\" admin"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Line\r\nX-Injected: 1"),
    ])
    # most specific first; RFC 4514 escapes for , and "; UTF-8 and control bytes as hex pairs
    assert clientcert.dn_text(name) == b'O=Line\\0D\\0AX-Injected: 1,CN=Jos\\C3\\A9\\, \\"the\\" admin'


def test_fields_of_a_certificate_and_of_none():
    ca, ca_key = certs.make_ca("Test CA")
    cert, _ = certs.issue_cert(ca, ca_key, ["alice.test"], client=True)
    der = cert.public_bytes(Encoding.DER)
    fields = dict(clientcert.client_cert_fields(der))
    assert fields[b"X-SSL-Client-Verify"] == b"SUCCESS"
    assert fields[b"X-SSL-Client-Subject"] == b"CN=alice.test"
    assert fields[b"X-SSL-Client-Issuer"] == ca.subject.rfc4514_string().encode()
    assert base64.b64decode(fields[b"X-SSL-Client-Cert"]) == der
    assert clientcert.client_cert_fields(der) is clientcert.client_cert_fields(der)  # made once
    assert clientcert.client_cert_fields(None) == ((b"X-SSL-Client-Verify", b"NONE"),)


def test_a_certificate_the_parser_refuses_still_goes_with_its_digest():
    fields = dict(clientcert.client_cert_fields(b"\x30\x03\x02\x01\x00"))  # DER, but no certificate
    assert set(fields) == {b"X-SSL-Client-Verify", b"X-SSL-Client-SHA256", b"X-SSL-Client-Cert"}
