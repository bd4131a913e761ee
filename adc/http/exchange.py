"""The Layer-7 state machine of one client connection (sans-IO).

Bytes and happenings go in (`receive_client`, `receive_server`, `server_connected`,
`client_eof`, timeouts...); a list of actions comes out, which the asyncio driver
executes in order. One request is in flight towards one real-server connection at
a time; pipelined requests wait (client reading paused) and are answered in order.

Phases (`Phase`) change only through `_enter`, which checks `TRANSITIONS` and
fails loudly on an illegal step. TUNNEL is reachable only from UPGRADE_PENDING,
and only when `may_tunnel` says so.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from mypy_extensions import mypyc_attr

from adc.config.model import Profile
from adc.http.events import Body, BodyKind, EndOfMessage, Event, Headers, Malformed, RequestHead, ResponseHead
from adc.http.headers import (
    add_forwarding,
    get_all,
    has_client_cert_field,
    has_underscored_forwarding,
    head_bytes,
    header_lines,
    keeps_all,
    plain_upgrade,
    serialize,
    strip_hop_by_hop,
    without,
    without_client_cert_fields,
    without_underscored_forwarding,
)
from adc.http.parser import RequestParser, ResponseParser, Sink
from adc.http.redirect import fill, needs_host
from adc.http.responses import build_response, reason_phrase
from adc.http.routing import RouteMatch, Router
from adc.http.upgrade import check_websocket_request, may_tunnel, upgrade_request

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
MAX_REQUESTS_PER_BATCH: Final = 32  # pipelined requests started per input before proceed()
# Client bytes are parsed this much at a time while an earlier request may hold up the ones
# parsed (a parsed request costs many times its bytes): the rest of a read stays raw until the
# queue drains. A body of known length is taken whole; a chunked one in slices that double
# while no request head begins in them, up to MAX_SLICE_BYTES.
PARSE_AHEAD_BYTES: Final = 4 * 1024
MAX_SLICE_BYTES: Final = 64 * 1024


class Phase(enum.Enum):
    __hash__ = object.__hash__  # identity: Enum's own __hash__ is Python code, run per transition
    READ_HEAD = enum.auto()  # waiting for (the rest of) a request head
    CONNECT = enum.auto()  # a real-server connection is being opened
    FORWARD_REQUEST = enum.auto()  # request body streaming to the server, no answer yet
    READ_RESPONSE_HEAD = enum.auto()  # request sent, waiting for the response head
    FORWARD_RESPONSE = enum.auto()  # response body streaming to the client
    UPGRADE_PENDING = enum.auto()  # websocket asked; client bytes held, client reading paused
    TUNNEL = enum.auto()  # handed to the relay; no HTTP code runs any more
    CLOSING = enum.auto()  # the client connection is being closed


P = Phase
TRANSITIONS: Final[Mapping[Phase, frozenset[Phase]]] = {
    P.READ_HEAD: frozenset({P.CONNECT, P.READ_HEAD, P.CLOSING}),
    P.CONNECT: frozenset({P.FORWARD_REQUEST, P.READ_RESPONSE_HEAD, P.UPGRADE_PENDING, P.READ_HEAD, P.CLOSING}),
    P.FORWARD_REQUEST: frozenset({P.READ_RESPONSE_HEAD, P.UPGRADE_PENDING, P.FORWARD_RESPONSE, P.CLOSING}),
    P.READ_RESPONSE_HEAD: frozenset({P.FORWARD_RESPONSE, P.READ_HEAD, P.CONNECT, P.CLOSING}),
    P.FORWARD_RESPONSE: frozenset({P.READ_HEAD, P.CLOSING}),
    P.UPGRADE_PENDING: frozenset({P.TUNNEL, P.FORWARD_RESPONSE, P.READ_HEAD, P.CONNECT, P.CLOSING}),
    P.TUNNEL: frozenset(),
    P.CLOSING: frozenset(),
}


@mypyc_attr(native_class=False)  # compiled classes cannot extend AssertionError
class IllegalTransition(AssertionError):
    pass


# -- actions ------------------------------------------------------------------------------
# Plain slotted dataclasses, not frozen: they are built per request on the hot path, and a
# frozen dataclass pays for object.__setattr__ on every field in __init__. Treat them as values.
# Each writes its own __init__ (init=False): the one dataclass generates is interpreted code,
# which the compiled module would call for every action.
@dataclass(slots=True, init=False)
class SendToServer:
    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(slots=True, init=False)
class SendToClient:
    data: bytes

    def __init__(self, data: bytes) -> None:
        self.data = data


@dataclass(slots=True, init=False)
class OpenServer:
    """Pick a real server of `pool` and connect (or reuse an idle connection unless `retry`).

    `head` is the request head as the real server gets it. A driver that opens a new
    connection may send it with the connection, before reporting `server_connected(
    head_sent=True)`; otherwise the exchange sends it once connected.
    """

    pool: str
    match: RouteMatch
    request: RequestHead
    head: bytes
    retry: bool = False

    def __init__(self, pool: str, match: RouteMatch, request: RequestHead, head: bytes, retry: bool = False) -> None:
        self.pool = pool
        self.match = match
        self.request = request
        self.head = head
        self.retry = retry


@dataclass(slots=True, init=False)
class Respond:
    """An answer made by the appliance: write `data`, then close the client if `close`."""

    status: int
    reason: str
    close: bool
    data: bytes

    def __init__(self, status: int, reason: str, close: bool, data: bytes) -> None:
        self.status = status
        self.reason = reason
        self.close = close
        self.data = data


@dataclass(slots=True, init=False)
class StartTunnel:
    client_leftover: bytes
    server_leftover: bytes

    def __init__(self, client_leftover: bytes, server_leftover: bytes) -> None:
        self.client_leftover = client_leftover
        self.server_leftover = server_leftover


@dataclass(slots=True, init=False)
class ReleaseServer:
    """The current real-server connection is no longer needed by this exchange."""

    reusable: bool

    def __init__(self, reusable: bool) -> None:
        self.reusable = reusable


@dataclass(slots=True, init=False)
class PauseClient:
    def __init__(self) -> None:
        pass


@dataclass(slots=True, init=False)
class ResumeClient:
    def __init__(self) -> None:
        pass


@dataclass(slots=True, init=False)
class CloseClient:
    """Close the client connection once what was written is flushed."""

    reason: str = ""
    abort: bool = False  # the answer is incomplete: end so that the client knows (no clean close)
    # the client may still be sending (a request body not read to its end, a head cut short):
    # close our direction only and discard what comes for a while (see ClientProtocol._close_client)
    linger: bool = False

    def __init__(self, reason: str = "", abort: bool = False, linger: bool = False) -> None:
        self.reason = reason
        self.abort = abort
        self.linger = linger


@dataclass(slots=True, init=False)
class Count:
    """A counter the engine increments (e.g. `websocket_refused`)."""

    name: str
    detail: str  # what happened, for the log line (a framing violation's nature)

    def __init__(self, name: str, detail: str = "") -> None:
        self.name = name
        self.detail = detail


@dataclass(slots=True, init=False)
class AccessFacts:
    """What the access log says about one request (timings are the engine's)."""

    method: str = ""
    target: str = ""
    host: str = ""
    version: str = ""
    route: str = ""
    pool: str | None = None
    status: int = 0
    bytes_in: int = 0  # request body bytes from the client
    bytes_out: int = 0  # response body bytes to the client
    reason: str | None = None  # why the appliance answered or closed itself
    upgrade: str | None = None  # "tunnel", "refused", "declined" (non-101), "ignored"
    retried: bool = False

    def __init__(self, method: str = "", target: str = "", host: str = "", version: str = "", route: str = "",
                 pool: str | None = None, status: int = 0, bytes_in: int = 0, bytes_out: int = 0,
                 reason: str | None = None, upgrade: str | None = None, retried: bool = False) -> None:
        self.method = method
        self.target = target
        self.host = host
        self.version = version
        self.route = route
        self.pool = pool
        self.status = status
        self.bytes_in = bytes_in
        self.bytes_out = bytes_out
        self.reason = reason
        self.upgrade = upgrade
        self.retried = retried


@dataclass(slots=True, init=False)
class RequestDone:
    facts: AccessFacts

    def __init__(self, facts: AccessFacts) -> None:
        self.facts = facts


Action = (
    SendToServer | SendToClient | OpenServer | Respond | StartTunnel | ReleaseServer
    | PauseClient | ResumeClient | CloseClient | Count | RequestDone
)

_LAST_CHUNK: Final = b"0\r\n"
_FRAMING_FIELDS: Final = (b"content-length", b"transfer-encoding")
# never in a trailer section: they frame or route the message (RFC 9110 §6.5.1)
_NOT_TRAILERS: Final = (b"content-length", b"transfer-encoding", b"host")


def _last_chunk(trailers: Headers) -> bytes:
    """The last chunk with the trailer fields a recipient may see: no hop-by-hop ones, none that frame."""
    if not trailers:
        return b"0\r\n\r\n"
    return serialize(_LAST_CHUNK[:-2], without(strip_hop_by_hop(trailers), _NOT_TRAILERS))
COPY_CHUNK_BELOW_BYTES: Final = 16 * 1024  # smaller chunks are framed in one small copy


def _chunk(out: list, send: type, data: bytes) -> None:
    """Re-frame one body chunk as `size CRLF data CRLF`; large data is passed on uncopied."""
    if len(data) < COPY_CHUNK_BELOW_BYTES:
        out.append(send(b"%x\r\n%s\r\n" % (len(data), data)))
    else:
        out.append(send(b"%x\r\n" % len(data)))
        out.append(send(data))
        out.append(send(b"\r\n"))


def _expects_continue(head: RequestHead) -> bool:
    """The request has `Expect: 100-continue` (RFC 9110 §10.1.1)."""
    for value in get_all(head.headers, b"expect"):
        if b"100-continue" in value.lower():
            return True
    return False


@dataclass(slots=True, init=False)
class _Request:
    head: RequestHead
    match: RouteMatch
    facts: AccessFacts
    server_head: bytes = b""
    complete: bool = False  # the whole request was read from the client
    websocket: bool = False  # a tunnel candidate
    websocket_allowed: bool = False
    offered: str | None = None  # the protocol switch asked for (see upgrade_request)
    response: ResponseHead | None = None
    response_started: bool = False  # a final response's head reached the client side
    server_byte_seen: bool = False
    close_after: bool = False
    dechunk: bool = False
    answered: bool = False  # the appliance answered; the body is discarded
    retried: bool = False
    sent_body: bool = False
    last_chunk: bytes | None = None  # a chunked body without data, as sent (a retry resends it)
    set_cookie: bytes | None = None  # persistence cookie added to the response
    one_shot: bool = False  # sent with `Connection: close`: the server connection is not reused
    continued: bool = False  # a 1xx (the real server's 100 Continue, say) has gone to the client

    def __init__(self, head: RequestHead, match: RouteMatch, facts: AccessFacts) -> None:
        self.head = head
        self.match = match
        self.facts = facts
        self.server_head = b""
        self.complete = False
        self.websocket = False
        self.websocket_allowed = False
        self.offered = None
        self.response = None
        self.response_started = False
        self.server_byte_seen = False
        self.close_after = False
        self.dechunk = False
        self.answered = False
        self.retried = False
        self.sent_body = False
        self.last_chunk = None
        self.set_cookie = None
        self.one_shot = False
        self.continued = False


class Exchange:
    """One client connection's HTTP/1.1 exchanges with real servers."""

    __slots__ = (
        "profile", "router", "client_ip", "scheme", "tls_fields", "phase", "_parser", "_rparser", "_queue",
        "_req", "_paused", "_client_eof", "_server_reused", "_out", "stalled", "_batch", "_serving",
        "_forwarding_tail", "only_empty_lines", "_unparsed",
    )

    def __init__(self, profile: Profile, router: Router, client_ip: str, scheme: str = "http",
                 tls_fields: tuple[tuple[bytes, bytes], ...] | None = None) -> None:
        self.profile = profile
        self.router = router
        self.client_ip = client_ip
        self.scheme = scheme
        # the X-SSL-Client-* fields every request gets (what the client sent under such
        # names is dropped); None: the profile does not forward client certificates
        self.tls_fields = tls_fields
        self.phase = Phase.READ_HEAD
        # The parsers report straight to the methods below; an event that cannot be
        # handled yet (a pipelined request, body bytes before the server is connected)
        # waits in `_queue` and `_pump` takes it up when it can.
        self._parser = RequestParser(
            profile.max_request_line, profile.max_header_bytes, profile.max_headers,
            sink=Sink(self._request_head, self._request_body, self._request_end, self._request_malformed),
        )
        self._rparser = ResponseParser(
            profile.max_header_bytes, profile.max_headers,
            sink=Sink(self._response_head, self._response_body, self._response_end, self._response_malformed),
        )
        self._queue: deque[Event] = deque()
        # client bytes not parsed yet: they follow requests that wait in `_queue`
        self._unparsed: memoryview | None = None
        self._batch = 0  # requests started by the current input (see MAX_REQUESTS_PER_BATCH)
        self._serving: _Request | None = None  # the request whose response is being parsed
        self._forwarding_tail: bytes | None = None  # what _server_head adds to a usual request
        self._req: _Request | None = None
        self._paused = False
        self._client_eof = False
        self._server_reused = False
        self._out: list[Action] = []
        self.stalled = False  # pipelined requests wait for proceed()
        self.only_empty_lines = False  # the last client bytes were empty lines between requests

    def release(self) -> None:
        """The client connection is gone or tunnelled: free the parsers (no HTTP code runs any more).

        The parsers refer back to this exchange through their sinks; releasing them
        breaks that cycle so reference counting frees the connection.
        """
        self._parser.release()
        self._rparser.release()
        self._serving = None
        self._queue.clear()
        self._unparsed = None

    # -- state ---------------------------------------------------------------------------------
    def _enter(self, new: Phase) -> None:
        if new not in TRANSITIONS[self.phase]:
            raise IllegalTransition(f"{self.phase.name} -> {new.name}")
        self.phase = new

    @property
    def head_in_progress(self) -> bool:
        """Part of a request head has arrived (the http-request timeout applies)."""
        return self._parser.in_head or (bool(self._queue) and self.phase is Phase.READ_HEAD)

    @property
    def awaiting_client_body(self) -> bool:
        """The request body is still on its way from the client and no answer has begun: a
        wait now is the client's (the real server waits for the body too)."""
        req = self._req
        if req is None or req.complete or req.response is not None or self.phase is Phase.CONNECT:
            return False
        # (`Expect: 100-continue`: the client may wait for the real server's 100 before its body)
        return req.sent_body or req.continued or not _expects_continue(req.head)

    # -- inputs --------------------------------------------------------------------------------
    def receive_client(self, data: bytes) -> list[Action]:
        if self.phase in (Phase.TUNNEL, Phase.CLOSING):
            return []
        parser = self._parser
        waiting = self.phase is Phase.READ_HEAD and not parser.in_head and not self._queue
        begun = parser.heads_begun
        if self._unparsed is not None:  # bytes that were on their way when the client was paused
            self._unparsed = memoryview(bytes(self._unparsed) + data)
        elif len(data) <= PARSE_AHEAD_BYTES:
            parser.feed(data)
        else:
            self._feed_slices(memoryview(data))
        # RFC 9112 2.2 has empty lines before a request ignored: they are no activity either
        # (the driver's timeout_client goes on counting), or CRLFs would hold a connection forever
        self.only_empty_lines = (
            waiting and parser.heads_begun == begun and not parser.in_head and self.phase is Phase.READ_HEAD
        )
        if self._queue or self._paused or self._client_eof or self._parser.upgrade_held:
            self._pump()
        return self._flush()

    def receive_server(self, data: bytes) -> list[Action]:
        req = self._req
        phase = self.phase
        if phase is Phase.TUNNEL or phase is Phase.CLOSING:
            return []
        if req is None or phase is Phase.CONNECT or phase is Phase.READ_HEAD:
            raise AssertionError(f"server bytes in phase {self.phase.name}")
        req.server_byte_seen = True
        self._serving = req
        rparser = self._rparser
        rparser.feed(data)
        if self._req is not req and rparser.in_message:
            # The response ended inside this read and the rest begins another message that
            # no request asked for (a whole one would have been reported, and found stray):
            # the connection is not clean and must not serve another request (RFC 9112 §9.3).
            self._stray()
        if self._queue or self._paused or self._client_eof or self._parser.upgrade_held:
            self._pump()
        return self._flush()

    def server_connected(
        self, reused: bool = False, set_cookie: bytes | None = None, head_sent: bool = False
    ) -> list[Action]:
        """The connection asked for by OpenServer is ready.

        `set_cookie` is a persistence cookie (`NAME=id; Path=/; HttpOnly`) to add to
        the response, the 101 of an upgrade included. `head_sent`: the driver sent
        `OpenServer.head` with the connection (no SendToServer for it then).
        """
        req = self._req
        if self.phase is not Phase.CONNECT or req is None:
            raise AssertionError(f"server_connected in phase {self.phase.name}")
        self._server_reused = reused
        req.set_cookie = set_cookie
        self._rparser.expect(req.head.method)
        if not head_sent:
            self._out.append(SendToServer(req.server_head))
        if req.complete:
            self._request_sent(req)
        else:
            self._enter(Phase.FORWARD_REQUEST)
        if self._queue or self._paused or self._client_eof or self._parser.upgrade_held:
            self._pump()
        return self._flush()

    def server_failed(self, reason: str = "no real server available", status: int = 503) -> list[Action]:
        """No real server could be connected (the driver already tried the others).

        503 when no server was available or reachable; 502 when one answered but
        the connection failed (e.g. its TLS certificate was refused).
        """
        if self.phase is not Phase.CONNECT:
            raise AssertionError(f"server_failed in phase {self.phase.name}")
        self._answer(status, reason, server=False)
        self._pump()  # requests pipelined behind this one are answered in turn
        return self._flush()

    def server_closed(self, error: str | None = None) -> list[Action]:
        """The real-server connection ended: EOF, or an error (`error` says which, for the log)."""
        req = self._req
        if req is None or self.phase in (Phase.TUNNEL, Phase.CLOSING, Phase.READ_HEAD, Phase.CONNECT):
            return self._flush()
        self._serving = req
        if error is not None and self._rparser.close_delimited:
            # a close-delimited body ends with its connection's clean end; a reset, or a TLS
            # connection ended without close_notify, may have cut it (RFC 9112 §9.8)
            self._rparser.close()
            self._fail_server(req, error)
            self._pump()
            return self._flush()
        self._rparser.eof()
        if self._req is req and self.phase not in (Phase.TUNNEL, Phase.CLOSING, Phase.READ_HEAD):
            if (
                not req.server_byte_seen
                and self._server_reused
                and not req.retried
                and not req.sent_body
                and (req.head.body is BodyKind.NONE or req.last_chunk is not None)
                and req.complete
                and req.head.method in IDEMPOTENT_METHODS
            ):
                req.retried = req.facts.retried = True
                self._out.append(ReleaseServer(False))
                self._out.append(Count("request_retried"))
                self._enter(Phase.CONNECT)
                assert req.match.pool is not None
                head = req.server_head if req.last_chunk is None else req.server_head + req.last_chunk
                self._out.append(OpenServer(req.match.pool, req.match, req.head, head, retry=True))
            else:
                self._fail_server(req, "real server closed the connection" if error is None else error)
        self._pump()
        return self._flush()

    def server_timeout(self) -> list[Action]:
        req = self._req
        if req is None or self.phase in (Phase.TUNNEL, Phase.CLOSING, Phase.READ_HEAD):
            return []
        if self.phase is Phase.CONNECT:
            self._answer(503, "timeout connecting to the real server", server=False)
        else:
            self._fail_server(req, "timeout waiting for the real server", status=504)
        self._pump()  # requests pipelined behind this one are taken up in turn
        return self._flush()

    def client_timeout(self) -> list[Action]:
        """timeout_http_request (head incomplete) or timeout_client (idle) expired."""
        if self.phase in (Phase.TUNNEL, Phase.CLOSING):
            return []
        if self.phase is Phase.READ_HEAD and self._req is None:
            if self.head_in_progress:
                self._drop_client_input()
                self._answer(408, "request head not received in time", server=False, close=True)
            else:
                self._enter(Phase.CLOSING)
                self._out.append(CloseClient("idle keep-alive connection"))
        else:
            self._abort("client timeout", status=408)
        return self._flush()

    def client_eof(self) -> list[Action]:
        """The client half-closed or went away."""
        if self.phase in (Phase.TUNNEL, Phase.CLOSING):
            return []
        self._client_eof = True
        if self._unparsed is None and not self._parser.upgrade_held:  # else once all is parsed
            self._parser.close()
        self._pump()  # closes the client, or aborts a request it left incomplete
        return self._flush()

    def client_lost(self, reason: str = "client closed") -> list[Action]:
        """The client connection is gone: log what was in flight, drop the server."""
        if self.phase in (Phase.TUNNEL, Phase.CLOSING):
            return []
        req = self._req
        if self.phase is not Phase.READ_HEAD:
            self._out.append(ReleaseServer(False))
        if req is not None and not req.answered:
            req.facts.reason = req.facts.reason or reason
            self._out.append(RequestDone(req.facts))
        self._req = None
        self._drop_client_input()
        self._enter(Phase.CLOSING)
        return self._flush()

    # -- client side ---------------------------------------------------------------------------
    def proceed(self) -> list[Action]:
        """Go on with pipelined requests held back by the per-batch limit (see `stalled`)."""
        if self.stalled and self.phase not in (Phase.TUNNEL, Phase.CLOSING):
            self.stalled = False
            self._pump()
        return self._flush()

    # -- request events, as the parser reports them ---------------------------------------
    # Each is handled at once when nothing waits before it, else queued for _pump.
    def _request_head(self, head: RequestHead) -> None:
        if self._queue or self._req is not None or self.phase is not Phase.READ_HEAD or not self._may_start():
            self._queue.append(head)
            return
        self._start_request(head)

    def _may_start(self) -> bool:
        """Another request may start in this input.

        Answers the appliance makes itself (routes with respond, 404) come out at once:
        bound how many one input can produce, so a client that pipelines and never
        reads costs bounded memory. The driver calls proceed() once the client has
        taken what was written.
        """
        if self.stalled:
            return False
        if self._batch >= MAX_REQUESTS_PER_BATCH:
            self.stalled = True
            return False
        self._batch += 1
        return True

    def _request_body(self, data: bytes) -> None:
        req = self._req
        if self._queue or req is None or (self.phase is Phase.CONNECT and not req.answered):
            self._queue.append(Body(data))  # body bytes wait for the server connection
            return
        self._on_request_body(req, data)

    def _request_end(self, trailers: Headers) -> None:
        req = self._req
        if (
            self._queue
            or req is None
            or (self.phase is Phase.CONNECT and not req.answered and req.head.body is BodyKind.CHUNKED)
        ):
            self._queue.append(EndOfMessage(trailers))
            return
        self._on_request_end(req, trailers)

    def _request_malformed(self, status: int, reason: str) -> None:
        req = self._req
        if self._queue or (req is not None and req.complete):
            self._queue.append(Malformed(status, reason))  # belongs to a later request: answer in order
            return
        if self.phase is Phase.TUNNEL or self.phase is Phase.CLOSING:
            return
        if req is None:
            self._answer(status, reason, server=False, close=True)
        else:
            self._abort(reason, status=status)

    def _pump(self) -> None:
        """Take up queued request events while they can be handled, then pause or resume the client.

        Callers skip it when it has nothing to do: no queued events, the client
        neither paused nor gone, no bytes held after an upgrade request.
        """
        while True:
            self._take_queued()
            if self._queue or self._unparsed is None or self.phase in (Phase.TUNNEL, Phase.CLOSING):
                break
            # the requests parsed ahead are taken up: parse on
            view = self._unparsed
            self._unparsed = None
            self._feed_slices(view)
        if self.phase in (Phase.TUNNEL, Phase.CLOSING):
            return
        if self._client_eof and not self._queue and self._unparsed is None and not self._parser.upgrade_held:
            req = self._req
            if req is None:
                if self.phase is Phase.READ_HEAD:
                    self._enter(Phase.CLOSING)
                    self._out.append(CloseClient("client closed"))
                    return
            elif not req.complete:
                self._abort("client closed in the middle of a request")
                return
        want_pause = bool(self._queue) or self._unparsed is not None or self._parser.upgrade_held
        if (
            self._parser.upgrade_held
            and not self._queue
            and not (self._req is not None and self._req.websocket)
        ):
            # Not a tunnel candidate: the bytes after it are plain HTTP.
            held = self._parser.restart()
            if held:
                self._unparsed = memoryview(held)
            elif self._client_eof:
                self._parser.close()
            self._pump()
            return
        if want_pause and not self._paused:
            self._paused = True
            self._out.append(PauseClient())
        elif not want_pause and self._paused:
            self._paused = False
            self._out.append(ResumeClient())

    def _feed_slices(self, view: memoryview) -> None:
        """Parse client bytes a slice at a time; keep the rest raw once a parsed request waits.

        After an upgrade request the parser holds what follows (bounded) until the
        answer; the rest goes to it at once. A client that has half-closed is done
        with once all it sent is parsed.
        """
        parser = self._parser
        size = PARSE_AHEAD_BYTES
        start, end = 0, len(view)
        while start < end:
            if parser.upgrade_held:
                parser.feed(view[start:])
                break
            if self._queue:
                self._unparsed = view[start:]
                return
            step = size
            req = self._req
            if req is not None and req.head.body is BodyKind.LENGTH and not req.complete:
                # the rest of a body whose length is known, and a slice after it
                step = max((req.head.content_length or 0) - req.facts.bytes_in, 0) + PARSE_AHEAD_BYTES
            begun = parser.heads_begun
            parser.feed(view[start:start + step])
            start += step
            # a chunked body: the slice grows (bounded) while no head begins in it
            size = min(size * 2, MAX_SLICE_BYTES) if parser.heads_begun == begun else PARSE_AHEAD_BYTES
        if self._client_eof and not parser.upgrade_held:
            parser.close()

    def _take_queued(self) -> None:
        """Handle queued request events in order, as far as the current request allows."""
        while self._queue and self.phase not in (Phase.TUNNEL, Phase.CLOSING):
            event = self._queue[0]
            req = self._req
            if isinstance(event, RequestHead):
                if req is not None or self.phase is not Phase.READ_HEAD or not self._may_start():
                    break
                self._queue.popleft()
                self._start_request(event)
            elif isinstance(event, Malformed):
                if req is not None and req.complete:
                    break  # belongs to the next request: answer in order
                self._queue.popleft()
                if req is None:
                    self._answer(event.status, event.reason, server=False, close=True)
                else:
                    self._abort(event.reason, status=event.status)
            else:
                if req is None:
                    raise AssertionError("body event without a request")
                if (
                    self.phase is Phase.CONNECT
                    and not req.answered
                    and (isinstance(event, Body) or req.head.body is BodyKind.CHUNKED)
                ):
                    last = self._queue[-1]
                    if isinstance(last, Malformed) and not any(isinstance(e, EndOfMessage) for e in self._queue):
                        # This request's body is malformed: no need to reach a server.
                        self._queue.clear()
                        self._abort(last.reason, status=last.status)
                    break  # body bytes wait for the server connection
                self._queue.popleft()
                if isinstance(event, Body):
                    self._on_request_body(req, event.data)
                else:
                    self._on_request_end(req, event.trailers)  # type: ignore[union-attr]

    def _start_request(self, head: RequestHead) -> None:
        match = self.router.match(head.host, head.method, head.path)
        route = match.route
        label = match.label or match.describe()
        facts = AccessFacts(head.method, head.target.decode("latin-1"), head.host, head.version, label, match.pool)
        req = _Request(head, match, facts)
        self._req = req
        req.websocket_allowed = self.profile.websocket if route is None or route.websocket is None else route.websocket
        index = head.headers.lowered  # type: ignore[attr-defined]  # built by the parser
        offered = req.offered = upgrade_request(head) if b"upgrade" in index else None
        if offered is not None:
            if offered == "websocket" and req.websocket_allowed and match.respond is None:
                problem = check_websocket_request(head)
                if problem is not None:
                    self._answer(400, problem, server=False, close=True)
                    return
                req.websocket = True
                self._out.append(Count("websocket_upgrade"))
            elif offered == "websocket":
                facts.upgrade = "refused"
                self._out.append(Count("websocket_refused"))
            else:
                facts.upgrade = "ignored"
                self._out.append(Count("upgrade_ignored"))
        if match.respond is not None:
            req.answered = True
            redirect = None if route is None else route.redirect
            if redirect is None:
                self._answer(match.respond, f"route {facts.route}", server=False)
            elif not head.host and needs_host(redirect):
                self._answer(400, f"route {facts.route}: a redirect to the request's host needs a Host", server=False)
            else:
                location = fill(redirect, head.host, facts.target)
                self._answer(match.respond, f"route {facts.route}", server=False, location=location)
            return
        limit = self.profile.max_body_bytes
        if limit and head.content_length is not None and head.content_length > limit:
            self._answer(413, f"request body of {head.content_length} bytes is over max_body_bytes ({limit})",
                         server=False, close=True)
            return
        req.server_head = self._server_head(head, index, req.websocket)
        req.one_shot = b"host" not in index  # see _server_head
        self._enter(Phase.CONNECT)
        assert match.pool is not None
        self._out.append(OpenServer(match.pool, match, head, req.server_head))

    def _server_head(self, head: RequestHead, index: dict[bytes, list[bytes]], websocket: bool) -> bytes:
        """The request head as sent to the real server: HTTP/1.1, hop-by-hop fields out, forwarding in.

        An HTTP/1.0 request without Host goes on as HTTP/1.0 with `Connection: close`:
        as HTTP/1.1 it would need a Host the client never named, and a made-up one could
        route it elsewhere on the real server.
        """
        profile = self.profile
        tls_fields = self.tls_fields
        if b"host" not in index:
            start = b"%s %s HTTP/1.0\r\n" % (head.method.encode("ascii"), head.target)
            headers = without_underscored_forwarding(strip_hop_by_hop(head.headers, ()))
            headers.append((b"Connection", b"close"))
            headers = add_forwarding(
                headers, self.client_ip, self.scheme, None, x_forwarded_for=profile.x_forwarded_for,
                x_forwarded_proto=profile.x_forwarded_proto, forwarded=profile.forwarded, received=head.headers,
            )
            if tls_fields is not None:
                headers = without_client_cert_fields(headers)
                headers.extend(tls_fields)
            return serialize(start[:-2], headers)
        start = b"".join((head.method.encode("ascii"), b" ", head.target, b" HTTP/1.1\r\n"))
        # a chunked body is announced as exactly `chunked` (the client may have written
        # `Chunked` or `, chunked`, which a real server could read differently)
        te = index.get(b"transfer-encoding")
        odd_te = te is not None and te != [b"chunked"]
        if (
            not odd_te
            and not profile.forwarded
            and b"x-forwarded-for" not in index
            and b"x-forwarded-proto" not in index
            and (plain_upgrade(index) if websocket else keeps_all(index))
            and not has_underscored_forwarding(index)
            and (tls_fields is None or not has_client_cert_field(index))
        ):  # the usual request (or upgrade): its fields as received, then ours
            tail = self._forwarding_tail
            if tail is None:  # the same for every request of this connection
                ours: list[tuple[bytes, bytes]] = []
                if profile.x_forwarded_for:
                    ours.append((b"X-Forwarded-For", self.client_ip.encode("ascii")))
                if profile.x_forwarded_proto:
                    ours.append((b"X-Forwarded-Proto", self.scheme.encode("ascii")))
                if tls_fields is not None:
                    ours.extend(tls_fields)
                tail = self._forwarding_tail = header_lines(ours) + b"\r\n"
            return head_bytes(start, head.headers, tail)
        keep: tuple[bytes, ...] = (b"upgrade", b"connection") if websocket else ()
        headers = without_underscored_forwarding(strip_hop_by_hop(head.headers, keep))
        if websocket:
            headers = [(n, b"Upgrade") if n.lower() == b"connection" else (n, v) for n, v in headers]
        if odd_te:
            headers = without(headers, (b"transfer-encoding",))
            headers.append((b"Transfer-Encoding", b"chunked"))
        host_values = get_all(head.headers, b"host")
        headers = add_forwarding(
            headers,
            self.client_ip,
            self.scheme,
            host_values[0] if host_values else None,
            x_forwarded_for=profile.x_forwarded_for,
            x_forwarded_proto=profile.x_forwarded_proto,
            forwarded=profile.forwarded,
            received=head.headers,
        )
        if tls_fields is not None:
            headers = without_client_cert_fields(headers)
            headers.extend(tls_fields)
        return serialize(start[:-2], headers)

    def _on_request_body(self, req: _Request, data: bytes) -> None:
        req.facts.bytes_in += len(data)
        if req.answered:
            return
        limit = self.profile.max_body_bytes
        if limit and req.facts.bytes_in > limit:  # chunked: the size is known only as it arrives
            self._abort(f"request body is over max_body_bytes ({limit})", status=413)
            return
        req.sent_body = True
        if req.head.body is BodyKind.CHUNKED:
            _chunk(self._out, SendToServer, data)
        else:
            self._out.append(SendToServer(data))

    def _on_request_end(self, req: _Request, trailers: Headers) -> None:
        req.complete = True
        if req.answered:
            self._finish_answered(req)
            return
        if req.head.body is BodyKind.CHUNKED:
            last = _last_chunk(trailers)
            self._out.append(SendToServer(last))
            if not req.sent_body:
                req.last_chunk = last  # the whole body: a retry sends it again with the head
        if self.phase is Phase.FORWARD_REQUEST:
            self._request_sent(req)
        # CONNECT: server_connected moves on; FORWARD_RESPONSE: an early answer is
        # being relayed and the client is closed after it.

    def _request_sent(self, req: _Request) -> None:
        self._enter(Phase.UPGRADE_PENDING if req.websocket else Phase.READ_RESPONSE_HEAD)

    # -- server side -----------------------------------------------------------------------
    # -- response events, as the parser reports them ---------------------------------------
    def _stray(self) -> bool:
        """A response event came that does not belong to the request being answered.

        After the response ended, more from the server (a second response, junk after a
        204...) means the connection cannot be trusted with another request; nothing
        more it sent is parsed.
        """
        self._rparser.close()
        if self.phase is not Phase.TUNNEL and self.phase is not Phase.CLOSING:
            # counted before the connection is released, so that the log can name its server
            at = len(self._out)
            for i, action in enumerate(self._out):
                if isinstance(action, ReleaseServer):
                    action.reusable = False
                    at = min(at, i)
            self._out.insert(at, Count(
                "stray_response_bytes", "bytes after the end of a response; the connection is not reused"
            ))
        return True

    def _response_head(self, resp: ResponseHead) -> None:
        if self._req is not self._serving and self._stray():
            return
        req = self._req
        assert req is not None
        self._on_response_head(req, resp)

    def _response_body(self, data: bytes) -> None:
        if self._req is not self._serving and self._stray():
            return
        req = self._req
        assert req is not None
        if self.phase is not Phase.FORWARD_RESPONSE:
            raise AssertionError(f"response body in phase {self.phase.name}")
        req.facts.bytes_out += len(data)
        response = req.response
        if req.dechunk or response is None or response.body is not BodyKind.CHUNKED:
            self._out.append(SendToClient(data))
        else:
            _chunk(self._out, SendToClient, data)

    def _response_end(self, trailers: Headers) -> None:
        if self._req is not self._serving and self._stray():
            return
        req = self._req
        assert req is not None
        response = req.response
        if response is None or self.phase is not Phase.FORWARD_RESPONSE:
            raise AssertionError(f"end of response in phase {self.phase.name}")
        if response.body is BodyKind.CHUNKED and not req.dechunk:
            self._out.append(SendToClient(_last_chunk(trailers)))
        # An early answer (request incomplete) was sent with Connection: close.
        self._finish_response(req)

    def _response_malformed(self, status: int, reason: str) -> None:
        if self._req is not self._serving and self._stray():
            return
        req = self._req
        assert req is not None
        self._fail_server(req, reason, status=status)

    def _on_response_head(self, req: _Request, resp: ResponseHead) -> None:
        if self.phase not in (Phase.FORWARD_REQUEST, Phase.READ_RESPONSE_HEAD, Phase.UPGRADE_PENDING):
            raise AssertionError(f"response head in phase {self.phase.name}")
        if resp.interim:
            if req.head.version == "1.1":
                # (not response_started: after a 1xx the final answer may still be the appliance's, a 502 say)
                start = b"HTTP/1.1 %d %s" % (resp.status, resp.reason)
                # a 1xx has no body: framing fields on it (which no server may send) do not go on
                headers = without(strip_hop_by_hop(resp.headers), _FRAMING_FIELDS)
                self._out.append(SendToClient(serialize(start, headers)))
            req.continued = True
            return
        if resp.status == 101:
            ok, why = may_tunnel(
                req.head, resp, websocket_allowed=req.websocket_allowed, request_complete=req.complete,
                offered=req.offered,
            )
            if ok and not (self._parser.upgrade_held and self._rparser.upgraded):
                # The checks above read the fields one way, llhttp (which framed the bytes
                # either side of the heads) another: whatever it parsed past the heads as
                # HTTP would be lost to the tunnel. Never expected since both read tokens alike.
                ok, why = False, "101 to a request the HTTP parser did not take for an upgrade"
            if not ok or self.phase is not Phase.UPGRADE_PENDING:
                self._fail_server(req, why or "unexpected 101", status=502)
                return
            req.facts.status = 101
            req.facts.upgrade = "tunnel"
            start = b"HTTP/1.1 101 " + (resp.reason or b"Switching Protocols")
            violation = resp.framing_violation
            if violation is not None:  # a 101 has no body: its framing fields do not go on
                self._out.append(Count("response_framing_violation", f"{violation}: not passed on"))
            if req.set_cookie is None and violation is None and plain_upgrade(resp.headers.lowered):  # type: ignore[attr-defined]
                self._out.append(SendToClient(head_bytes(start + b"\r\n", resp.headers)))
            else:
                headers = strip_hop_by_hop(resp.headers, (b"upgrade", b"connection"))
                if violation is not None:
                    headers = without(headers, _FRAMING_FIELDS)
                if req.set_cookie is not None:
                    headers.append((b"Set-Cookie", req.set_cookie))
                self._out.append(SendToClient(serialize(start, headers)))
            self._out.append(RequestDone(req.facts))
            self._enter(Phase.TUNNEL)
            self._out.append(StartTunnel(self._parser.take_held(), self._rparser.leftover))
            self._req = None
            return
        req.response = resp
        req.response_started = True
        req.facts.status = resp.status
        if req.websocket:
            req.facts.upgrade = "declined"
        if resp.framing_violation is not None:
            self._out.append(Count(
                "response_framing_violation", f"{resp.framing_violation}: not passed on; the connection is not reused"
            ))
        client_10 = req.head.version == "1.0"
        req.dechunk = client_10 and resp.body is BodyKind.CHUNKED
        req.close_after = (
            not req.head.keep_alive
            or self._last_before_eof()
            or resp.body is BodyKind.CLOSE
            or req.dechunk
            or not req.complete
        )
        reason = resp.reason or reason_phrase(resp.status).encode("latin-1")
        start = b"".join((b"HTTP/1.1 ", str(resp.status).encode("ascii"), b" ", reason))
        lowered = resp.headers.lowered  # type: ignore[attr-defined]  # built by the parser
        no_length = resp.status == 204 and b"content-length" in lowered  # RFC 9110 §8.6: never on a 204
        if (
            req.set_cookie is None and not client_10 and resp.framing_violation is None and not no_length
            and keeps_all(lowered)
        ):  # the usual answer: its fields as received
            tail = b"Connection: close\r\n\r\n" if req.close_after else b"\r\n"
            self._out.append(SendToClient(head_bytes(start + b"\r\n", resp.headers, tail)))
            self._enter(Phase.FORWARD_RESPONSE)
            return
        headers = strip_hop_by_hop(resp.headers)
        if resp.framing_violation is not None or no_length:
            headers = without(headers, _FRAMING_FIELDS)
        elif req.dechunk:
            headers = without(headers, (b"transfer-encoding",))
        if req.set_cookie is not None:
            headers.append((b"Set-Cookie", req.set_cookie))
        if req.close_after:
            headers.append((b"Connection", b"close"))
        elif client_10:
            headers.append((b"Connection", b"keep-alive"))
        self._out.append(SendToClient(serialize(start, headers)))
        self._enter(Phase.FORWARD_RESPONSE)

    def _finish_response(self, req: _Request) -> None:
        resp = req.response
        assert resp is not None
        reusable = (
            resp.keep_alive
            and not req.one_shot
            and req.complete
            and resp.framing_violation is None
            and resp.body is not BodyKind.CLOSE
        )
        self._out.append(ReleaseServer(reusable))
        self._out.append(RequestDone(req.facts))
        self._req = None
        if req.close_after or self._last_before_eof():
            self._enter(Phase.CLOSING)
            self._out.append(CloseClient("connection: close" if not self._client_eof else "client closed",
                                         linger=self._may_send(req)))
            return
        self._enter(Phase.READ_HEAD)

    def _fail_server(self, req: _Request, reason: str, status: int = 502) -> None:
        """The real server failed this request: answer if we still can, else close."""
        self._out.append(ReleaseServer(False))
        if self.phase is Phase.FORWARD_RESPONSE or req.response_started:
            # the client has part of an answer: a clean close could pass it for a whole one
            req.facts.reason = reason
            self._out.append(Count("server_aborted", reason))
            self._out.append(RequestDone(req.facts))
            self._req = None
            self._enter(Phase.CLOSING)
            self._out.append(CloseClient(reason, abort=True))
            return
        self._answer(status, reason, server=False, close=True)

    # -- answers made by the appliance -------------------------------------------------------
    def _answer(self, status: int, reason: str, *, server: bool, close: bool | None = None,
                location: str = "") -> None:
        """Respond with `status` (a redirect to `location`); keep the client only when framing is certain."""
        req = self._req
        if close is None:
            close = (
                req is None or not req.head.keep_alive or req.head.body is not BodyKind.NONE or self._last_before_eof()
            )
        head_only = req is not None and req.head.method == "HEAD"
        # 4xx details and the redirect's target in the body; 5xx details stay in the log
        detail = reason if 400 <= status < 500 else location
        data = build_response(status, close=close, detail=detail, head_only=head_only, location=location)
        facts = req.facts if req is not None else AccessFacts()
        facts.status = status
        facts.reason = reason
        if server:
            self._out.append(ReleaseServer(False))
        self._out.append(Respond(status, reason, close, data))
        self._out.append(RequestDone(facts))
        if close:
            self._req = None
            self._drop_client_input()
            self._enter(Phase.CLOSING)
            self._out.append(CloseClient(reason, linger=self._may_send(req)))
            return
        if req is not None and req.complete:
            self._req = None
        if self.phase is not Phase.READ_HEAD:
            self._enter(Phase.READ_HEAD)

    def _finish_answered(self, req: _Request) -> None:
        """The discarded body of an answered request has been read."""
        self._req = None

    def _abort(self, reason: str, status: int = 400) -> None:
        req = self._req
        if req is None:
            self._answer(status, reason, server=False, close=True)
            return
        server_attached = self.phase in (
            Phase.CONNECT, Phase.FORWARD_REQUEST, Phase.READ_RESPONSE_HEAD, Phase.FORWARD_RESPONSE, Phase.UPGRADE_PENDING
        )
        if server_attached:
            self._out.append(ReleaseServer(False))
        if req.response_started or self._client_eof:
            req.facts.reason = reason
            self._out.append(RequestDone(req.facts))
            self._req = None
            self._drop_client_input()
            self._enter(Phase.CLOSING)
            # part of an answer has gone out: a reset, not a FIN, tells the client it is cut
            # short (a close-delimited or de-chunked body would otherwise pass for whole)
            self._out.append(CloseClient(reason, abort=req.response_started))
            return
        self._answer(status, reason, server=False, close=True)

    def _may_send(self, req: _Request | None) -> bool:
        """Closing: the client may still be sending, a body not read to its end or a head cut short."""
        if self._client_eof:
            return False
        return req is None or (req.head.body is not BodyKind.NONE and not req.complete)

    def _last_before_eof(self) -> bool:
        """The client has half-closed and sent no request after the current one (all it sent is parsed)."""
        return self._client_eof and not self._queue and self._unparsed is None and self._parser.closed

    def _drop_client_input(self) -> None:
        """Nothing more the client sent is to be handled: the connection ends."""
        self._queue.clear()
        self._unparsed = None
        self._parser.close()

    def _flush(self) -> list[Action]:
        self._batch = 0
        out, self._out = self._out, []
        return out
