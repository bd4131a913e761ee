"""Certificate store: generation, inspection, and the checks `adc check` reports (texts verbatim)."""

from __future__ import annotations

import datetime as dt
import os
import ssl
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from adc.tls import certs
from tests.tls.conftest import write_crl


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_init_makes_the_store(tmp_path):
    d = tmp_path / "certs"
    written = certs.init(d, ["app.example.test", "10.1.2.3"])
    assert [p.name for p in written] == ["ca.pem", "ca.key", "adc.pem", "adc.key"]
    assert mode(d / "ca.key") == 0o600 and mode(d / "adc.key") == 0o600
    chain = x509.load_pem_x509_certificates((d / "adc.pem").read_bytes())
    assert len(chain) == 2 and chain[1].subject == chain[0].issuer  # server certificate + CA
    assert certs.cert_names(chain[0]) == ("localhost", "app.example.test", "127.0.0.1", "::1", "10.1.2.3")
    # the stdlib accepts the pair and trusts the chain
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "adc.pem", d / "adc.key")
    assert certs.check_pair(d / "adc.pem", d / "adc.key") == ([], [])
    assert certs.check_ca(d / "ca.pem") == ([], [])


def test_init_keeps_an_existing_ca(tmp_path):
    certs.init(tmp_path)
    ca_before = (tmp_path / "ca.pem").read_bytes()
    server_before = (tmp_path / "adc.pem").read_bytes()
    written = certs.init(tmp_path, key_type="rsa")
    assert [p.name for p in written] == ["adc.pem", "adc.key"]
    assert (tmp_path / "ca.pem").read_bytes() == ca_before
    assert (tmp_path / "adc.pem").read_bytes() != server_before
    rows = {r.file: r for r in certs.show(tmp_path)}
    assert rows["adc.pem"].key_type == "RSA-2048" and rows["ca.pem"].key_type == "ECDSA P-256"
    assert mode(tmp_path / "adc.key") == 0o600


def test_init_never_replaces_an_operators_pair_without_force(tmp_path, capsys):
    own = tmp_path / "own"
    certs.init(own)  # another CA's certificate and key: the operator's own, to this store
    store = tmp_path / "certs"
    certs.init(store)
    (store / "adc.pem").write_bytes((own / "adc.pem").read_bytes())
    (store / "adc.key").write_bytes((own / "adc.key").read_bytes())
    key = (store / "adc.key").read_bytes()
    assert certs.cmd_certs_init(store, ["more.test"], "ecdsa") == 2
    assert capsys.readouterr().err == (
        f"adc certs init: {store / 'adc.pem'} is not a development certificate of {store / 'ca.pem'}: "
        "not replaced (--force replaces it and its key)\n"
    )
    assert (store / "adc.key").read_bytes() == key
    assert certs.cmd_certs_init(store, ["more.test"], "ecdsa", force=True) == 0
    assert (store / "adc.key").read_bytes() != key
    # half a CA (the certificate a client_ca names, say) is not replaced either
    (store / "ca.key").unlink()
    with pytest.raises(ValueError, match="ca.pem is there without .*ca.key: not replaced"):
        certs.init(store)
    (own / "adc.pem").unlink()
    with pytest.raises(ValueError, match="adc.key is there without .*adc.pem"):
        certs.init(own)
    bare = tmp_path / "bare"  # an operator's pair and no CA: nothing is written at all
    bare.mkdir()
    (bare / "adc.key").write_bytes(key)
    with pytest.raises(ValueError, match="are there without a development CA: not replaced"):
        certs.init(bare)
    assert sorted(p.name for p in bare.iterdir()) == ["adc.key"]


def test_key_mode_is_0600_even_with_a_lax_umask(tmp_path):
    old = os.umask(0)
    try:
        (tmp_path / "adc.key").write_text("old")
        os.chmod(tmp_path / "adc.key", 0o666)
        certs.init(tmp_path, force=True)
    finally:
        os.umask(old)
    assert mode(tmp_path / "adc.key") == 0o600 and mode(tmp_path / "ca.key") == 0o600


def test_unknown_key_type(tmp_path):
    with pytest.raises(ValueError, match="unknown key type 'dsa' \\(known: ecdsa, rsa\\)"):
        certs.init(tmp_path, key_type="dsa")


def test_ensure_dev_certs(tmp_path):
    d = tmp_path / "certs"
    assert certs.ensure_dev_certs(d) is True
    before = (d / "adc.pem").read_bytes()
    assert certs.ensure_dev_certs(d) is False
    assert (d / "adc.pem").read_bytes() == before
    (d / "adc.key").unlink()  # half a pair: the operator's certificate is left alone
    assert certs.ensure_dev_certs(d) is False
    assert (d / "adc.pem").read_bytes() == before


def test_ensure_dev_certs_reuses_ca(tmp_path):
    certs.init(tmp_path)
    ca = (tmp_path / "ca.pem").read_bytes()
    (tmp_path / "adc.pem").unlink()
    (tmp_path / "adc.key").unlink()
    assert certs.ensure_dev_certs(tmp_path) is True
    assert (tmp_path / "ca.pem").read_bytes() == ca


def test_show_rows_and_table(pki):
    rows = {r.file: r for r in certs.show(pki.dir)}
    adc = rows["adc.pem"]
    assert adc.subject == "localhost" and adc.issuer == "adc development CA" and adc.chain == 1
    assert adc.key_type == "ECDSA P-256" and 390 <= adc.days_left <= 397
    assert rows["ca.pem"].issuer == "self-signed"
    assert rows["expired.pem"].days_left < 0
    table = certs.format_rows(list(rows.values())).splitlines()
    assert table[0].split() == ["FILE", "SUBJECT", "NAMES", "KEY", "ISSUER", "EXPIRES", "DAYS", "LEFT"]
    assert any(line.startswith("expired.pem") and line.endswith("EXPIRED") for line in table)


# --------------------------------------------------------------------------- checks (texts are user interface)


def _three_levels(d):
    """A root (kept in `d`, as a private CA's file), an intermediate, and a leaf it issued."""
    root, root_key = certs.make_ca("Test Root")
    certs.write_pair(d / "root.pem", d / "root.key", root, root_key)
    inter, inter_key = certs.issue_cert(root, root_key, [], common_name="Test Intermediate")
    leaf, leaf_key = certs.issue_cert(inter, inter_key, ["www.test"])
    return inter, leaf, leaf_key


def test_check_warns_of_a_chain_without_its_intermediate(tmp_path):
    inter, leaf, key = _three_levels(tmp_path)
    certs.write_pair(tmp_path / "leaf.pem", tmp_path / "leaf.key", leaf, key)
    errors, warnings = certs.check_pair(tmp_path / "leaf.pem", tmp_path / "leaf.key", base=tmp_path)
    assert errors == []
    assert warnings == [
        "leaf.pem: the chain ends at 'www.test', issued by 'Test Intermediate', which is neither in the file nor "
        "a root this machine trusts: clients without it will refuse the certificate (append the intermediate "
        "certificates after the server certificate)"
    ]
    certs.write_pair(tmp_path / "full.pem", tmp_path / "full.key", leaf, key, chain=(inter,))
    assert certs.check_pair(tmp_path / "full.pem", tmp_path / "full.key", base=tmp_path) == ([], [])


def test_check_warns_of_a_chain_out_of_order(tmp_path):
    inter, leaf, key = _three_levels(tmp_path)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, leaf))
    (tmp_path / "twice.pem").write_bytes(pem)
    certs.write_pair(tmp_path / "leaf.pem", tmp_path / "leaf.key", leaf, key)
    errors, warnings = certs.check_pair(tmp_path / "twice.pem", tmp_path / "leaf.key", base=tmp_path)
    assert errors == [] and warnings == [
        "twice.pem: certificate 2 ('www.test') did not issue the one before it ('www.test'): the server "
        "certificate goes first, then each issuer in turn"
    ]


def test_check_mismatched_key(pki):
    errors, warnings = certs.check_pair(pki.server[0], pki.other[1], base=pki.base)
    assert errors == ["certs/other.key: key does not match certificate certs/adc.pem"]
    assert warnings == []


def test_check_expired_certificate(pki):
    errors, _ = certs.check_pair(*pki.expired, base=pki.base)
    end = x509.load_pem_x509_certificate(pki.expired[0].read_bytes()).not_valid_after_utc
    assert errors == [f"certs/expired.pem: certificate expired on {end:%Y-%m-%d}"]


def test_check_expiring_soon_is_a_warning(pki):
    errors, warnings = certs.check_pair(*pki.expiring, base=pki.base)
    end = x509.load_pem_x509_certificate(pki.expiring[0].read_bytes()).not_valid_after_utc
    assert errors == []
    assert warnings == [f"certs/expiring.pem: certificate expires in 9 days ({end:%Y-%m-%d})"]
    # 30 days is the line
    adc_end = x509.load_pem_x509_certificate(pki.server[0].read_bytes()).not_valid_after_utc
    assert certs.check_pair(*pki.server, base=pki.base, now=adc_end - dt.timedelta(days=30, hours=1)) == ([], [])
    assert certs.check_pair(*pki.server, base=pki.base, now=adc_end - dt.timedelta(days=29, hours=23))[1] == [
        f"certs/adc.pem: certificate expires in 29 days ({adc_end:%Y-%m-%d})"
    ]
    now = end - dt.timedelta(days=1, hours=1)
    assert certs.check_pair(*pki.expiring, base=pki.base, now=now)[1] == [
        f"certs/expiring.pem: certificate expires in 1 day ({end:%Y-%m-%d})"
    ]


def test_check_not_yet_valid(pki):
    start = x509.load_pem_x509_certificate(pki.server[0].read_bytes()).not_valid_before_utc
    errors, _ = certs.check_pair(*pki.server, base=pki.base, now=start - dt.timedelta(days=1))
    assert errors == [f"certs/adc.pem: certificate not valid before {start:%Y-%m-%d}"]


def test_check_missing_files(pki):
    errors, warnings = certs.check_pair(pki.dir / "nope.pem", pki.dir / "nope.key", base=pki.base)
    assert errors == ["certs/nope.pem: no such file", "certs/nope.key: no such file"]
    assert warnings == []
    assert certs.check_ca(pki.dir / "nope-ca.pem", base=pki.base) == (["certs/nope-ca.pem: no such file"], [])


def test_check_garbage_pem(pki, tmp_path):
    (tmp_path / "certs").mkdir()
    bad_cert = tmp_path / "certs" / "bad.pem"
    bad_key = tmp_path / "certs" / "bad.key"
    bad_cert.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    bad_key.write_bytes(b"\x00\x01garbage")
    os.chmod(bad_key, 0o600)
    errors, _ = certs.check_pair(bad_cert, bad_key, base=tmp_path)
    assert errors == ["certs/bad.pem: not a PEM certificate", "certs/bad.key: not a PEM private key"]
    assert certs.check_ca(bad_cert, base=tmp_path) == (["certs/bad.pem: not a PEM certificate"], [])
    # a key where the certificate should be, and the other way round
    errors, _ = certs.check_pair(pki.server[1], pki.server[0], base=pki.base)
    assert errors == ["certs/adc.key: not a PEM certificate", "certs/adc.pem: not a PEM private key"]


def test_check_key_readable_by_others_is_a_warning(pki, tmp_path):
    (tmp_path / "certs").mkdir()
    key = tmp_path / "certs" / "adc.key"
    key.write_bytes(pki.server[1].read_bytes())
    os.chmod(key, 0o644)
    errors, warnings = certs.check_pair(pki.server[0], key, base=tmp_path)
    assert errors == []
    assert warnings == ["certs/adc.key: private key is readable by others (mode 0644; use 0600)"]


def test_check_paths_outside_base_are_shown_whole(pki, tmp_path):
    errors, _ = certs.check_pair(tmp_path / "x.pem", pki.server[1], base=pki.base)
    assert errors == [f"{tmp_path / 'x.pem'}: no such file"]


def test_check_ca_expired(pki):
    errors, warnings = certs.check_ca(pki.expired[0].with_name("ca.pem"), base=pki.base)
    assert errors == [] and warnings == []
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=4000)
    ca_end = x509.load_pem_x509_certificate(pki.ca.read_bytes()).not_valid_after_utc
    assert certs.check_ca(pki.ca, base=pki.base, now=later) == ([f"certs/ca.pem: certificate expired on {ca_end:%Y-%m-%d}"], [])


def test_key_files_are_0600(pki):
    for key in (pki.server[1], pki.other[1], pki.client[1], pki.dir / "ca.key"):
        assert mode(key) == 0o600, key


# --------------------------------------------------------------------------- command line


def test_cmd_certs_init_and_show(tmp_path, capsys):
    d = tmp_path / "certs"
    assert certs.cmd_certs_init(d, ["extra.test"], "ecdsa") == 0
    out = capsys.readouterr().out
    assert f"wrote {d / 'adc.key'}" in out and "localhost,extra.test,127.0.0.1,::1" in out
    assert certs.cmd_certs_show(d) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("FILE") and out[1].startswith("adc.pem") and out[2].startswith("ca.pem")
    assert certs.cmd_certs_init(d, [], "dsa") == 2
    assert "unknown key type 'dsa'" in capsys.readouterr().err


def test_cmd_certs_show_flags_a_certificate_not_yet_valid(tmp_path, capsys):
    ca, ca_key = certs.make_ca("staging CA")
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=3)
    cert, key = certs.issue_cert(ca, ca_key, ["next.test"], not_before=later)
    certs.write_pair(tmp_path / "next.pem", tmp_path / "next.key", cert, key)
    assert certs.cmd_certs_show(tmp_path) == 1
    (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("next.pem")]
    assert line.endswith("NOT YET VALID")


def test_cmd_certs_show_flags_expired(pki, tmp_path, capsys):
    assert certs.cmd_certs_show(pki.dir) == 1  # the store holds expired.pem
    assert certs.cmd_certs_show(tmp_path / "missing") == 1
    assert "no such directory" in capsys.readouterr().err
    assert certs.cmd_certs_show(tmp_path) == 0
    assert "no certificates" in capsys.readouterr().out


def test_check_crl(pki, tmp_path):
    """A CRL OpenSSL would not use, or one out of date, refuses every certificate of its CA: said first."""
    d = tmp_path / "certs"
    d.mkdir()
    good, soon, stale, rogue = d / "good.pem", d / "soon.pem", d / "stale.pem", d / "rogue.pem"
    write_crl(good, pki.dir, [pki.client[0]])
    write_crl(soon, pki.dir, [], next_update_days=1.5)
    write_crl(stale, pki.dir, [], next_update_days=-2)
    write_crl(rogue, pki.dir, [], ca=(pki.rogue_ca, pki.dir / "rogue-ca.key"))
    assert certs.check_crl(good, pki.ca, base=tmp_path) == ([], [])
    errors, warnings = certs.check_crl(soon, pki.ca, base=tmp_path)
    day = (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=1.5)).strftime("%Y-%m-%d")
    assert (errors, warnings) == ([], [f"certs/soon.pem: the CRL of 'adc development CA' must be renewed by {day}"
                                        " (its next update): after that every certificate it covers is refused"])
    day = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)).strftime("%Y-%m-%d")
    assert certs.check_crl(stale, pki.ca, base=tmp_path)[0] == [
        f"certs/stale.pem: the CRL of 'adc development CA' is out of date since {day}:"
        " every certificate it covers is refused until it is renewed"]
    assert certs.check_crl(rogue, pki.ca, base=tmp_path) == (
        ["certs/rogue.pem: the CRL of 'rogue CA' is not signed by a CA of client_ca: it is not used,"
         " and the certificates that CA issues are refused"],
        ["certs/rogue.pem: no CRL of 'adc development CA' (in client_ca):"
         " the client certificates it issues itself are refused"])
    assert certs.check_crl(pki.ca, pki.ca, base=tmp_path)[0] == [
        f"{pki.ca}: no PEM CRL (-----BEGIN X509 CRL-----) in the file"]
    assert certs.check_crl(d / "none.pem", base=tmp_path) == (["certs/none.pem: no such file"], [])


def test_cmd_certs_show_lists_revocation_lists(tmp_path, capsys):
    """A CRL in the store is listed with its next update, and one past it fails the command like an
    expired certificate (OpenSSL refuses what it covers)."""
    certs.init(tmp_path)
    write_crl(tmp_path / "crl.pem", tmp_path, [tmp_path / "adc.pem"], next_update_days=6.5)
    assert certs.cmd_certs_show(tmp_path) == 0
    (line,) = [x.split("  ") for x in capsys.readouterr().out.splitlines() if x.startswith("crl.pem")]
    assert [cell.strip() for cell in line if cell.strip()][1:] == [
        "CRL, 1 revoked", "-", "CRL", "adc development CA",
        (dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=6.5)).strftime("%Y-%m-%d"), "6"]
    write_crl(tmp_path / "crl.pem", tmp_path, [], next_update_days=-1)
    (tmp_path / "bad-crl.pem").write_text("-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n")
    assert certs.cmd_certs_show(tmp_path) == 1
    out = capsys.readouterr().out.splitlines()
    (line,) = [x for x in out if x.startswith("crl.pem")]
    assert line.endswith("EXPIRED")
    (line,) = [x for x in out if x.startswith("bad-crl.pem")]
    assert line.split("  ", 1)[1].strip() == "a CRL that cannot be read"
