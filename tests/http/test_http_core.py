"""Parser, routing, upgrade and state-table tests of the sans-IO core."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adc.http.events import Body, BodyKind, EndOfMessage, Malformed, RequestHead, ResponseHead
from adc.http.exchange import TRANSITIONS, IllegalTransition, Phase
from adc.http.parser import RequestParser, ResponseParser
from adc.http.responses import build_response
from adc.http.routing import Router, host_matches
from adc.http.upgrade import accept_key, may_tunnel, upgrade_request
from l7_playbook import make, route, ws_request, ws_response


# -- parsers -----------------------------------------------------------------------------------
def test_request_parser_upgrade_holds_bytes_and_restarts_fresh():
    p = RequestParser()
    events = p.receive_data(ws_request() + b"GET /b HTTP/1.1\r\nHo")
    assert [type(e) for e in events] == [RequestHead, EndOfMessage]
    assert p.upgrade_held
    assert p.receive_data(b"st: a\r\n\r\n") == []
    events = p.receive_data(p.restart())
    assert isinstance(events[0], RequestHead) and events[0].target == b"/b"


@pytest.mark.parametrize("split", [None, 60, 95])
@pytest.mark.parametrize(
    "framing, body",
    [(b"Content-Length: 5\r\n", b"hello"), (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n")],
    ids=["length", "chunked"],
)
def test_request_parser_reads_the_body_of_an_upgrade_request(framing, body, split):
    """httptools has llhttp skip an upgrade request's body: it must never become the next request."""
    data = (b"POST /up HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n" + framing + b"\r\n" + body
            + b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
    p = RequestParser()
    parts = [data] if split is None else [data[:split], data[split:]]
    events = [e for part in parts for e in p.receive_data(part)]
    assert [type(e) for e in events if not isinstance(e, Body)] == [RequestHead, EndOfMessage, RequestHead, EndOfMessage]
    assert b"".join(e.data for e in events if isinstance(e, Body)) == b"hello"
    assert [e.target for e in events if isinstance(e, RequestHead)] == [b"/up", b"/next"]
    assert not p.upgrade_held


def test_request_parser_take_held_for_tunnel():
    p = RequestParser()
    p.receive_data(ws_request() + b"frame1")
    p.receive_data(b"frame2")
    assert p.take_held() == b"frame1frame2"


def test_request_parser_bounds_held_bytes():
    p = RequestParser(max_held_bytes=10)
    p.receive_data(ws_request())
    assert p.receive_data(b"x" * 11) == [Malformed(400, "too much data after an upgrade request")]


def test_response_parser_head_only_with_interim_and_pipelined_bytes():
    r = ResponseParser()
    r.expect("HEAD")
    events = r.receive_data(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert [type(e) for e in events] == [ResponseHead, ResponseHead, EndOfMessage]
    assert events[1].body is BodyKind.NONE
    assert not r.in_message


def test_response_parser_101_leftover():
    r = ResponseParser()
    r.expect("GET")
    events = r.receive_data(ws_response() + b"abc")
    assert events[0].status == 101 and r.leftover == b"abc"
    r.receive_data(b"def")
    assert r.leftover == b"abcdef"


def test_response_parser_close_delimited_and_truncated():
    r = ResponseParser()
    r.expect("GET")
    events = r.receive_data(b"HTTP/1.1 200 OK\r\n\r\nabc")
    assert events[0].body is BodyKind.CLOSE and events[1] == Body(b"abc")
    assert r.eof() == [EndOfMessage()]
    r = ResponseParser()
    r.expect("GET")
    r.receive_data(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    assert r.eof() == [Malformed(502, "real server closed in the middle of a response")]


def test_response_te_on_204_is_a_violation():
    r = ResponseParser()
    r.expect("GET")
    head = r.receive_data(b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n")[0]
    assert head.framing_violation == "Transfer-Encoding on a 204 response" and not head.keep_alive


def test_build_response():
    data = build_response(404, close=False, detail="no route")
    assert data == (
        b"HTTP/1.1 404 Not Found\r\nServer: adc\r\nCache-Control: no-store\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 24\r\n\r\n404 Not Found: no route\n"
    )
    assert b"Connection: close" in build_response(400, close=True)


# -- routing -----------------------------------------------------------------------------------
def test_host_wildcard():
    assert host_matches("*.example.com", "a.example.com")
    assert host_matches("*.Example.com", "b.a.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert not host_matches("*.example.com", "badexample.com")
    assert host_matches("API.example.com", "api.example.com")


def test_router_order_and_fallbacks():
    routes = (
        route(index=0, path_exact="/healthz", pool="health"),
        route(index=1, host="api.example.com", methods=["GET", "POST"], path_regex=r"^/v[0-9]+/", pool="api"),
        route(index=2, path_prefix="/admin", respond=403),
        route(index=3, path_prefix="/", host="*.static.test", pool="static"),
    )
    r = Router(routes, "web")
    assert r.match("x", "GET", "/healthz").pool == "health"
    assert r.match("x", "GET", "/healthz/").pool == "web"
    assert r.match("api.example.com", "POST", "/v2/users").pool == "api"
    assert r.match("api.example.com", "DELETE", "/v2/users").pool == "web"
    assert r.match("api.example.com", "GET", "/x/v2/").pool == "web"
    m = r.match("x", "GET", "/admin/users")
    assert (m.pool, m.respond, m.describe()) == (None, 403, "#2(prefix=/admin)")
    assert r.match("img.static.test", "GET", "/a.png").pool == "static"
    assert Router(routes, None).match("x", "GET", "/nothing").respond == 404


def test_path_without_query_is_matched():
    ex = make(routes=(route(path_exact="/q", pool="q"),))
    acts = ex.receive_client(b"GET /q?x=/other HTTP/1.1\r\nHost: a\r\n\r\n")
    assert acts[0].pool == "q"


# -- upgrade -----------------------------------------------------------------------------------
def test_accept_key_rfc_example():
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def _heads(response: bytes):
    p = RequestParser()
    req = p.receive_data(ws_request())[0]
    r = ResponseParser()
    r.expect("GET")
    return req, r.receive_data(response)[0]


def test_may_tunnel_checks():
    req, resp = _heads(ws_response())
    assert may_tunnel(req, resp, websocket_allowed=True, request_complete=True) == (True, None)
    assert may_tunnel(req, resp, websocket_allowed=False, request_complete=True)[0] is False
    assert may_tunnel(req, resp, websocket_allowed=True, request_complete=False) == (
        False, "101 before the request was complete")
    _, bad = _heads(ws_response().replace(b"Upgrade: websocket", b"Upgrade: h2c"))
    assert may_tunnel(req, bad, websocket_allowed=True, request_complete=True)[1] == "101 without Upgrade: websocket"
    _, bad = _heads(ws_response().replace(b"Connection: Upgrade", b"Connection: keep-alive"))
    assert may_tunnel(req, bad, websocket_allowed=True, request_complete=True)[1] == "101 without Connection: upgrade"
    _, other = _heads(b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n")
    assert may_tunnel(req, other, websocket_allowed=True, request_complete=True) == (False, None)

    # what the exchange already knows about the request is taken as given
    assert may_tunnel(req, resp, websocket_allowed=True, request_complete=True, offered="websocket") == (True, None)
    assert may_tunnel(req, resp, websocket_allowed=True, request_complete=True, offered="other") == (
        False, "101 without a websocket upgrade request")


@pytest.mark.parametrize(
    "fields, offered",
    [
        (b"Connection: Upgrade\r\nUpgrade: websocket\r\n", "websocket"),
        (b"Connection: keep-alive, UPGRADE\r\nUpgrade: h2c, WebSocket/13\r\n", "websocket"),
        (b"Connection: upgrade\r\nUpgrade: h2c\r\n", "other"),
        (b"Connection: keep-alive\r\nUpgrade: websocket\r\n", None),  # Connection must name it
        (b"Connection: upgrade\r\n", None),  # nothing offered
        (b"", None),
    ],
)
def test_upgrade_request_kinds(fields, offered):
    head = RequestParser().receive_data(b"GET / HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n")[0]
    assert upgrade_request(head) == offered


# -- the state table ---------------------------------------------------------------------------
ILLEGAL = [(a, b) for a in Phase for b in Phase if b not in TRANSITIONS[a]]


@pytest.mark.parametrize("start,target", ILLEGAL, ids=[f"{a.name}->{b.name}" for a, b in ILLEGAL])
def test_illegal_transitions_raise(start, target):
    ex = make()
    ex.phase = start
    with pytest.raises(IllegalTransition):
        ex._enter(target)


def test_table_shape():
    assert set(TRANSITIONS) == set(Phase)
    assert [p for p, nxt in TRANSITIONS.items() if Phase.TUNNEL in nxt] == [Phase.UPGRADE_PENDING]
    assert TRANSITIONS[Phase.TUNNEL] == frozenset() and TRANSITIONS[Phase.CLOSING] == frozenset()


def test_events_in_wrong_phase_are_loud():
    ex = make()
    with pytest.raises(AssertionError):
        ex.server_connected()
    with pytest.raises(AssertionError):
        ex.receive_server(b"HTTP/1.1 200 OK\r\n\r\n")


# -- any chunking gives the same actions ---------------------------------------------------------
CLIENT = (
    b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nT: 1\r\n\r\n"
    b"HEAD /b HTTP/1.1\r\nHost: a\r\n\r\n"
    + ws_request()
    + b"tunnel-bytes"
)
SERVER = [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
    ws_response() + b"from-server",
]


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:]) if b > a]


def _run(client_parts: list[bytes], server_parts: list[list[bytes]]) -> tuple[list, list, tuple]:
    """Drive the exchange; return (requests seen by the server, responses seen by the client, tunnel bytes)."""
    from adc.http.exchange import OpenServer, SendToClient, SendToServer, StartTunnel

    ex = make()
    to_server, to_client = [], []
    tunnel: list = []
    pending = list(server_parts)

    def run(actions):
        for a in actions:
            if isinstance(a, SendToServer):
                to_server.append(a.data)
            elif isinstance(a, SendToClient):
                to_client.append(a.data)
            elif isinstance(a, StartTunnel):
                tunnel.extend([a.client_leftover, a.server_leftover])
            elif isinstance(a, OpenServer):
                run(ex.server_connected())
                serve()

    def serve():
        while ex.phase.name in ("READ_RESPONSE_HEAD", "UPGRADE_PENDING") and pending:
            parts = pending.pop(0)
            for i, spart in enumerate(parts):
                if tunnel:  # after the switch these bytes belong to the relay
                    tunnel[1] += b"".join(parts[i:])
                    break
                run(ex.receive_server(spart))

    for i, part in enumerate(client_parts):
        if tunnel:
            tunnel[0] += b"".join(client_parts[i:])
            break
        run(ex.receive_client(part))
        serve()
    assert tunnel
    return _messages(RequestParser(), b"".join(to_server), None), _messages(
        ResponseParser(), b"".join(to_client), ["POST", "HEAD", "GET"]), tuple(tunnel)


def _messages(parser, data: bytes, methods: list[str] | None) -> list:
    """Messages as (head fields, whole body, trailers): independent of chunk boundaries."""
    out: list = []
    if methods is not None:  # split on the heads: a HEAD answer has no body to delimit it
        events = []
        for chunk, method in zip(_split_responses(data), methods):
            r = ResponseParser()
            r.expect(method)
            events += r.receive_data(chunk)
    else:
        events = parser.receive_data(data)
    for e in events:
        if isinstance(e, (RequestHead, ResponseHead)):
            out.append([getattr(e, "target", None) or getattr(e, "status", None), e.headers, b"", None])
        elif isinstance(e, Body):
            out[-1][2] += e.data
        elif isinstance(e, EndOfMessage):
            out[-1][3] = e.trailers
    return out


def _split_responses(data: bytes) -> list[bytes]:
    starts = [i for i in range(len(data)) if data.startswith(b"HTTP/1.1 ", i)]
    return [data[a:b] for a, b in zip(starts, starts[1:] + [len(data)])]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    st.lists(st.lists(st.integers(min_value=0, max_value=10_000), max_size=6), min_size=3, max_size=3),
)
def test_any_chunking_gives_same_messages(client_cuts, server_cuts):
    reference = _run([CLIENT], [[s] for s in SERVER])
    assert len(reference[0]) == 3 and len(reference[1]) == 3
    assert reference[0][0][2] == b"hello" and reference[1][0][2] == b"abc"
    assert reference[2] == (b"tunnel-bytes", b"from-server")
    parts = _split(CLIENT, client_cuts)
    servers = [_split(s, c) for s, c in zip(SERVER, server_cuts)]
    assert _run(parts, servers) == reference


def test_strip_hop_by_hop_fast_path_and_proxy_fields():
    from adc.http.events import HeaderList
    from adc.http.headers import get_all, strip_hop_by_hop

    plain = HeaderList([(b"Host", b"a"), (b"Accept", b"*/*")])
    assert strip_hop_by_hop(plain) == [(b"Host", b"a"), (b"Accept", b"*/*")]
    assert get_all(plain, b"host") == [b"a"]
    proxied = HeaderList([(b"Host", b"a"), (b"Proxy-Authorization", b"x"), (b"X-Proxy-Id", b"1")])
    assert strip_hop_by_hop(proxied) == [(b"Host", b"a"), (b"X-Proxy-Id", b"1")]
    named = HeaderList([(b"Connection", b"close, X-Secret"), (b"x-secret", b"s"), (b"Keep", b"1")])
    assert strip_hop_by_hop(named) == [(b"Keep", b"1")]


def test_connection_cannot_remove_framing_or_host():
    from adc.http.events import HeaderList
    from adc.http.headers import strip_hop_by_hop

    smuggle = HeaderList([
        (b"Host", b"a"), (b"Connection", b"keep-alive, content-length, transfer-encoding, host"),
        (b"Content-Length", b"32"),
    ])
    assert strip_hop_by_hop(smuggle) == [(b"Host", b"a"), (b"Content-Length", b"32")]


def test_absolute_form_target_must_match_host():
    from adc.http.events import Malformed, RequestHead
    from adc.http.parser import RequestParser

    ok = RequestParser().receive_data(b"GET http://Good.example:80/x?y HTTP/1.1\r\nHost: good.example\r\n\r\n")
    assert isinstance(ok[0], RequestHead) and ok[0].path == "/x" and ok[0].host == "good.example"
    bad = RequestParser().receive_data(b"GET http://admin.example/ HTTP/1.1\r\nHost: public.example\r\n\r\n")
    assert isinstance(bad[0], Malformed) and bad[0].status == 400


@pytest.mark.parametrize("target, host, ok", [
    (b"http://a:81/", b"a", False),  # the real server would serve port 81's site
    (b"http://a/", b"a:81", False),
    (b"https://a/", b"a:443", True),  # a default port, written or not, is the same authority
    (b"http://a:80/", b"a", True),
    (b"http://[::1]:8080/", b"[::1]:8080", True),
    (b"http://u@a/", b"a", False),  # userinfo (RFC 9110 §4.2.4)
    (b"http://u:p@a/", b"a", False),
])
def test_absolute_form_authority_is_compared_with_its_port(target, host, ok):
    events = RequestParser().receive_data(b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert isinstance(events[0], RequestHead) if ok else events[0].status == 400


@pytest.mark.parametrize("data, status", [
    (b"X-CUSTOM / HTTP/1.1\r\nHost: a\r\n\r\n", 501),  # a method token the parser has no entry for
    (b"\r\nFOO / HTTP/1.1\r\nHost: a\r\n\r\n", 501),
    (b"get / HTTP/1.1\r\nHost: a\r\n\r\n", 501),  # methods are case-sensitive: an unknown one
    (b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),  # not a token
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),  # HTTP/2's preface
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\nG@T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
])
def test_unknown_methods_and_http2_are_not_implemented(data, status):
    events = RequestParser().receive_data(data)
    assert isinstance(events[-1], Malformed) and events[-1].status == status


@pytest.mark.parametrize("head, reason", [
    (b"HTTP/2.0 200 OK\r\n", "response version HTTP/2.0"),
    (b"HTTP/0.9 200 OK\r\n", "response version HTTP/0.9"),
    (b"HTTP/1.1 600 Odd\r\n", "invalid response status 600"),
    (b"HTTP/1.1 200 O\x01K\r\n", "control character in the response's reason phrase"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n", "response with chunked applied more than once"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
     "response with chunked applied more than once"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked,\r\n", "response Transfer-Encoding with an empty list member"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, ,chunked\r\n",
     "response Transfer-Encoding with an empty list member"),
])
def test_responses_a_client_could_read_otherwise_are_refused(head, reason):
    r = ResponseParser()
    r.expect("GET")
    assert r.receive_data(head + b"\r\n5\r\nhello\r\n0\r\n\r\n") == [Malformed(502, reason)]


@pytest.mark.parametrize("te, kind", [(b"gzip, chunked", BodyKind.CHUNKED), (b"chunked, gzip", BodyKind.CLOSE)])
def test_response_transfer_codings_still_accepted(te, kind):
    r = ResponseParser()
    r.expect("GET")
    assert r.receive_data(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: " + te + b"\r\n\r\n")[0].body is kind


def test_every_underscored_spelling_of_the_forwarding_fields_is_caught():
    """Each hyphen of X-Forwarded-For/-Proto may be an underscore; names without one, or other names, pass."""
    import itertools

    from adc.http.headers import has_underscored_forwarding

    for name in (b"x-forwarded-for", b"x-forwarded-proto"):
        parts = name.split(b"-")
        for seps in itertools.product((b"-", b"_"), repeat=len(parts) - 1):
            spelt = parts[0] + b"".join(s + p for s, p in zip(seps, parts[1:]))
            assert has_underscored_forwarding({b"host": [b"a"], spelt: [b"1"]}) == (b"_" in spelt), spelt
    assert not has_underscored_forwarding({b"x_other": [b"1"], b"x_forwarded_host": [b"a"], b"forwarded": [b"x"]})


CHUNKED_POST = b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_200 = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


def _feed_endless(parser, start: bytes, filler: bytes = b"a" * 4096, rounds: int = 64) -> list:
    """Feed `start`, then `filler` up to `rounds` times (256 KiB), stopping at the first malformed event."""
    events = parser.receive_data(start)
    for _ in range(rounds):
        events += parser.receive_data(filler)
        if any(isinstance(e, Malformed) for e in events):
            break
    return events


@pytest.mark.parametrize("after_head", [b"1;", b"1;ext=", b"5\r\nhello\r\n0\r\nX-Trailer: "],
                         ids=["extension-name", "extension-value", "trailer"])
def test_an_endless_chunk_line_or_trailer_is_refused(after_head):
    """llhttp reads chunk extensions without reporting them and httptools gathers a trailer until its
    line ends: a peer sending either forever is refused once max_header_bytes passed without progress."""
    events = _feed_endless(RequestParser(max_header_bytes=32 * 1024), CHUNKED_POST + after_head)
    assert events[-1] == Malformed(400, "chunk extension or trailer too long")
    events = _feed_endless(ResponseParser(max_header_bytes=32 * 1024), CHUNKED_200 + after_head)
    assert events[-1] == Malformed(502, "chunk extension or trailer too long")


def test_chunk_extensions_and_chunks_of_any_size_still_pass():
    p = RequestParser(max_header_bytes=8 * 1024)
    events = p.receive_data(CHUNKED_POST + b"4;name=" + b"v" * 4000 + b"\r\n")
    events += p.receive_data(b"data\r\n")
    big = b"x" * 65536
    for _ in range(8):  # each feed carries body: 512 KiB in all, far over max_header_bytes
        events += p.receive_data(b"10000\r\n" + big + b"\r\n")
    events += p.receive_data(b"0\r\nX-T: 1\r\n\r\n")
    assert not any(isinstance(e, Malformed) for e in events)
    assert sum(len(e.data) for e in events if isinstance(e, Body)) == 4 + 8 * 65536
    assert isinstance(events[-1], EndOfMessage) and events[-1].trailers == [(b"X-T", b"1")]
