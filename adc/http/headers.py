"""Header helpers: token lists, hop-by-hop removal, X-Forwarded-* / Forwarded, X-SSL-Client-*.

Names and values are kept as the peer sent them (case and order); only the lines
the appliance must drop or add change.
"""

from __future__ import annotations

from collections.abc import Iterable

from adc.http.events import HeaderList, Headers

# Always hop-by-hop (RFC 9110 §7.6.1), plus the Proxy-* family checked by prefix.
HOP_BY_HOP: frozenset[bytes] = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"upgrade", b"proxy-connection"}
)


NEVER_HOP_BY_HOP: frozenset[bytes] = frozenset({b"content-length", b"transfer-encoding", b"host"})


def tokens(value: bytes) -> list[str]:
    """A comma-separated token list, lower case, empty members dropped.

    Only spaces and tabs around a member are dropped (RFC 9110 §5.6.3), as llhttp does:
    `str.strip()` would also take \x85 and \xa0 away, and "upgrade\xa0" would be an
    upgrade here and not to the parser that frames the bytes.
    """
    return [m for m in (t.strip(" \t").lower() for t in value.decode("latin-1").split(",")) if m]


_NONE: tuple[bytes, ...] = ()


def header_index(headers: Headers) -> dict[bytes, list[bytes]]:
    """Lower-case name -> values in order; kept on a parser's HeaderList after the first call."""
    index = getattr(headers, "lowered", None)
    if index is None:
        index = index_headers(headers)
    return index


def index_headers(headers: Headers) -> dict[bytes, list[bytes]]:
    """Build the index of `header_index` (and keep it on a HeaderList): parsers call this once."""
    index: dict[bytes, list[bytes]] = {}
    for name, value in headers:
        low = name.lower()
        values = index.get(low)
        if values is None:
            index[low] = [value]
        else:
            values.append(value)
    if isinstance(headers, HeaderList):
        headers.lowered = index
    return index


def get_all(headers: Headers, name: bytes) -> list[bytes] | tuple[bytes, ...]:
    """Every value of `name` (lower case) in order (do not modify the result)."""
    return header_index(headers).get(name, _NONE)


def get_one(headers: Headers, name: bytes) -> bytes | None:
    values = get_all(headers, name)
    return values[0] if values else None


def connection_tokens(headers: Headers) -> set[str]:
    out: set[str] = set()
    for value in get_all(headers, b"connection"):
        out.update(tokens(value))
    return out


def _no_proxy_fields(index: dict[bytes, list[bytes]]) -> bool:
    for name in index:
        if name.startswith(b"proxy-"):
            return False
    return True


def keeps_all(index: dict[bytes, list[bytes]]) -> bool:
    """No field of this header index is hop-by-hop (the usual message)."""
    return HOP_BY_HOP.isdisjoint(index) and _no_proxy_fields(index)


_UPGRADE_HOPS: frozenset[bytes] = frozenset({b"connection", b"upgrade"})


def plain_upgrade(index: dict[bytes, list[bytes]]) -> bool:
    """The only hop-by-hop fields are one `Connection: Upgrade` and Upgrade (the usual upgrade).

    Such a message goes on with its fields as received: removing the hop-by-hop fields
    but Upgrade and Connection, and writing Connection as `Upgrade`, would change nothing.
    """
    connection = index.get(b"connection")
    return (
        connection is not None
        and len(connection) == 1
        and connection[0] == b"Upgrade"
        and HOP_BY_HOP.intersection(index) == _UPGRADE_HOPS
        and _no_proxy_fields(index)
    )


def strip_hop_by_hop(headers: Headers, keep: Iterable[bytes] = ()) -> Headers:
    """Headers without the hop-by-hop fields (and the ones Connection names).

    `keep` lists lower-case names to keep even though they are hop-by-hop
    (Upgrade and Connection on a websocket upgrade).
    """
    if keeps_all(header_index(headers)):
        return list(headers)  # the usual case: nothing to drop
    keep_set = frozenset(keep)
    # A Connection header may name end-to-end fields; never the ones that frame or
    # route the message: dropping Content-Length or Transfer-Encoding would make the
    # real server read the body as another request (smuggling).
    named = {t.encode("latin-1") for t in connection_tokens(headers)} - NEVER_HOP_BY_HOP
    drop = (HOP_BY_HOP | named) - keep_set
    out: Headers = []
    for name, value in headers:
        low = name.lower()
        if low in drop or (low.startswith(b"proxy-") and low not in keep_set):
            continue
        out.append((name, value))
    return out


def without(headers: Headers, names: Iterable[bytes]) -> Headers:
    drop = frozenset(names)
    return [(n, v) for n, v in headers if n.lower() not in drop]


# Fields the appliance sets. A client's spelling of them with underscores (X_Forwarded_Proto)
# is dropped: CGI-style servers (WSGI, FastCGI) read it as the same field, and it would stand
# beside the appliance's own, unchecked (NGINX drops every underscored name by default).
_FORWARDING: frozenset[bytes] = frozenset({b"x-forwarded-for", b"x-forwarded-proto"})


def _underscored(name: bytes) -> list[bytes]:
    """The spellings of `name` with some of its hyphens written as underscores (at least one)."""
    parts = name.split(b"-")
    out = []
    for mask in range(1, 1 << (len(parts) - 1)):
        spelt = parts[0]
        for i, part in enumerate(parts[1:]):
            spelt += (b"_" if mask >> i & 1 else b"-") + part
        out.append(spelt)
    return out


# CGI-style servers read X_Forwarded_For as X-Forwarded-For: every such spelling of our fields
_UNDERSCORED_FORWARDING: frozenset[bytes] = frozenset(u for name in _FORWARDING for u in _underscored(name))


def has_underscored_forwarding(index: dict[bytes, list[bytes]]) -> bool:
    """A field of the (lower-case) index is one of ours spelt with underscores (one set operation)."""
    return not _UNDERSCORED_FORWARDING.isdisjoint(index)


def without_underscored_forwarding(headers: Headers) -> Headers:
    return [(n, v) for n, v in headers if n.lower() not in _UNDERSCORED_FORWARDING]


# The appliance's own fields about an https client's certificate (adc.tls.clientcert)
CLIENT_CERT_PREFIX = b"x-ssl-client-"


def _client_cert_field(lowered: bytes) -> bool:
    # with underscores too: CGI-style servers read X_SSL_Client_Verify as X-SSL-Client-Verify
    return lowered.replace(b"_", b"-").startswith(CLIENT_CERT_PREFIX)


def has_client_cert_field(index: dict[bytes, list[bytes]]) -> bool:
    """The client sent a field named like the appliance's `X-SSL-Client-*` ones."""
    for name in index:
        if _client_cert_field(name):
            return True
    return False


def without_client_cert_fields(headers: Headers) -> Headers:
    return [(n, v) for n, v in headers if not _client_cert_field(n.lower())]


def _forwarded_for(ip: str) -> str:
    return f'"[{ip}]"' if ":" in ip else ip


def add_forwarding(
    headers: Headers,
    client_ip: str,
    scheme: str,
    host: bytes | None,
    *,
    x_forwarded_for: bool,
    x_forwarded_proto: bool,
    forwarded: bool,
    received: Headers | None = None,
) -> Headers:
    """Append the client to X-Forwarded-For, set X-Forwarded-Proto, add Forwarded.

    `headers` is a fresh list (it is extended); `received` are the headers as parsed,
    whose index tells cheaply whether the fields are there already.
    """
    out = headers
    present = header_index(received if received is not None else headers)
    if x_forwarded_for:
        ip = client_ip.encode("latin-1")
        if b"x-forwarded-for" in present:
            previous = get_all(out, b"x-forwarded-for")
            out = without(out, (b"x-forwarded-for",))
            out.append((b"X-Forwarded-For", b", ".join([*previous, ip])))
        else:
            out.append((b"X-Forwarded-For", ip))
    if x_forwarded_proto:
        if b"x-forwarded-proto" in present:
            out = without(out, (b"x-forwarded-proto",))
        out.append((b"X-Forwarded-Proto", scheme.encode("latin-1")))
    if forwarded:
        element = f"for={_forwarded_for(client_ip)};proto={scheme}"
        if host:
            element += f';host="{host.decode("latin-1")}"'
        previous = get_all(out, b"forwarded")
        out = without(out, (b"forwarded",))
        out.append((b"Forwarded", b", ".join([*previous, element.encode("latin-1")])))
    return out


# A head is joined once from its pieces (start line, fields, tail), with no %-formatting
# per field: it is built for every request and every answer.
def header_lines(headers: Headers) -> bytes:
    """`name: value CRLF` for each field, in order."""
    return head_bytes(b"", headers, b"")


def head_bytes(start: bytes, headers: Headers, tail: bytes = b"\r\n") -> bytes:
    """`start` (a start line with its CRLF), `name: value CRLF` for each field, then `tail`."""
    parts = [start]
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    parts.append(tail)
    return b"".join(parts)


def serialize(start_line: bytes, headers: Headers) -> bytes:
    """Head bytes: start line, header lines, blank line."""
    return head_bytes(start_line + b"\r\n", headers)
