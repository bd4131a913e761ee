"""Playbook tests of the Layer-7 exchange: bytes in, exact actions out, no sockets."""

from __future__ import annotations

from dataclasses import replace

import pytest

from adc.http.exchange import (
    MAX_REQUESTS_PER_BATCH,
    PARSE_AHEAD_BYTES,
    CloseClient,
    Count,
    OpenServer,
    PauseClient,
    Phase,
    ReleaseServer,
    RequestDone,
    Respond,
    ResumeClient,
    SendToClient,
    SendToServer,
    StartTunnel,
)
from adc.http.parser import RequestParser
from l7_playbook import ACCEPT, PROFILE, XF, kinds, make, route, without_facts, ws_request, ws_response

GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"
GET_FWD = b"GET /x HTTP/1.1\r\nHost: a\r\n" + XF + b"\r\n"


def _connect(ex, data=GET):
    acts = ex.receive_client(data)
    assert any(isinstance(a, OpenServer) for a in acts)
    return acts, ex.server_connected()


def test_simple_get_keep_alive():
    ex = make()
    assert without_facts(ex.receive_client(GET)) == [("OpenServer", "web", False)]
    assert ex.phase is Phase.CONNECT
    assert ex.server_connected() == [SendToServer(GET_FWD)]
    assert ex.phase is Phase.READ_RESPONSE_HEAD
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel")
    assert acts == [SendToClient(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), SendToClient(b"hel")]
    acts = ex.receive_server(b"lo")
    assert without_facts(acts) == [SendToClient(b"lo"), ReleaseServer(True), ("RequestDone", 200)]
    facts = acts[-1].facts
    assert (facts.method, facts.target, facts.host, facts.pool, facts.bytes_out) == ("GET", "/x", "a", "web", 5)
    assert ex.phase is Phase.READ_HEAD


def test_hop_by_hop_removed_and_forwarding_headers():
    ex = make()
    req = (
        b"GET / HTTP/1.1\r\nhost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n"
        b"TE: trailers\r\nProxy-Authorization: x\r\nUpgrade: h2c\r\nX-Forwarded-For: 1.2.3.4\r\nX-Keep: Yes\r\n\r\n"
    )
    ex.receive_client(req)
    (send,) = ex.server_connected()
    assert send.data == (
        b"GET / HTTP/1.1\r\nhost: a\r\nX-Keep: Yes\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.1\r\nX-Forwarded-Proto: http\r\n\r\n"
    )
    acts = ex.receive_server(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Int\r\nX-Int: 1\r\nKeep-Alive: t\r\nContent-Length: 0\r\n\r\n"
    )
    assert acts[0] == SendToClient(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert acts[1] == ReleaseServer(False)  # the server said close


def test_forwarded_header_optional():
    from dataclasses import replace

    from l7_playbook import PROFILE

    ex = make(profile=replace(PROFILE, forwarded=True, x_forwarded_proto=False))
    ex.receive_client(GET)
    (send,) = ex.server_connected()
    assert send.data == b'GET /x HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 10.0.0.1\r\nForwarded: for=10.0.0.1;proto=http;host="a"\r\n\r\n'


@pytest.mark.parametrize("extra", [b"", b"Keep-Alive: 5\r\n"])  # the usual path and the rewriting one
def test_forwarding_fields_spelt_with_underscores_are_dropped(extra):
    """CGI-style servers read X_Forwarded_Proto as X-Forwarded-Proto: a client's would stand beside ours."""
    ex = make()
    _, (send,) = _connect(ex, b"GET /x HTTP/1.1\r\nHost: a\r\nX_Forwarded_Proto: https\r\n"
                              b"x-forwarded_for: 6.6.6.6\r\nX_Other: kept\r\n" + extra + b"\r\n")
    assert send.data == b"GET /x HTTP/1.1\r\nHost: a\r\nX_Other: kept\r\n" + XF + b"\r\n"


CERT_FIELDS = ((b"X-SSL-Client-Verify", b"SUCCESS"), (b"X-SSL-Client-Subject", b"CN=alice"))
CERT_LINES = b"X-SSL-Client-Verify: SUCCESS\r\nX-SSL-Client-Subject: CN=alice\r\n"


def test_client_certificate_fields_follow_the_forwarding_fields_on_every_request():
    from adc.http.exchange import Exchange
    from adc.http.routing import Router

    ex = Exchange(PROFILE, Router((), "web"), "10.0.0.1", "https", CERT_FIELDS)
    _, (send,) = _connect(ex)
    fwd = b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n"
    assert send.data == b"GET /x HTTP/1.1\r\nHost: a\r\n" + fwd + CERT_LINES + b"\r\n"
    ex.receive_server(b"HTTP/1.1 204 No Content\r\n\r\n")
    # the second request of the connection takes the slow path (a hop-by-hop field): same fields
    acts = ex.receive_client(b"GET /y HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\n\r\n")
    (send,) = [a for a in acts if isinstance(a, SendToServer)] or ex.server_connected()
    assert send.data == b"GET /y HTTP/1.1\r\nHost: a\r\n" + fwd + CERT_LINES + b"\r\n"


@pytest.mark.parametrize("forged", [
    b"X-SSL-Client-Verify: SUCCESS\r\nx-ssl-client-subject: CN=admin\r\n",
    b"X_SSL_Client_Verify: SUCCESS\r\n",  # what CGI-style servers read as X-SSL-Client-Verify
    b"X-Ssl-Client-Cert-Chain: AAAA\r\n",
])
@pytest.mark.parametrize("version", [b"1.1", b"1.0"])
def test_client_certificate_fields_sent_by_the_client_are_dropped(forged, version):
    from adc.http.exchange import Exchange
    from adc.http.routing import Router

    ex = Exchange(PROFILE, Router((), "web"), "10.0.0.1", "https", CERT_FIELDS)
    host = b"Host: a\r\n" if version == b"1.1" else b""
    _, (send,) = _connect(ex, b"GET /x HTTP/%s\r\n%s%sX-Keep: 1\r\n\r\n" % (version, host, forged))
    head = send.data
    assert head.count(b"X-SSL-Client-") == 2 and head.lower().count(b"ssl_client") == 0, head
    assert head.endswith(b"X-Keep: 1\r\n" + (b"Connection: close\r\n" if version == b"1.0" else b"")
                         + b"X-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: https\r\n" + CERT_LINES + b"\r\n")


def test_without_client_certificate_forwarding_such_fields_pass():
    ex = make()
    _, (send,) = _connect(ex, b"GET /x HTTP/1.1\r\nHost: a\r\nX-SSL-Client-Verify: SUCCESS\r\n\r\n")
    assert b"X-SSL-Client-Verify: SUCCESS\r\n" in send.data


def test_pipelined_requests_answered_in_order():
    ex = make()
    acts = ex.receive_client(GET + b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\n")
    assert without_facts(acts) == [("OpenServer", "web", False), PauseClient()]
    assert ex.server_connected() == [SendToServer(GET_FWD)]
    acts = ex.receive_server(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert without_facts(acts) == [
        SendToClient(b"HTTP/1.1 204 No Content\r\n\r\n"),
        ReleaseServer(True),
        ("RequestDone", 204),
        ("OpenServer", "web", False),
        ResumeClient(),
    ]
    assert acts[3].request.target == b"/2"
    assert ex.server_connected(reused=True)[0].data.startswith(b"GET /2 HTTP/1.1\r\n")
    acts = ex.receive_server(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n")
    assert kinds(acts) == ["SendToClient", "ReleaseServer", "RequestDone"]
    assert ex.phase is Phase.READ_HEAD


def test_head_response_with_content_length_does_not_hang():
    ex = make()
    _connect(ex, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert without_facts(acts) == [
        SendToClient(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ReleaseServer(True),
        ("RequestDone", 200),
    ]
    # The next request on the same connection works.
    _connect(ex)
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz")
    assert kinds(acts) == ["SendToClient", "SendToClient", "ReleaseServer", "RequestDone"]


def test_head_response_split_head():
    ex = make()
    _connect(ex, b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r") == []
    assert kinds(ex.receive_server(b"\n")) == ["SendToClient", "ReleaseServer", "RequestDone"]


def test_chunked_request_and_response_with_trailers():
    ex = make()
    req = b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n0\r\nT-A: 1\r\n\r\n"
    acts = ex.receive_client(req)
    assert without_facts(acts) == [("OpenServer", "web", False), PauseClient()]
    acts = ex.server_connected()
    assert acts == [
        SendToServer(b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" + XF + b"\r\n"),
        SendToServer(b"3\r\nabc\r\n"),
        SendToServer(b"0\r\nT-A: 1\r\n\r\n"),
        ResumeClient(),
    ]
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nT-B: 2\r\n\r\n")
    assert without_facts(acts) == [
        SendToClient(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
        SendToClient(b"2\r\nhi\r\n"),
        SendToClient(b"0\r\nT-B: 2\r\n\r\n"),
        ReleaseServer(True),
        ("RequestDone", 200),
    ]
    assert acts[-1].facts.bytes_in == 3


def test_head_sent_with_the_connection_is_not_sent_again():
    ex = make()
    acts = ex.receive_client(b"PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc")
    (open_server,) = [a for a in acts if isinstance(a, OpenServer)]
    # the head a driver may send with a new connection is the one the exchange would send
    assert open_server.head == b"PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n" + XF + b"\r\n"
    acts = ex.server_connected(head_sent=True)
    assert acts == [SendToServer(b"abc"), ResumeClient()]  # the body follows, the head is not repeated
    assert ex.receive_client(b"def") == [SendToServer(b"def")]
    assert ex.phase is Phase.READ_RESPONSE_HEAD
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert kinds(acts) == ["SendToClient", "ReleaseServer", "RequestDone"]


def test_content_length_body_streamed():
    ex = make()
    acts = ex.receive_client(b"PUT /f HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\n\r\nabc")
    assert kinds(acts) == ["OpenServer", "PauseClient"]
    acts = ex.server_connected()
    assert acts[1:] == [SendToServer(b"abc"), ResumeClient()]
    assert ex.phase is Phase.FORWARD_REQUEST
    assert ex.receive_client(b"def") == [SendToServer(b"def")]
    assert ex.phase is Phase.READ_RESPONSE_HEAD


def test_expect_100_continue():
    ex = make()
    ex.receive_client(b"PUT /f HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    acts = ex.server_connected()
    assert b"Expect: 100-continue" in acts[0].data
    assert ex.receive_server(b"HTTP/1.1 100 Continue\r\n\r\n") == [SendToClient(b"HTTP/1.1 100 Continue\r\n\r\n")]
    assert ex.receive_client(b"ok") == [SendToServer(b"ok")]
    acts = ex.receive_server(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert kinds(acts) == ["SendToClient", "ReleaseServer", "RequestDone"]
    assert acts[-1].facts.status == 201


@pytest.mark.parametrize("failure", ["closed", "garbage"])
def test_real_server_failing_after_an_interim_response_is_still_a_502(failure):
    """A 1xx is no answer (RFC 9110 15.2): when the server fails after it, the final answer is a 502."""
    ex = make()
    _connect(ex)
    assert ex.receive_server(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n") == [
        SendToClient(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n")
    ]
    acts = ex.server_closed() if failure == "closed" else ex.receive_server(b"NOT HTTP\r\n\r\n")
    answers = [a for a in acts if isinstance(a, Respond)]
    assert [a.status for a in answers] == [502] and answers[0].data.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")


def test_te_on_204_stripped_and_counted():
    ex = make()
    _connect(ex)
    acts = ex.receive_server(b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n")
    assert without_facts(acts) == [
        Count("response_framing_violation",
              "Transfer-Encoding on a 204 response: not passed on; the connection is not reused"),
        SendToClient(b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n"),
        ReleaseServer(False),
        ("RequestDone", 204),
    ]


@pytest.mark.parametrize("length, counted", [(b"5", True), (b"0", False)])
def test_content_length_on_204_is_not_forwarded(length, counted):
    ex = make()
    _connect(ex)
    acts = ex.receive_server(b"HTTP/1.1 204 No Content\r\nContent-Length: " + length + b"\r\nX: y\r\n\r\n")
    # RFC 9110 §8.6; a length other than 0 also makes the connection untrustworthy
    assert without_facts(acts) == [
        *([Count("response_framing_violation",
                 "Content-Length on a 204 response: not passed on; the connection is not reused")] if counted else []),
        SendToClient(b"HTTP/1.1 204 No Content\r\nX: y\r\n\r\n"),
        ReleaseServer(not counted),
        ("RequestDone", 204),
    ]


def test_chunked_request_goes_on_with_plain_transfer_encoding_and_clean_trailers():
    ex = make()
    req = (b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , Chunked\r\n\r\n1\r\nx\r\n"
           b"0\r\nConnection: T-A\r\nT-A: 1\r\nT-B: 2\r\nKeep-Alive: 5\r\nHost: b\r\n\r\n")
    ex.receive_client(req)
    assert ex.server_connected() == [
        SendToServer(b"POST /u HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" + XF + b"\r\n"),
        SendToServer(b"1\r\nx\r\n"),
        SendToServer(b"0\r\nT-B: 2\r\n\r\n"),  # hop-by-hop and routing fields never go on in trailers
        ResumeClient(),
    ]


def test_te_on_1xx_interim_is_not_forwarded_with_framing():
    ex = make()
    _connect(ex)
    acts = ex.receive_server(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")
    assert acts == [SendToClient(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")]
    # framing fields no server may send on a 1xx do not reach the client
    acts = ex.receive_server(b"HTTP/1.1 100 Continue\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n")
    assert acts == [SendToClient(b"HTTP/1.1 100 Continue\r\nX: y\r\n\r\n")]
    acts = ex.receive_server(b"HTTP/1.1 103 Early Hints\r\nContent-Length: 0\r\n\r\n")
    assert acts == [SendToClient(b"HTTP/1.1 103 Early Hints\r\n\r\n")]
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert kinds(acts) == ["SendToClient", "SendToClient", "ReleaseServer", "RequestDone"]


@pytest.mark.parametrize("framing, violation", [
    (b"Content-Length: 3\r\n\r\nabc", "Content-Length on a 150 response"),
    (b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "Transfer-Encoding on a 150 response"),
])
def test_interim_status_with_a_body_is_502(framing, violation):
    # llhttp ends only 100, 102 and 103 at their head whatever their framing; any other 1xx
    # with a body would be read with it, and its body taken for part of the exchange
    ex = make()
    _connect(ex)
    acts = ex.receive_server(b"HTTP/1.1 150 Odd\r\n" + framing + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert kinds(acts) == ["ReleaseServer", "Respond", "RequestDone", "CloseClient"]
    assert acts[1].status == 502 and acts[1].reason == f"interim status 150 with a body ({violation})"


@pytest.mark.parametrize("framing", [b"", b"Content-Length: 0\r\n"])
def test_any_interim_status_without_a_body_is_forwarded(framing):
    # RFC 9110 §15.2: a proxy forwards 1xx responses, the ones it does not know included
    ex = make()
    _connect(ex)
    acts = ex.receive_server(
        b"HTTP/1.1 104 Upload Resumption Supported\r\nUpload-Draft-Interop-Version: 6\r\n" + framing + b"\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    assert without_facts(acts) == [
        SendToClient(b"HTTP/1.1 104 Upload Resumption Supported\r\nUpload-Draft-Interop-Version: 6\r\n\r\n"),
        SendToClient(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
        SendToClient(b"ok"),
        ReleaseServer(True),
        ("RequestDone", 200),
    ]


def test_close_delimited_response_closes_client():
    ex = make()
    _connect(ex)
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\n\r\nsome")
    assert acts == [SendToClient(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"), SendToClient(b"some")]
    acts = ex.server_closed()
    assert without_facts(acts) == [ReleaseServer(False), ("RequestDone", 200), CloseClient("connection: close")]


def test_http10_client_gets_dechunked_body_and_close():
    ex = make()
    _connect(ex, b"GET / HTTP/1.0\r\nHost: a\r\n\r\n")
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    assert without_facts(acts) == [
        SendToClient(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"),
        SendToClient(b"hi"),
        ReleaseServer(True),
        ("RequestDone", 200),
        CloseClient("connection: close"),
    ]


def test_http10_request_without_host_goes_on_as_http10_and_closes():
    ex = make()
    _, (send,) = _connect(ex, b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\nX-A: 1\r\n\r\n")
    # as HTTP/1.1 it would need a Host the client never gave
    assert send.data == b"GET /old HTTP/1.0\r\nX-A: 1\r\nConnection: close\r\n" + XF + b"\r\n"
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert without_facts(acts)[:3] == [
        SendToClient(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n"),
        SendToClient(b"ok"),
        ReleaseServer(False),  # it was asked to close
    ]


# -- websocket upgrade ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "fields, sent",
    [
        # the usual upgrade: its fields as received
        (b"Connection: Upgrade\r\n", b"Connection: Upgrade\r\n"),
        # otherwise hop-by-hop fields go, and Connection is written as Upgrade
        (b"Connection: keep-alive, Upgrade\r\nKeep-Alive: 5\r\n", b"Connection: Upgrade\r\n"),
        (b"Connection: upgrade\r\nProxy-Authorization: x\r\n", b"Connection: Upgrade\r\n"),
        (b"Connection: Upgrade, X-Secret\r\nX-Secret: 1\r\n", b"Connection: Upgrade\r\n"),
    ],
)
def test_websocket_upgrade_head_for_the_real_server(fields, sent):
    ex = make()
    ex.receive_client(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n" + fields
        + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    (send,) = ex.server_connected()
    assert send.data == (
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n" + sent
        + b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + XF + b"\r\n"
    )


@pytest.mark.parametrize(
    "fields, sent",
    [
        (b"Connection: Upgrade\r\nX-Server: 1\r\n", b"Connection: Upgrade\r\nX-Server: 1\r\n"),  # as received
        (b"Connection: Upgrade\r\nKeep-Alive: 5\r\nProxy-Agent: x\r\n", b"Connection: Upgrade\r\n"),
        (b"Connection: upgrade, X-Hop\r\nX-Hop: 1\r\n", b"Connection: upgrade, X-Hop\r\n"),
    ],
)
def test_101_head_for_the_client(fields, sent):
    ex = make()
    ex.receive_client(ws_request())
    ex.server_connected()
    start = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
    accept = b"Sec-WebSocket-Accept: " + ACCEPT + b"\r\n"
    acts = ex.receive_server(start + fields + accept + b"\r\n")
    assert acts[0] == SendToClient(start + sent + accept + b"\r\n")
    assert kinds(acts) == ["SendToClient", "RequestDone", "StartTunnel"]


def test_101_opens_tunnel_with_leftovers_of_both_sides():
    ex = make()
    acts = ex.receive_client(ws_request() + b"\x81\x02hi")
    assert without_facts(acts) == [Count("websocket_upgrade"), ("OpenServer", "web", False), PauseClient()]
    (send,) = ex.server_connected()
    assert b"Upgrade: websocket\r\nConnection: Upgrade\r\n" in send.data
    assert ex.phase is Phase.UPGRADE_PENDING
    assert ex.receive_client(b"\x81\x01!") == []
    acts = ex.receive_server(ws_response() + b"\x81\x03srv")
    assert without_facts(acts) == [
        SendToClient(ws_response()),
        ("RequestDone", 101),
        StartTunnel(b"\x81\x02hi\x81\x01!", b"\x81\x03srv"),
    ]
    assert ex.phase is Phase.TUNNEL
    assert ex.receive_client(b"more") == []


@pytest.mark.parametrize("field", [b"Content-Length: 5", b"Transfer-Encoding: chunked"])
def test_framing_fields_on_a_101_do_not_reach_the_client(field):
    ex = make()
    ex.receive_client(ws_request())
    ex.server_connected()
    response = ws_response()
    acts = ex.receive_server(response[:-2] + field + b"\r\n\r\n")
    name = field.split(b":")[0].decode()
    assert without_facts(acts) == [
        Count("response_framing_violation", f"{name} on a 101 response: not passed on"),
        SendToClient(response),
        ("RequestDone", 101),
        StartTunnel(b"", b""),
    ]


@pytest.mark.parametrize("status", [426, 200, 403])
def test_non_101_answer_keeps_http_and_next_request_is_routed(status):
    ex = make(routes=(route(path_prefix="/next", pool="other"),))
    nxt = b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n"
    acts = ex.receive_client(ws_request() + nxt)
    assert kinds(acts) == ["Count", "OpenServer", "PauseClient"]
    ex.server_connected()
    acts = ex.receive_server(b"HTTP/1.1 %d X\r\nUpgrade: websocket\r\nContent-Length: 2\r\n\r\nno" % status)
    assert without_facts(acts) == [
        SendToClient(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\n" % status),
        SendToClient(b"no"),
        ReleaseServer(True),
        ("RequestDone", status),
        ("OpenServer", "other", False),
        ResumeClient(),
    ]
    assert acts[3].facts.upgrade == "declined"
    assert acts[4].request.path == "/next"
    assert ex.phase is Phase.CONNECT


def test_101_with_bad_accept_is_502():
    ex = make()
    _connect(ex, ws_request())
    acts = ex.receive_server(ws_response(accept=b"d3Jvbmc="))
    assert kinds(acts) == ["ReleaseServer", "Respond", "RequestDone", "CloseClient"]
    assert acts[1].status == 502 and acts[1].reason == "101 with a wrong Sec-WebSocket-Accept"
    assert acts[1].data.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")
    assert ex.phase is Phase.CLOSING


def test_101_without_upgrade_request_is_502():
    ex = make()
    _connect(ex)
    acts = ex.receive_server(ws_response())
    assert acts[1].status == 502


def test_token_lists_take_only_spaces_and_tabs_away():
    from adc.http.headers import tokens

    assert tokens(b" a ,\tUpgrade\t, ,b\xa0,\x85c") == ["a", "upgrade", "b\xa0", "\x85c"]


def test_an_upgrade_field_with_a_no_break_space_is_no_upgrade():
    # "Upgrade\xa0" is not the token "upgrade" to llhttp, which frames the bytes: neither is it
    # here, so the bytes after the head stay HTTP for both, and a 101 cannot open a tunnel
    ex = make()
    request = ws_request().replace(b"Connection: Upgrade", b"Connection: Upgrade\xa0")
    acts = ex.receive_client(request)
    assert kinds(acts) == ["OpenServer"]
    (send,) = ex.server_connected()
    assert b"Upgrade" not in send.data.split(b"\r\n\r\n")[0].split(b"\r\n", 1)[1].replace(b"Sec-WebSocket", b"")
    acts = ex.receive_server(ws_response())
    assert acts[1].status == 502 and acts[1].reason == "101 without a websocket upgrade request"


def test_a_101_whose_connection_field_the_parser_reads_otherwise_is_502():
    ex = make()
    _connect(ex, ws_request())
    acts = ex.receive_server(ws_response().replace(b"Connection: Upgrade", b"Connection: Upgrade\xa0") + b"frame")
    assert acts[1].status == 502 and acts[1].reason == "101 without Connection: upgrade"


def test_no_tunnel_unless_the_parser_took_both_heads_for_an_upgrade():
    # the last guard: were the checks and llhttp ever to read an upgrade differently, what
    # llhttp parsed past a head as HTTP would be lost to the tunnel; a 502 loses nothing silently
    ex = make()
    _connect(ex, ws_request())
    ex._parser.upgrade_held = False  # as if llhttp had not stopped after the request's head
    acts = ex.receive_server(ws_response())
    assert acts[1].status == 502
    assert acts[1].reason == "101 to a request the HTTP parser did not take for an upgrade"


def test_a_response_transfer_coding_that_is_no_token_is_502():
    # "chunked\xa0": not chunked to llhttp (it reads to the close), perhaps chunked to a client
    ex = make()
    _connect(ex)
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\xa0\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert kinds(acts) == ["ReleaseServer", "Respond", "RequestDone", "CloseClient"]
    assert acts[1].status == 502
    assert acts[1].reason == "response Transfer-Encoding with a member that is not a transfer coding"
    ex = make()
    _connect(ex)
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip; q=1 , chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
    assert kinds(acts)[:2] == ["SendToClient", "SendToClient"]  # parameters are part of the grammar


def test_websocket_off_route_forwards_plain_http_and_counts():
    ex = make(routes=(route(path_prefix="/ws", websocket=False, pool="web"),))
    acts = ex.receive_client(ws_request())
    assert kinds(acts) == ["Count", "OpenServer"]
    assert acts[0] == Count("websocket_refused")
    (send,) = ex.server_connected()
    assert b"Upgrade" not in send.data and b"Connection" not in send.data
    assert b"Sec-WebSocket-Key" in send.data
    acts = ex.receive_server(ws_response())
    assert acts[1].status == 502  # a 101 to a request that did not ask for it


def test_h2c_upgrade_not_tunnelled():
    ex = make()
    acts = ex.receive_client(b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: x\r\n\r\n")
    assert kinds(acts) == ["Count", "OpenServer"]
    (send,) = ex.server_connected()
    assert send.data == GET_FWD.replace(b"/x", b"/")


def test_upgrade_request_body_is_forwarded_as_its_body():
    """The smuggling an upgrade request's body once allowed: declared with Content-Length, never
    sent, then parsed as a request of its own (and sent on the same real-server connection)."""
    inner = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    ex = make()
    acts = ex.receive_client(b"POST /up HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
                             b"HTTP2-Settings: x\r\nContent-Length: %d\r\n\r\n" % len(inner) + inner)
    assert kinds(acts) == ["Count", "OpenServer", "PauseClient"]  # the body waits for the connection
    sent = b"".join(a.data for a in ex.server_connected() if isinstance(a, SendToServer))
    head, _, body = sent.partition(b"\r\n\r\n")
    assert b"Upgrade" not in head and b"Content-Length: %d" % len(inner) in head
    assert body == inner  # the body, as the body: nothing of it is taken for a request
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert [a.facts.target for a in acts if isinstance(a, RequestDone)] == ["/up"]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nContent-Length: 0\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 8\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\nSec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\nContent-Length: 3\r\n\r\nabc",
    ],
    ids=["post", "no-key", "short-key", "version-8", "body"],
)
def test_invalid_websocket_request_is_400(request_bytes):
    acts = make().receive_client(request_bytes)
    assert kinds(acts) == ["Respond", "RequestDone", "CloseClient"]
    assert acts[0].status == 400


# -- framing attacks -------------------------------------------------------------------------
ATTACKS = {
    "cl-and-te": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-and-cl": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    "duplicate-cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "conflicting-cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "cl-list": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\nabc",
    "cl-sign": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\nabc",
    "cl-hex": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x3\r\n\r\nabc",
    "te-gzip": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "te-chunked-gzip": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te-gzip-chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te-double-chunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te-xchunked": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te-http10": b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n",
    "bare-lf": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare-cr": b"GET / HTTP/1.1\r\nHost: a\rX: y\r\n\r\n",
    "space-before-colon": b"GET / HTTP/1.1\r\nHost: a\r\nX-A : b\r\n\r\n",
    "bad-chunk-size": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "chunk-no-crlf": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX0\r\n\r\n",
    "missing-host": b"GET / HTTP/1.1\r\nX: y\r\n\r\n",
    "duplicate-host": b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    "bad-host": b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
    "bad-version": b"GET / HTTP/1.7\r\nHost: a\r\n\r\n",
    "garbage": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "fragment": b"GET /public#/../admin HTTP/1.1\r\nHost: a\r\n\r\n",
    "absolute-fragment": b"GET http://a/x#y HTTP/1.1\r\nHost: a\r\n\r\n",
    "other-scheme": b"GET ftp://internal/admin HTTP/1.1\r\nHost: a\r\n\r\n",
    "asterisk-not-options": b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
}


@pytest.mark.parametrize(
    "target, path",
    [
        (b"/a/b?x=1", "/a/b"), (b"HTTP://A/x?y", "/x"), (b"http://a", "/"), (b"*", "*"),
        # routes see the path as a real server reads it (RFC 3986 normalisation)
        (b"/./admin/x", "/admin/x"), (b"/x/../admin/x", "/admin/x"), (b"/%61dmin/x", "/admin/x"),
        (b"//admin", "/admin"), (b"/%2e%2e/admin?q", "/admin"), (b"/../../admin/", "/admin/"), (b"/a/..", "/"),
        (b"/a%2fb/%7euser", "/a%2Fb/~user"), (b"/100%", "/100%"), (b"http://a//x/./y", "/x/y"),
    ],
)
def test_request_targets_route_on_their_path(target, path):
    method = b"OPTIONS" if target == b"*" else b"GET"
    (event, _end) = RequestParser().receive_data(method + b" " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert event.path == path and event.target == target


@pytest.mark.parametrize("data", list(ATTACKS.values()), ids=list(ATTACKS))
def test_framing_attacks_are_400_and_close(data):
    ex = make()
    acts = ex.receive_client(data)
    # Chunk errors are found after the head: the server connection asked for is dropped.
    if kinds(acts)[:1] == ["OpenServer"]:
        assert kinds(acts[:2]) == ["OpenServer", "ReleaseServer"]
        acts = acts[2:]
    assert kinds(acts) == ["Respond", "RequestDone", "CloseClient"], acts
    assert acts[0].status == 400 and acts[0].close
    assert acts[0].data.startswith(b"HTTP/1.1 400 Bad Request\r\n") and b"Connection: close\r\n" in acts[0].data
    assert ex.phase is Phase.CLOSING


def test_limits_414_431():
    from dataclasses import replace

    from l7_playbook import PROFILE

    profile = replace(PROFILE, max_request_line=100, max_header_bytes=1000, max_headers=5)
    acts = make(profile=profile).receive_client(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n")
    assert acts[0].status == 414
    acts = make(profile=profile).receive_client(b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * 2000)
    assert acts[0].status == 431
    ex = make(profile=profile)
    assert ex.receive_client(b"GET / HTTP/1.1\r\nHost: a\r\n") == []
    for _ in range(20):  # dripped in small pieces
        acts = ex.receive_client(b"X-Long: " + b"v" * 90)
        if acts:
            break
    assert acts[0].status == 431
    many = b"".join(b"X-%d: v\r\n" % i for i in range(6))
    acts = make(profile=profile).receive_client(b"GET / HTTP/1.1\r\nHost: a\r\n" + many + b"\r\n")
    assert acts[0].status == 431


# -- routes ----------------------------------------------------------------------------------
def test_connect_is_501_and_closes():
    ex = make()
    acts = ex.receive_client(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\nthe tunnel's bytes")
    (respond,) = [a for a in acts if isinstance(a, Respond)]
    assert respond.status == 501 and respond.close and b"Allow" not in respond.data
    assert acts[-1] == CloseClient("CONNECT is not supported", linger=True)  # the client may send on
    assert not any(isinstance(a, OpenServer) for a in acts)


def test_closing_lingers_only_while_the_client_may_still_be_sending():
    deny = (route(path_prefix="/admin", respond=403),)
    # a body not read to its end: the client is still sending it
    acts = make(routes=deny, pool=None).receive_client(b"POST /admin HTTP/1.1\r\nHost: a\r\nContent-Length: 9\r\n\r\nabc")
    assert acts[-1] == CloseClient("route #0(prefix=/admin)", linger=True)
    # the whole request is in, and the client asked for the close: nothing more is coming
    acts = make(routes=deny, pool=None).receive_client(b"GET /admin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
    assert acts[-1] == CloseClient("route #0(prefix=/admin)")
    # the client has half-closed: it sends nothing more either
    ex = make(routes=deny, pool=None)
    ex.receive_client(b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
    assert ex.client_eof()[-1] == CloseClient("client closed")


def test_route_respond_and_404_keep_alive():
    ex = make(routes=(route(path_prefix="/admin", respond=403),), pool=None)
    acts = ex.receive_client(b"GET /admin/x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert kinds(acts) == ["Respond", "RequestDone"]
    assert acts[0].status == 403 and not acts[0].close
    acts = ex.receive_client(b"GET /other HTTP/1.1\r\nHost: a\r\n\r\n")
    assert acts[0].status == 404 and acts[0].data.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert acts[1].facts.route == "default"


def test_answers_of_one_input_are_bounded_and_the_rest_wait_for_proceed():
    ex = make(pool=None)  # every request is answered 404 by the appliance
    burst = b"GET /n HTTP/1.1\r\nHost: a\r\n\r\n" * (MAX_REQUESTS_PER_BATCH + 8)
    acts = ex.receive_client(burst)
    assert [a.status for a in acts if isinstance(a, Respond)] == [404] * MAX_REQUESTS_PER_BATCH
    assert ex.stalled and isinstance(acts[-1], PauseClient)
    acts = ex.proceed()
    assert [a.status for a in acts if isinstance(a, Respond)] == [404] * 8
    assert not ex.stalled and isinstance(acts[-1], ResumeClient)
    assert ex.phase is Phase.READ_HEAD


def _serve_all(ex, acts, answer=b"HTTP/1.1 204 No Content\r\n\r\n"):
    """Connect and answer every request the exchange opens; return the targets served, in order."""
    served, every = [], []
    while any(isinstance(a, OpenServer) for a in acts):
        acts = ex.server_connected(reused=True) + ex.receive_server(answer)
        served += [a.facts.target for a in acts if isinstance(a, RequestDone)]
        every += acts
    return served, every


def test_pipelined_requests_are_parsed_a_slice_ahead_and_none_is_lost():
    """A client that pipelines a whole read of small requests to a real server that has not
    answered: what waits costs about the bytes it came in, not a parsed request each."""
    import tracemalloc

    burst = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(8000))  # about 256 KiB
    ex = make()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        acts = ex.receive_client(burst)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert kinds(acts) == ["OpenServer", "PauseClient"]
    # The burst itself, a slice of parsed requests, the first request's state. Parsed all at
    # once it was about 17 times its size.
    assert held < len(burst) + (192 << 10), held
    served, acts = _serve_all(ex, acts)
    assert served == ["/%d" % i for i in range(8000)]
    assert kinds(acts).count("ResumeClient") == 1 and ex.phase is Phase.READ_HEAD


def test_pipelined_requests_before_a_client_eof_are_all_answered():
    burst = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(1000))
    ex = make()
    acts = ex.receive_client(burst)
    assert ex.client_eof() == []  # the requests it sent are still answered
    served, acts = _serve_all(ex, acts)
    assert len(served) == 1000 and served[-1] == "/999"
    assert kinds(acts)[-1] == "CloseClient" and ex.phase is Phase.CLOSING


def test_a_client_eof_in_the_middle_of_a_body_still_aborts_once_all_is_parsed():
    ex = make()
    acts = ex.receive_client(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + b"x" * 50000)
    assert kinds(acts) == ["OpenServer", "PauseClient"]  # the body waits for the connection
    assert ex.client_eof() == []
    acts = ex.server_connected()
    assert sum(len(a.data) for a in acts if isinstance(a, SendToServer)) > 50000  # head and body
    assert [a.reason for a in acts if isinstance(a, CloseClient)] == ["client closed in the middle of a request"]


def test_a_large_body_in_one_read_is_forwarded_whole_in_few_pieces():
    body = bytes(range(256)) * 1024  # 256 KiB
    ex = make()
    ex.receive_client(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    ex.server_connected()
    acts = ex.receive_client(body + GET)
    sends = [a.data for a in acts if isinstance(a, SendToServer)]
    assert b"".join(sends) == body and len(sends) <= 8  # the slice grows while no head begins
    served, _ = _serve_all(ex, ex.receive_server(b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert served == ["/x"]


def test_requests_after_a_declined_upgrade_are_parsed_in_turn():
    h2c = b"GET /up HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: x\r\n\r\n"
    burst = h2c + b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(2000))
    ex = make()
    acts = ex.receive_client(burst)
    served, _ = _serve_all(ex, acts)
    assert served == ["/up"] + ["/%d" % i for i in range(2000)]


def test_pipelined_requests_the_appliance_answers_before_a_client_eof_are_all_answered():
    burst = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(1000))
    ex = make(pool=None)  # every request gets the appliance's own 404
    acts = ex.receive_client(burst)
    acts += ex.client_eof()
    for _ in range(1000):  # bounded: each proceed() takes up a batch
        if not ex.stalled or ex.phase is Phase.CLOSING:
            break
        acts += ex.proceed()
    answers = [a for a in acts if isinstance(a, Respond)]
    assert len(answers) == 1000 and not any(a.close for a in answers[:-1])
    assert kinds(acts)[-1] == "CloseClient" and ex.phase is Phase.CLOSING


@pytest.mark.parametrize("first, expected", [
    (ws_request() + b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n", ["/ws", "/after"]),
    (GET + b"GET /up HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
     b"HTTP2-Settings: x\r\n\r\nGET /after HTTP/1.1\r\nHost: a\r\n\r\n", ["/x", "/up", "/after"]),
], ids=["declined-websocket", "h2c"])
def test_requests_after_an_upgrade_request_and_a_client_eof_are_answered(first, expected):
    ex = make()
    acts = ex.receive_client(first) + ex.client_eof()
    served, acts = _serve_all(ex, acts, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert served == expected and kinds(acts)[-1] == "CloseClient"


def test_requests_after_a_large_body_are_parsed_a_slice_ahead():
    ex = make()
    body = b"x" * 70000
    ex.receive_client(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % len(body))
    ex.server_connected()
    gets = [b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(6000)]
    acts = ex.receive_client(body + b"".join(gets))
    assert b"".join(a.data for a in acts if isinstance(a, SendToServer)) == body
    parsed = len(ex._queue)  # requests parsed ahead: about a slice's worth, not the read's
    assert parsed < 2 * PARSE_AHEAD_BYTES // len(gets[0]), parsed
    served, _ = _serve_all(ex, ex.receive_server(b"HTTP/1.1 204 No Content\r\n\r\n"))
    assert served == ["/%d" % i for i in range(6000)]


def test_a_chunked_request_after_pipelined_ones_is_not_taken_for_a_long_chunk_line():
    ex = make(profile=replace(PROFILE, max_header_bytes=1024))
    gets = b"".join(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i for i in range(40))  # over 1 KiB
    acts = ex.receive_client(gets + b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    served = []
    for _ in range(40):
        acts = ex.server_connected(reused=True) + ex.receive_server(b"HTTP/1.1 204 No Content\r\n\r\n")
        served += [a.facts.target for a in acts if isinstance(a, RequestDone)]
    assert len(served) == 40 and acts[-2].request.target == b"/c"  # (OpenServer, ResumeClient)
    acts = ex.server_connected(reused=True) + ex.receive_client(b"5\r\nhello\r\n0\r\n\r\n")
    assert not any(isinstance(a, Respond) for a in acts)
    acts = ex.receive_server(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert [a.facts.target for a in acts if isinstance(a, RequestDone)] == ["/c"]


def test_route_pool_selected():
    ex = make(routes=(route(host="*.example.com", methods=["POST"], pool="api"),))
    acts = ex.receive_client(b"POST / HTTP/1.1\r\nHost: X.Example.com:8080\r\nContent-Length: 0\r\n\r\n")
    assert acts[0].pool == "api"


# -- failures ---------------------------------------------------------------------------------
def test_connect_failure_is_503():
    ex = make()
    ex.receive_client(GET)
    acts = ex.server_failed()
    assert kinds(acts) == ["Respond", "RequestDone"]
    assert acts[0].status == 503 and not acts[0].close
    assert ex.phase is Phase.READ_HEAD


def test_pipelined_requests_after_a_503_are_answered_in_turn():
    ex = make()
    ex.receive_client(GET + GET)  # the second waits behind the first
    acts = ex.server_failed()
    assert kinds(acts) == ["Respond", "RequestDone", "OpenServer", "ResumeClient"]
    assert acts[0].status == 503 and not acts[0].close
    assert ex.phase is Phase.CONNECT
    acts = ex.server_failed()
    assert kinds(acts)[:2] == ["Respond", "RequestDone"] and acts[0].status == 503
    assert ex.phase is Phase.READ_HEAD


def test_requests_pipelined_behind_a_connect_timeout_go_on():
    ex = make()
    ex.receive_client(GET + GET)
    acts = ex.server_timeout()
    assert acts[0].status == 503 and not acts[0].close
    assert kinds(acts)[-2:] == ["OpenServer", "ResumeClient"]


def test_server_timeout_is_504():
    ex = make()
    _connect(ex)
    acts = ex.server_timeout()
    assert kinds(acts) == ["ReleaseServer", "Respond", "RequestDone", "CloseClient"]
    assert acts[1].status == 504


def test_client_head_timeout_is_408_and_idle_closes():
    ex = make()
    ex.receive_client(b"GET / HT")
    assert ex.head_in_progress
    acts = ex.client_timeout()
    assert acts[0].status == 408
    ex = make()
    assert ex.client_timeout() == [CloseClient("idle keep-alive connection")]


def test_a_client_cut_off_during_the_answer_is_reset_not_closed():
    # part of a close-delimited answer has gone out (an early answer to an upload): a FIN would
    # pass it for the whole answer (RFC 9112 §6.3), a reset says it is cut short
    ex = make()
    ex.receive_client(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    ex.server_connected()
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\n\r\nfirst part;")
    assert kinds(acts) == ["SendToClient", "SendToClient"]
    acts = ex.receive_client(b"zz\r\n")  # not a chunk size
    assert acts[-1] == CloseClient(acts[-1].reason, abort=True)
    assert ReleaseServer(False) in acts
    # the same when the client stops reading and timeout_client expires mid-answer
    ex = make()
    _connect(ex)
    ex.receive_server(b"HTTP/1.1 200 OK\r\n\r\nfirst part;")
    acts = ex.client_timeout()
    assert acts[-1] == CloseClient("client timeout", abort=True)
    # before any answer, a clean close (nothing the client has could pass for an answer)
    ex = make()
    ex.receive_client(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab")
    ex.server_connected()
    acts = ex.client_eof()
    assert acts[-1] == CloseClient("client closed in the middle of a request", abort=False)


def test_reused_connection_closed_before_response_is_retried_once():
    ex = make()
    ex.receive_client(GET)
    ex.server_connected(reused=True)
    acts = ex.server_closed()
    assert without_facts(acts) == [ReleaseServer(False), Count("request_retried"), ("OpenServer", "web", True)]
    assert ex.server_connected(reused=True) == [SendToServer(GET_FWD)]
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert kinds(acts) == ["SendToClient", "ReleaseServer", "RequestDone"]
    assert acts[-1].facts.retried
    # A second close on a reused connection is retried again (a new request);
    # a close on the retried connection itself is a 502.
    ex.receive_client(GET)
    ex.server_connected(reused=True)
    assert kinds(ex.server_closed())[-1] == "OpenServer"
    ex.server_connected(reused=True)
    acts = ex.server_closed()
    assert kinds(acts) == ["ReleaseServer", "Respond", "RequestDone", "CloseClient"]
    assert acts[1].status == 502


def test_retried_empty_chunked_request_resends_its_last_chunk():
    ex = make()
    put = b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ex.receive_client(put)
    head, last, _resume = ex.server_connected(reused=True)
    assert last == SendToServer(b"0\r\n\r\n")
    acts = ex.server_closed()
    assert kinds(acts) == ["ReleaseServer", "Count", "OpenServer"]
    assert acts[-1].retry and acts[-1].head == head.data + b"0\r\n\r\n"  # the whole request, again
    assert ex.server_connected(head_sent=True) == []
    acts = ex.receive_server(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert kinds(acts) == ["SendToClient", "ReleaseServer", "RequestDone"]


def test_post_is_not_retried():
    ex = make()
    ex.receive_client(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
    ex.server_connected(reused=True)
    acts = ex.server_closed()
    assert acts[1].status == 502


def test_server_closes_mid_response_closes_client():
    ex = make()
    _connect(ex)
    ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    acts = ex.server_closed()
    assert kinds(acts) == ["ReleaseServer", "Count", "RequestDone", "CloseClient"]
    assert acts[1].name == "server_aborted" and acts[1].detail == acts[2].facts.reason != ""  # an error, logged


def test_malformed_response_is_502():
    ex = make()
    _connect(ex)
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
    assert acts[1].status == 502


def test_client_eof_while_idle_closes():
    ex = make()
    assert ex.client_eof() == [CloseClient("client closed")]


def test_client_eof_after_complete_request_closes_after_response():
    ex = make()
    _connect(ex)
    assert ex.client_eof() == []
    acts = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert acts[0].data == b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    assert kinds(acts)[-1] == "CloseClient"


def test_respond_to_head_has_no_body():
    ex = make(routes=(route(path_exact="/r", respond=503),))
    acts = ex.receive_client(b"HEAD /r HTTP/1.1\r\nHost: a\r\n\r\n")
    assert acts[0].data.endswith(b"\r\n\r\n") and b"Content-Length" in acts[0].data


def test_body_over_max_body_bytes_is_413_without_contacting_a_server():
    ex = make(profile=replace(PROFILE, max_body_bytes=10))
    actions = ex.receive_client(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    assert kinds(actions) == ["Respond", "RequestDone", "CloseClient"]
    assert actions[0].status == 413 and actions[0].close


def test_chunked_body_over_max_body_bytes_is_413_as_it_arrives():
    ex = make(profile=replace(PROFILE, max_body_bytes=10))
    actions = ex.receive_client(b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert kinds(actions) == ["OpenServer"]
    actions = ex.server_connected()
    assert kinds(actions) == ["SendToServer"]
    actions = ex.receive_client(b"8\r\n01234567\r\n8\r\n89abcdef\r\n")
    assert [a.status for a in actions if type(a).__name__ == "Respond"] == [413]
    assert kinds(actions)[-1] == "CloseClient"


def test_bytes_after_a_complete_response_make_the_server_connection_unreusable():
    ex = make()
    _connect(ex)
    actions = ex.receive_server(
        b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    )
    releases = [a for a in actions if isinstance(a, ReleaseServer)]
    assert [r.reusable for r in releases] == [False]
    assert [a.facts.status for a in actions if isinstance(a, RequestDone)] == [204]
    # counted while the connection is still the client's, so the log can name its server
    stray = Count("stray_response_bytes", "bytes after the end of a response; the connection is not reused")
    assert actions.index(stray) < actions.index(releases[0])
    assert ex.phase is Phase.READ_HEAD


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_partial_message_after_a_complete_response_makes_the_connection_unreusable(method):
    # the next "response" has begun in the same read: no request asked for it, and the rest of
    # it would be taken for the answer to the next request sent on this connection
    ex = make()
    _connect(ex, b"%s /x HTTP/1.1\r\nHost: a\r\n\r\n" % method.encode())
    body = b"" if method == "HEAD" else b"ok"
    actions = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" + body + b"HTTP/1.1 200 OK\r\nX-Junk: 1\r\n")
    releases = [a for a in actions if isinstance(a, ReleaseServer)]
    assert [r.reusable for r in releases] == [False]
    stray = Count("stray_response_bytes", "bytes after the end of a response; the connection is not reused")
    assert actions.index(stray) < actions.index(releases[0])
    assert [a.facts.status for a in actions if isinstance(a, RequestDone)] == [200]
    assert ex.phase is Phase.READ_HEAD


def test_a_response_ending_exactly_at_the_end_of_a_read_keeps_the_connection():
    ex = make()
    _connect(ex)
    actions = ex.receive_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert [a.reusable for a in actions if isinstance(a, ReleaseServer)] == [True]
    assert not any(isinstance(a, Count) for a in actions)


def test_large_chunks_are_reframed_without_copying_the_data():
    ex = make()
    _connect(ex)
    big = b"x" * (64 * 1024)
    actions = ex.receive_server(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(big) + big + b"\r\n")
    sends = [a.data for a in actions if isinstance(a, SendToClient)]
    assert b"".join(sends[1:]) == b"10000\r\n" + big + b"\r\n"
    assert any(part is big or part == big for part in sends)  # the body travels as its own buffer


@pytest.mark.parametrize("error", [None, "TLS: the real server's connection ended without close_notify"])
def test_a_close_delimited_body_ends_cleanly_only_with_a_clean_close(error):
    ex = make()
    ex.receive_client(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    ex.server_connected()
    ex.receive_server(b"HTTP/1.1 200 OK\r\n\r\nsome")
    acts = ex.server_closed(error)
    if error is None:  # the end of the body
        assert kinds(acts) == ["ReleaseServer", "RequestDone", "CloseClient"] and not acts[-1].abort
    else:  # it may have been cut: the client must not take it for the whole
        assert kinds(acts) == ["ReleaseServer", "Count", "RequestDone", "CloseClient"]
        assert acts[1].name == "server_aborted" and acts[1].detail == error  # an error, logged with the server
        assert acts[-1] == CloseClient(error, abort=True) and acts[2].facts.reason == error


def test_whose_wait_it_is_while_a_request_body_is_due():
    # a body on its way: the client's (the driver's timeout_client applies, not timeout_server)
    ex = make()
    _connect(ex, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nab")
    assert ex.awaiting_client_body
    ex.receive_client(b"cd")
    assert not ex.awaiting_client_body  # all in: now the real server's
    # Expect: 100-continue: the client may wait for the real server's 100 first
    ex = make()
    _connect(ex, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nExpect: 100-Continue\r\n\r\n")
    assert not ex.awaiting_client_body
    ex.receive_server(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert ex.awaiting_client_body  # it has its 100: the body is due
    # an answer that has begun is the real server's to finish
    ex.receive_server(b"HTTP/1.1 413 Too Large\r\nContent-Length: 10\r\n\r\n")
    assert not ex.awaiting_client_body
