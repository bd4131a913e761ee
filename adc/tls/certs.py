"""Certificate store tooling: a development CA, server certificates, inspection and checks.

Used by `adc certs init|show`, `adc check` and the runner's start-up; never imported by
the data path (it pulls in `cryptography`). The layout of a certificate store:

    certs/ca.pem    development CA certificate (trust this in your browser / clients)
    certs/ca.key    its private key (mode 0600)
    certs/adc.pem   server certificate followed by its chain (the CA)
    certs/adc.key   server private key (mode 0600)

Check messages are part of the user interface; they say only "what is wrong" (the caller
prefixes the configuration file and key path):

    certs/adc.pem: no such file
    certs/adc.pem: not a PEM certificate
    certs/adc.key: not a PEM private key
    certs/adc.key: key does not match certificate certs/adc.pem
    certs/adc.pem: certificate expired on 2024-01-31
    certs/adc.pem: certificate not valid before 2031-01-31
    certs/adc.pem: certificate expires in 12 days (2024-01-31)          (warning)
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import os
import re
import ssl
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from warnings import catch_warnings, simplefilter

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "adc.pem"
SERVER_KEY = "adc.key"

KEY_TYPES = ("ecdsa", "rsa")
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")
CA_DAYS = 3650
SERVER_DAYS = 397  # within the lifetime clients accept for certificates of a private CA
EXPIRY_WARNING_DAYS = 30
CRL_WARNING_DAYS = 3  # a CRL this close to its next update: renew it (CRLs are short-lived, often a week)
_CRL_PEM = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.S)
KEY_FILE_MODE = 0o600
RSA_BITS = 2048

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey


# --------------------------------------------------------------------------- generation


def new_key(key_type: str = "ecdsa") -> PrivateKey:
    """A fresh private key: ECDSA P-256 ("ecdsa", the default) or RSA-2048 ("rsa")."""
    kind = _key_type(key_type)
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    return ec.generate_private_key(ec.SECP256R1())


def _key_type(key_type: str) -> str:
    k = key_type.lower().replace("-", "")
    if k in ("ecdsa", "ec", "p256", "ecdsap256"):
        return "ecdsa"
    if k in ("rsa", "rsa2048"):
        return "rsa"
    raise ValueError(f"unknown key type {key_type!r} (known: {', '.join(KEY_TYPES)})")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_ca(
    common_name: str = "adc development CA",
    *,
    key_type: str = "ecdsa",
    days: int = CA_DAYS,
    not_before: dt.datetime | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """A self-signed CA certificate allowed to sign server and client certificates."""
    key = new_key(key_type)
    start = not_before or (_now() - dt.timedelta(hours=1))
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "adc")]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue_cert(
    ca_cert: x509.Certificate,
    ca_key: PrivateKey,
    names: Sequence[str],
    *,
    key_type: str = "ecdsa",
    days: int = SERVER_DAYS,
    not_before: dt.datetime | None = None,
    client: bool = False,
    common_name: str | None = None,
) -> tuple[x509.Certificate, PrivateKey]:
    """A leaf certificate signed by the CA; `names` become SANs (DNS names or IP addresses).

    `client=True` makes a client-authentication certificate (mTLS) instead of a server one.
    `not_before` in the past with a small `days` makes an already expired certificate.
    """
    key = new_key(key_type)
    start = not_before or (_now() - dt.timedelta(hours=1))
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    cn = common_name or (names[0] if names else "adc")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_private(path: Path, data: bytes) -> None:
    """Write a private key: mode 0600 from the first byte on, replaced atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, KEY_FILE_MODE)
    try:
        os.fchmod(fd, KEY_FILE_MODE)  # umask or a pre-existing file cannot widen it
        os.write(fd, data)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_pair(
    cert_path: Path, key_path: Path, cert: x509.Certificate, key: PrivateKey, chain: Iterable[x509.Certificate] = ()
) -> None:
    """Write a certificate (followed by its chain) and its private key (mode 0600)."""
    write_private(Path(key_path), key_pem(key))
    write_public(Path(cert_path), cert_pem(cert, *chain))


def load_ca(certs_dir: Path) -> tuple[x509.Certificate, PrivateKey]:
    d = Path(certs_dir)
    cert = x509.load_pem_x509_certificate((d / CA_CERT).read_bytes())
    key = serialization.load_pem_private_key((d / CA_KEY).read_bytes(), password=None)
    return cert, key  # type: ignore[return-value]


def init(
    certs_dir: Path | str,
    names: Iterable[str] = (),
    *,
    key_type: str = "ecdsa",
    days: int = SERVER_DAYS,
    new_ca: bool = False,
    force: bool = False,
) -> list[Path]:
    """Make the development CA (unless one is there already) and a server certificate.

    The server certificate covers localhost, 127.0.0.1 and ::1 plus `names`. An existing
    CA (ca.pem + ca.key) is kept so that clients which trust it keep working; `new_ca=True`
    replaces it. A server certificate is replaced only when it is one this CA issued (a
    development certificate) or with `force`: an operator's own pair, or half a CA, is never
    overwritten silently (ValueError). Returns the files written.
    """
    d = Path(certs_dir)
    kind = _key_type(key_type)
    d.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    has_ca = [(d / n).exists() for n in (CA_CERT, CA_KEY)]
    if not force and not new_ca and any(has_ca) and not all(has_ca):
        present, missing = (CA_CERT, CA_KEY) if has_ca[0] else (CA_KEY, CA_CERT)
        raise ValueError(f"{d / present} is there without {d / missing}: not replaced (--force replaces both)")
    if not new_ca and all(has_ca):
        ca_cert, ca_key = load_ca(d)
    else:
        if not force and not new_ca and ((d / SERVER_CERT).exists() or (d / SERVER_KEY).exists()):
            # no CA here: whatever the server files are, a new CA did not issue them
            raise ValueError(f"{d / SERVER_CERT} and {d / SERVER_KEY} are there without a development CA: "
                             "not replaced (--force replaces them)")
        ca_cert, ca_key = make_ca(key_type=kind)
        write_pair(d / CA_CERT, d / CA_KEY, ca_cert, ca_key)
        written += [d / CA_CERT, d / CA_KEY]
    all_names = list(dict.fromkeys([*DEFAULT_NAMES, *(n.strip() for n in names if n.strip())]))
    if not force and not new_ca:
        _check_replaceable(d, ca_cert)
    cert, key = issue_cert(ca_cert, ca_key, all_names, key_type=kind, days=days)
    write_pair(d / SERVER_CERT, d / SERVER_KEY, cert, key, chain=(ca_cert,))
    written += [d / SERVER_CERT, d / SERVER_KEY]
    return written


def _check_replaceable(d: Path, ca_cert: x509.Certificate) -> None:
    """ValueError unless the server pair is absent or a development certificate of `ca_cert`."""
    cert_file, key_file = d / SERVER_CERT, d / SERVER_KEY
    if not cert_file.exists():
        if key_file.exists():
            raise ValueError(f"{key_file} is there without {cert_file}: not replaced (--force replaces it)")
        return
    try:
        cert = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature, UnsupportedAlgorithm):
        raise ValueError(
            f"{cert_file} is not a development certificate of {d / CA_CERT}: not replaced "
            "(--force replaces it and its key)"
        ) from None


def ensure_dev_certs(certs_dir: Path | str) -> bool:
    """Create the development CA and server certificate if any of their files is missing.

    Returns True when files were created. Existing files are never overwritten.
    """
    d = Path(certs_dir)
    if all((d / n).is_file() for n in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY)):
        return False
    if (d / SERVER_CERT).exists() or (d / SERVER_KEY).exists():
        # half a server pair: leave the operator's file alone, only fill in the CA if missing
        if (d / CA_CERT).exists() or (d / CA_KEY).exists():
            return False
        ca_cert, ca_key = make_ca()
        write_pair(d / CA_CERT, d / CA_KEY, ca_cert, ca_key)
        return True
    init(d, new_ca=not ((d / CA_CERT).is_file() and (d / CA_KEY).is_file()))
    return True


# --------------------------------------------------------------------------- inspection


@dataclass(frozen=True, slots=True)
class CertInfo:
    """One certificate file of the store, as `adc certs show` lists it."""

    file: str
    subject: str
    sans: tuple[str, ...]
    key_type: str
    issuer: str
    not_after: dt.datetime
    days_left: int
    chain: int  # certificates in the file after the first
    error: str | None = None
    not_yet_valid: bool = False  # its validity starts later (staged, or a clock behind)


def _key_desc(pub: object) -> str:
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return {"secp256r1": "ECDSA P-256", "secp384r1": "ECDSA P-384", "secp521r1": "ECDSA P-521"}.get(
            pub.curve.name, f"ECDSA {pub.curve.name}"
        )
    if isinstance(pub, rsa.RSAPublicKey):
        return f"RSA-{pub.key_size}"
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "Ed25519"
    if isinstance(pub, ed448.Ed448PublicKey):
        return "Ed448"
    return type(pub).__name__


def _name(n: x509.Name) -> str:
    cns = n.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else n.rfc4514_string()


def cert_names(cert: x509.Certificate) -> tuple[str, ...]:
    """The SANs of a certificate (DNS names and IP addresses), in order."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = [str(n) for n in ext.get_values_for_type(x509.DNSName)]
    out += [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return tuple(out)


def _days_left(cert: x509.Certificate, now: dt.datetime) -> int:
    return (cert.not_valid_after_utc - now) // dt.timedelta(days=1)


def show(certs_dir: Path | str, *, now: dt.datetime | None = None) -> list[CertInfo]:
    """Every certificate file (*.pem, *.crt) in the store, sorted by name."""
    d = Path(certs_dir)
    now = now or _now()
    rows: list[CertInfo] = []
    files = sorted(p for p in d.iterdir() if p.suffix in (".pem", ".crt") and p.is_file()) if d.is_dir() else []
    for p in files:
        data = b""
        try:
            data = p.read_bytes()
            if _CRL_PEM.search(data):
                rows.append(_crl_row(p.name, data, now))
                continue
            certs = x509.load_pem_x509_certificates(data)
        except (ValueError, OSError):
            problem = "a CRL that cannot be read" if b"X509 CRL" in data else "not a PEM certificate"
            rows.append(CertInfo(p.name, "", (), "", "", dt.datetime.min.replace(tzinfo=dt.timezone.utc), 0, 0,
                                 error=problem))
            continue
        c = certs[0]
        rows.append(
            CertInfo(
                file=p.name,
                subject=_name(c.subject),
                sans=cert_names(c),
                key_type=_key_desc(c.public_key()),
                issuer="self-signed" if c.issuer == c.subject else _name(c.issuer),
                not_after=c.not_valid_after_utc,
                days_left=_days_left(c, now),
                chain=len(certs) - 1,
                not_yet_valid=c.not_valid_before_utc > now,
            )
        )
    return rows


def _crl_row(file: str, data: bytes, now: dt.datetime) -> CertInfo:
    """A revocation list in the store: its issuer, how many it revokes, when it is out of date
    (its next update: "EXPIRES", as OpenSSL refuses the certificates it covers from then on)."""
    crls = [x509.load_pem_x509_crl(block) for block in _CRL_PEM.findall(data)]
    crl = crls[0]
    next_update = crl.next_update_utc or dt.datetime.max.replace(tzinfo=dt.timezone.utc)
    return CertInfo(
        file=file, subject=f"CRL, {len(crl)} revoked", sans=(), key_type="CRL", issuer=_name(crl.issuer),
        not_after=next_update, days_left=(next_update - now) // dt.timedelta(days=1), chain=len(crls) - 1,
    )


def format_rows(rows: Sequence[CertInfo]) -> str:
    """A plain-text table of `show()` rows."""
    head = ("FILE", "SUBJECT", "NAMES", "KEY", "ISSUER", "EXPIRES", "DAYS LEFT")
    table: list[tuple[str, ...]] = [head]
    for r in rows:
        if r.error:
            table.append((r.file, r.error, "", "", "", "", ""))
            continue
        days = f"{r.days_left}" if r.days_left >= 0 else "EXPIRED"
        if r.not_yet_valid:
            days = "NOT YET VALID"
        issuer = r.issuer + (f" (+{r.chain} in {'file' if r.key_type == 'CRL' else 'chain'})" if r.chain else "")
        table.append(
            (r.file, r.subject, ",".join(r.sans) or "-", r.key_type, issuer, r.not_after.strftime("%Y-%m-%d"), days)
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in table)


# --------------------------------------------------------------------------- checks


def _display(p: Path | str, base: Path | None) -> str:
    p = Path(p)
    if base is not None:
        try:
            return str(p.relative_to(base))
        except ValueError:
            pass
    return str(p)


def _date(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%d")


def _read(path: Path, shown: str, errors: list[str]) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        errors.append(f"{shown}: no such file")
    except IsADirectoryError:
        errors.append(f"{shown}: is a directory")
    except PermissionError:
        errors.append(f"{shown}: permission denied")
    return None


def _load_certs(path: Path, shown: str, errors: list[str]) -> list[x509.Certificate] | None:
    data = _read(path, shown, errors)
    if data is None:
        return None
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError:
        errors.append(f"{shown}: not a PEM certificate")
        return None


def _check_validity(cert: x509.Certificate, shown: str, now: dt.datetime, errors: list[str], warnings: list[str]) -> None:
    if cert.not_valid_after_utc <= now:
        errors.append(f"{shown}: certificate expired on {_date(cert.not_valid_after_utc)}")
    elif cert.not_valid_before_utc > now:
        errors.append(f"{shown}: certificate not valid before {_date(cert.not_valid_before_utc)}")
    else:
        days = _days_left(cert, now)
        if days < EXPIRY_WARNING_DAYS:
            unit = "day" if days == 1 else "days"
            warnings.append(f"{shown}: certificate expires in {days} {unit} ({_date(cert.not_valid_after_utc)})")


def _self_signed(sources: Iterable[Path]) -> set[x509.Name]:
    found: set[x509.Name] = set()
    for source in sources:
        try:
            with catch_warnings():  # a trust store's old roots draw deprecation warnings
                simplefilter("ignore")
                bundle = x509.load_pem_x509_certificates(source.read_bytes())
        except (OSError, ValueError):
            continue
        found.update(c.subject for c in bundle if c.issuer == c.subject)
    return found


@functools.lru_cache(maxsize=1)
def _trusted_roots() -> frozenset[x509.Name]:
    """Subjects of this machine's trust store (its bundle file, or else its directory)."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile and Path(paths.cafile).is_file():
        return frozenset(_self_signed([Path(paths.cafile)]))
    if paths.capath and Path(paths.capath).is_dir():
        return frozenset(_self_signed(p for p in Path(paths.capath).iterdir() if p.is_file()))
    return frozenset()


def _roots(directory: Path) -> set[x509.Name]:
    """Subjects of the roots a chain may end below: this machine's trust store and the
    self-signed certificates beside the file (a private CA, such as the development one)."""
    beside = [p for p in directory.iterdir() if p.suffix in (".pem", ".crt") and p.is_file()] if directory.is_dir() else []
    return _self_signed(beside) | _trusted_roots()


def _check_chain(certs: Sequence[x509.Certificate], path: Path, shown: str, warnings: list[str]) -> None:
    """Chain order, and whether the chain reaches a root a client can have."""
    for i in range(len(certs) - 1):
        if certs[i].issuer != certs[i + 1].subject:
            warnings.append(
                f"{shown}: certificate {i + 2} ('{_name(certs[i + 1].subject)}') did not issue the one before it "
                f"('{_name(certs[i].subject)}'): the server certificate goes first, then each issuer in turn"
            )
            return
    last = certs[-1]
    if last.issuer != last.subject and last.issuer not in _roots(path.parent):
        warnings.append(
            f"{shown}: the chain ends at '{_name(last.subject)}', issued by '{_name(last.issuer)}', which is "
            f"neither in the file nor a root this machine trusts: clients without it will refuse the "
            f"certificate (append the intermediate certificates after the server certificate)"
        )


def _public_bytes(pub: object) -> bytes:
    return pub.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def check_pair(
    cert_path: Path | str,
    key_path: Path | str,
    *,
    base: Path | None = None,
    now: dt.datetime | None = None,
) -> tuple[list[str], list[str]]:
    """Check a certificate file and its private key: (errors, warnings).

    Paths are shown relative to `base` when they lie under it.
    """
    now = now or _now()
    errors: list[str] = []
    warnings: list[str] = []
    cert_shown, key_shown = _display(cert_path, base), _display(key_path, base)
    certs = _load_certs(Path(cert_path), cert_shown, errors)
    key = None
    try:
        data = Path(key_path).read_bytes()
    except FileNotFoundError:
        errors.append(f"{key_shown}: no such file")
    except IsADirectoryError:
        errors.append(f"{key_shown}: is a directory")
    except PermissionError:
        errors.append(f"{key_shown}: permission denied")
    else:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except TypeError:
            errors.append(f"{key_shown}: private key is encrypted (not supported)")
        except (ValueError, UnsupportedAlgorithm):
            errors.append(f"{key_shown}: not a PEM private key")
    if certs:
        if key is not None and _public_bytes(key.public_key()) != _public_bytes(certs[0].public_key()):
            errors.append(f"{key_shown}: key does not match certificate {cert_shown}")
        _check_validity(certs[0], cert_shown, now, errors, warnings)
        _check_chain(certs, Path(cert_path), cert_shown, warnings)
        for extra in certs[1:]:
            if extra.not_valid_after_utc <= now:
                errors.append(
                    f"{cert_shown}: chain certificate '{_name(extra.subject)}' expired on "
                    f"{_date(extra.not_valid_after_utc)}"
                )
    if Path(key_path).is_file():
        mode = Path(key_path).stat().st_mode & 0o777
        if mode & 0o077:
            warnings.append(f"{key_shown}: private key is readable by others (mode {mode:04o}; use 0600)")
    return errors, warnings


def check_ca(path: Path | str, *, base: Path | None = None, now: dt.datetime | None = None) -> tuple[list[str], list[str]]:
    """Check a CA bundle (one or more certificates): (errors, warnings)."""
    now = now or _now()
    errors: list[str] = []
    warnings: list[str] = []
    shown = _display(path, base)
    certs = _load_certs(Path(path), shown, errors)
    if certs:
        if len(certs) == 1:
            _check_validity(certs[0], shown, now, errors, warnings)
        else:
            for c in certs:
                if c.not_valid_after_utc <= now:
                    warnings.append(f"{shown}: CA '{_name(c.subject)}' expired on {_date(c.not_valid_after_utc)}")
    return errors, warnings


def check_crl(path: Path | str, ca: Path | str | None = None, *, base: Path | None = None,
              now: dt.datetime | None = None, ca_key: str = "client_ca",
              issued: str = "client certificates") -> tuple[list[str], list[str]]:
    """Check certificate revocation lists (PEM) against the CAs they serve: (errors, warnings).

    OpenSSL refuses every certificate of a CA whose CRL is missing, unverifiable or past its
    next update, so each of those is said here, before a peer meets it. `ca_key` names the
    setting that holds the CAs, `issued` what they issue, for the messages.
    """
    now = now or _now()
    errors: list[str] = []
    warnings: list[str] = []
    shown = _display(path, base)
    data = _read(Path(path), shown, errors)
    if data is None:
        return errors, warnings
    crls = []
    for block in _CRL_PEM.findall(data):
        try:
            crls.append(x509.load_pem_x509_crl(block))
        except ValueError:
            errors.append(f"{shown}: a CRL that cannot be read")
    if not crls and not errors:
        errors.append(f"{shown}: no PEM CRL (-----BEGIN X509 CRL-----) in the file")
    cas = (_load_certs(Path(ca), _display(ca, base), []) or []) if ca is not None else []
    for crl in crls:
        issuer = _name(crl.issuer)
        signers = [c for c in cas if c.subject == crl.issuer]
        if cas and not any(crl.is_signature_valid(c.public_key()) for c in signers):  # type: ignore[arg-type]
            errors.append(f"{shown}: the CRL of '{issuer}' is not signed by a CA of {ca_key}: it is not used,"
                          " and the certificates that CA issues are refused")
        next_update = crl.next_update_utc
        if next_update is None:
            continue
        if next_update <= now:
            errors.append(f"{shown}: the CRL of '{issuer}' is out of date since {_date(next_update)}:"
                          " every certificate it covers is refused until it is renewed")
        elif next_update - now <= dt.timedelta(days=CRL_WARNING_DAYS):
            warnings.append(f"{shown}: the CRL of '{issuer}' must be renewed by {_date(next_update)}"
                            " (its next update): after that every certificate it covers is refused")
    covered = {crl.issuer for crl in crls}
    for c in cas:
        if c.subject not in covered:
            warnings.append(f"{shown}: no CRL of '{_name(c.subject)}' (in {ca_key}):"
                            f" the {issued} it issues itself are refused")
    return errors, warnings


# --------------------------------------------------------------------------- command line


def cmd_certs_init(certs_dir: Path | str, names: Iterable[str] = (), key_type: str = "ecdsa",
                   force: bool = False) -> int:
    """`adc certs init`: make the dev CA (kept if present) and a new server certificate."""
    try:
        written = init(certs_dir, names, key_type=key_type, force=force)
    except ValueError as e:
        print(f"adc certs init: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"adc certs init: {e.filename or certs_dir}: {e.strerror}", file=sys.stderr)
        return 1
    for p in written:
        print(f"wrote {p}")
    print(format_rows([r for r in show(certs_dir) if r.file in (CA_CERT, SERVER_CERT)]))
    print(f"trust {Path(certs_dir) / CA_CERT} in your clients to accept the server certificate")
    return 0


def cmd_certs_show(certs_dir: Path | str) -> int:
    """`adc certs show`: list the certificates of the store; exit 1 if one is unusable, expired or not yet valid."""
    d = Path(certs_dir)
    if not d.is_dir():
        print(f"adc certs show: {d}: no such directory", file=sys.stderr)
        return 1
    rows = show(d)
    if not rows:
        print(f"{d}: no certificates (make some with: adc certs init)")
        return 0
    print(format_rows(rows))
    return 1 if any(r.error or r.days_left < 0 or r.not_yet_valid for r in rows) else 0
