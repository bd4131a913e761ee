"""httptools (llhttp) wrapped as sans-IO parsers: `receive_data(bytes) -> list[Event]`.

llhttp runs in strict mode (no leniencies), so bare CR/LF, obs-fold, bad chunk
syntax, duplicate or conflicting Content-Length are rejected by it; the framing
rules of `adc.http.framing` are applied on top. Limits bound every buffer:
the request line (414), the head size and header count (431).

Two llhttp properties shape this module:
- The request parser stops (`HttpParserUpgrade`) as soon as a request asks for an
  upgrade. The bytes after that request are held (bounded) until the exchange
  knows the answer: `take_held()` for a tunnel, `restart()` for a fresh parser
  and the held bytes to feed it when the connection stays HTTP.
- The response parser cannot be told that a response answers HEAD; it would wait
  for the body its Content-Length announces. `ResponseParser.expect("HEAD")`
  therefore splits heads itself and parses each with a fresh llhttp parser.

Events go to a sink as llhttp reports them (`head`, `body`, `end`, `malformed`
callables), so the Layer-7 exchange handles a message without an event list in
between. Without a sink, a parser collects `Event` values and `receive_data`
returns them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httptools

from adc.http.events import Body, BodyKind, EndOfMessage, Event, HeaderList, Headers, Malformed, RequestHead, ResponseHead
from adc.http.framing import MAX_CONTENT_LENGTH_DIGITS, FramingError, check_host, request_framing, response_framing
from adc.http.headers import index_headers

MAX_HELD_BYTES = 256 * 1024  # bytes kept after an upgrade request until the answer
# The interim statuses llhttp ends at their head whatever their framing fields say; any
# other 1xx (RFC 9110 §15.2: a proxy forwards them all) ends there too when it has no
# Content-Length above 0 and no Transfer-Encoding. 101 ends the parsing.
_INTERIM_WITHOUT_BODY = frozenset({100, 102, 103})
_HEAD_END = b"\r\n\r\n"


class Sink:
    """Where a parser's events go, as they happen.

    A plain class, not a named tuple: one is made per parser, and a named tuple's
    constructor is interpreted code.
    """

    __slots__ = ("head", "body", "end", "malformed")

    def __init__(
        self,
        head: Callable[[Any], None],  # a RequestHead or ResponseHead
        body: Callable[[bytes], None],
        end: Callable[[Headers], None],  # the trailers
        malformed: Callable[[int, str], None],  # the answer to give, and why
    ) -> None:
        self.head = head
        self.body = body
        self.end = end
        self.malformed = malformed


def collector(events: list[Event]) -> Sink:
    """A sink that appends `Event` values to `events`."""
    append = events.append
    return Sink(
        append,
        lambda data: append(Body(data)),
        lambda trailers: append(EndOfMessage(trailers)),
        lambda status, reason: append(Malformed(status, reason)),
    )


def _dropped(*args: Any) -> None:
    """The sink of a released parser."""


class _Stop(Exception):
    """Raised inside an llhttp callback to stop parsing with an answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def routing_path(path: str) -> str:
    """The path as routes see it: the way real servers read it, not as the client spelled it.

    Percent-escapes of unreserved characters are decoded (the others keep their escape, in
    upper case), empty segments merged (`//`) and dot segments resolved (RFC 3986 §6.2.2,
    §5.2.4), so `/%61dmin/./x`, `//admin/x` and `/x/../admin/x` all meet a route for
    `/admin` (a deny rule, say), as they would meet the real server's `/admin`. NGINX
    matches its locations the same way. The request itself goes on as the client wrote it.
    """
    if "%" not in path and "/." not in path and "//" not in path:
        return path  # the usual path, already in normal form
    if not path.startswith("/"):
        return path  # "*"
    if "%" in path:
        pieces = path.split("%")
        out = [pieces[0]]
        for piece in pieces[1:]:
            if len(piece) >= 2 and piece[0] in _HEX_DIGITS and piece[1] in _HEX_DIGITS:
                char = chr(int(piece[:2], 16))
                out.append((char if char in _UNRESERVED else "%" + piece[:2].upper()) + piece[2:])
            else:
                out.append("%" + piece)
        path = "".join(out)
    segments: list[str] = []
    for segment in path.split("/"):
        if segment == "" or segment == ".":
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    if not segments:
        return "/"
    trailing = path.endswith("/") or path.endswith("/.") or path.endswith("/..")
    return "/" + "/".join(segments) + ("/" if trailing else "")


def _split_target(target: bytes) -> str:
    path = target.split(b"?", 1)[0]
    if path[:8].lower().startswith((b"http://", b"https://")):  # absolute-form
        rest = path.split(b"//", 1)[1]
        slash = rest.find(b"/")
        path = rest[slash:] if slash >= 0 else b"/"
    return path.decode("latin-1")


# A request line's start with a method token (RFC 9110 §9.1, §5.6.2)
_EXTENSION_METHOD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ ")
# what a reason phrase may not hold (RFC 9112 §4: HTAB, SP, VCHAR, obs-text)
_REASON_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

# A Host value that needs no trimming: a name or IPv4 address, an optional port.
_HOST_VALUE = re.compile(rb"[A-Za-z0-9._~%!$&'()*+,;=-]+(:[0-9]*)?")


def _host_only(value: bytes) -> str:
    """A Host value (or authority) without its port, lower case, without a final dot."""
    h = value.decode("latin-1").strip().lower()
    if h[:1] == "[":
        end = h.find("]")
        return h[1:end] if end > 0 else h
    return h.partition(":")[0].rstrip(".")


def _port(value: bytes, default: int) -> int:
    """The port of a Host value or authority, `default` when it names none (RFC 9110 §4.2.1-2)."""
    colon = value.rfind(b":")
    if colon < 0 or colon < value.rfind(b"]"):
        return default
    digits = value[colon + 1 :].strip()
    return int(digits) if digits.isdigit() else default


def _without_progress(parser: RequestParser | ResponseParser, n: int) -> bool:
    """Count `n` bytes parsed in a chunked body; True once too many passed without data or a trailer.

    llhttp reads chunk extensions without reporting them, and httptools gathers a trailer
    field until its line ends: without this, a peer could send either forever (a connection
    held, or memory without bound). Bytes fed in a call that produced neither body data
    nor a trailer count; any that did starts the count again. The bound is the head's.
    """
    if parser._progress:
        parser._idle = 0
        return False
    parser._idle += n
    return parser._idle > parser.max_header_bytes


class RequestParser:
    """Client bytes in, request events out (to `sink`, or collected by `receive_data`)."""

    __slots__ = (
        "_parser", "_events", "_url", "_headers", "_trailers", "in_head", "_head_bytes",
        "_header_bytes", "_dead", "_held", "_held_size", "upgrade_held", "_begun", "_completed",
        "max_request_line", "max_header_bytes", "max_headers", "max_held_bytes",
        "_on_head", "_on_body", "_on_end", "_on_malformed", "_body_framing", "_synthetic",
        "_chunked", "_progress", "_idle",
    )

    def __init__(
        self,
        max_request_line: int = 8 * 1024,
        max_header_bytes: int = 32 * 1024,
        max_headers: int = 100,
        max_held_bytes: int = MAX_HELD_BYTES,
        sink: Sink | None = None,
    ) -> None:
        self.max_request_line = max_request_line
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_held_bytes = max_held_bytes
        self._events: list[Event] = []
        if sink is None:
            sink = collector(self._events)
        self._on_head, self._on_body, self._on_end, self._on_malformed = sink.head, sink.body, sink.end, sink.malformed
        self._dead = False
        self._held: list[bytes | memoryview] = []
        self._held_size = 0
        self.upgrade_held = False
        self._begun = 0  # request heads begun so far
        self._completed = 0  # requests completed so far
        # An upgrade request with a body: httptools has llhttp skip the body of every upgrade
        # request and stop after its head. The body is framed by this (see _body_after_upgrade).
        self._body_framing: bytes | None = None
        self._synthetic = False  # llhttp reads a head made up here: its callbacks are ignored
        self._chunked = False  # in a chunked body (see _without_progress)
        self._progress = False
        self._idle = 0
        self._fresh()

    def _fresh(self) -> None:
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: Headers = HeaderList()
        self._trailers: Headers = []
        self.in_head = False  # a request head has begun and is not complete yet
        self._head_bytes = 0
        self._header_bytes = 0

    # -- public API -------------------------------------------------------------------
    @property
    def heads_begun(self) -> int:
        """Request heads begun so far (llhttp skips empty lines before a head)."""
        return self._begun

    def feed(self, data: bytes | memoryview) -> None:
        """Parse `data`; events go to the sink as they are found."""
        if self._dead:
            return
        if self.upgrade_held:
            self._held.append(data)
            self._held_size += len(data)
            if self._held_size > self.max_held_bytes:
                self._fail(400, "too much data after an upgrade request")
            return
        self._feed(data)

    def receive_data(self, data: bytes) -> list[Event]:
        """`feed`, returning the events collected (a parser made without a sink)."""
        self.feed(data)
        return self._collected()

    def _collected(self) -> list[Event]:
        events = self._events[:]
        self._events.clear()
        return events

    def take_held(self) -> bytes:
        """The bytes after the upgrade request (for the tunnel); parsing ends."""
        held = b"".join(self._held)
        self._held, self._held_size, self._dead = [], 0, True
        return held

    def restart(self) -> bytes:
        """The upgrade did not happen: a fresh parser, and the held bytes for the caller to feed."""
        held = b"".join(self._held)
        self._held, self._held_size, self.upgrade_held = [], 0, False
        self._fresh()
        return held

    def close(self) -> None:
        """Report nothing more (the rest of the bytes being parsed included)."""
        self._dead = True

    @property
    def closed(self) -> bool:
        """Nothing more is reported: closed, failed, or handed over to a tunnel."""
        return self._dead

    def release(self) -> None:
        """The connection is over: drop llhttp and the sink, which refer back to this object or its owner."""
        self._dead = True
        self._parser = None  # type: ignore[assignment]  # never used again: _dead
        self._on_head = self._on_body = self._on_end = self._on_malformed = _dropped

    # -- internals -------------------------------------------------------------------
    def _fail(self, status: int, reason: str) -> None:
        if not self._dead:
            self._dead = True
            self._on_malformed(status, reason)

    def _feed(self, data: bytes | memoryview) -> None:
        begun, completed = self._begun, self._completed
        self._progress = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0]
            rest = data[offset:]
            if self._body_framing is not None:
                self._body_after_upgrade(rest)
                return
            self.upgrade_held = True
            if rest:
                self._held.append(rest)
                self._held_size = len(rest)
        except httptools.HttpParserCallbackError as exc:
            stop = exc.__context__
            if isinstance(stop, _Stop):
                self._fail(stop.status, stop.reason)
            else:  # a bug in a callback: loud
                raise
        except httptools.HttpParserInvalidURLError:
            self._fail(400, "invalid request target")
        except httptools.HttpParserInvalidMethodError:
            if self._completed == completed and _EXTENSION_METHOD.match(bytes(data).lstrip(b"\r\n")) is not None:
                # a well-formed method the parser has no entry for (its method set is fixed):
                # not implemented (RFC 9110 §9.1), rather than a malformed request
                self._fail(501, "method not implemented")
            else:
                self._fail(400, "invalid method")
        except httptools.HttpParserError as exc:
            if bytes(data).lstrip(b"\r\n").startswith(b"PRI * HTTP/2.0"):  # a client speaking HTTP/2 without ALPN
                self._fail(505, "HTTP/2 not supported (HTTP/1.1 only)")
            else:
                self._fail(400, str(exc) or "malformed request")
        else:
            if self.in_head:
                # Bytes of a head still incomplete: count the whole chunk when it holds
                # nothing but this head (it began earlier, or began this chunk with no
                # earlier message ending in it); a chunk that also ends pipelined requests
                # is bounded by the read size. llhttp buffers an unfinished header line,
                # so this is what bounds it.
                if self._begun == begun or (self._begun == begun + 1 and self._completed == completed):
                    self._head_bytes += len(data)
                if self._head_bytes > self.max_header_bytes:
                    self._fail(431, "request head too large")
                elif len(self._url) > self.max_request_line:
                    self._fail(414, "request line too long")
            elif self._chunked and _without_progress(self, len(data)):
                self._fail(400, "chunk extension or trailer too long")

    def _body_after_upgrade(self, rest: bytes | memoryview) -> None:
        """Parse the body of an upgrade request that has one, then go on as usual.

        A request keeps the connection in HTTP until its whole body has passed: the body is
        never taken for the next request (request smuggling) nor for tunnel bytes. A fresh
        llhttp is given a made-up head with the request's framing, its callbacks ignored,
        and then the bytes after the real head.
        """
        framing = self._body_framing
        assert framing is not None
        self._body_framing = None
        self._parser = httptools.HttpRequestParser(self)
        self._synthetic = True
        try:
            self._parser.feed_data(b"POST / HTTP/1.1\r\n" + framing + b"\r\n")
        finally:
            self._synthetic = False
        self._chunked, self._idle = framing.startswith(b"Transfer-Encoding"), 0
        if rest:
            self._feed(rest)

    # -- llhttp callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        if self._synthetic:
            return
        self._begun += 1
        self._url = b""
        self._headers = HeaderList()
        self.in_head = True
        self._head_bytes = 0
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        if self._synthetic:
            return
        self._url += url
        if len(self._url) > self.max_request_line:
            raise _Stop(414, "request line too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._synthetic:
            return
        if self.in_head:
            self._headers.append((name, value))
            # the byte bound keeps memory bounded; the count is checked at the end of the head
            self._header_bytes += len(name) + len(value) + 4
            if self._header_bytes + len(self._url) > self.max_header_bytes:
                raise _Stop(431, "request head too large")
            return
        self._trailers.append((name, value))
        self._progress = True
        self._header_bytes += len(name) + len(value) + 4
        if len(self._trailers) > self.max_headers or self._header_bytes > self.max_header_bytes:
            raise _Stop(431, "too many or too large trailers")

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self._dead or self._synthetic:
            return
        p = self._parser
        version = p.get_http_version()
        if version != "1.1" and version != "1.0":
            raise _Stop(505 if version.startswith(("2", "3")) else 400, f"HTTP/{version} not supported")
        headers = self._headers
        if len(headers) > self.max_headers:
            raise _Stop(431, "too many header fields")
        method = p.get_method().decode("ascii")
        index = index_headers(headers)
        hosts = index.get(b"host")
        if (
            hosts is not None and len(hosts) == 1 and _HOST_VALUE.fullmatch(hosts[0]) is not None
            and b"transfer-encoding" not in index and b"content-length" not in index
        ):  # the usual request: one plain Host (a name or IPv4 address), no body
            # (a fully qualified name's final dot names the same host: "example.com." is "example.com")
            host_name = hosts[0].partition(b":")[0].lower().decode("latin-1").rstrip(".")
            kind, length = BodyKind.NONE, None
        else:
            try:
                host = check_host(headers, version)
                kind, length = request_framing(headers, version)
            except FramingError as exc:
                raise _Stop(exc.status, exc.reason) from None
            host_name = _host_only(host) if host else ""
        if method == "CONNECT":
            # 501 rather than 405: the appliance is no forward proxy, and a 405 would have to
            # name the methods the real servers allow (Allow), which it cannot know
            raise _Stop(501, "CONNECT is not supported")
        url = self._url
        if url.find(b"#") >= 0:  # (find: `in` on bytes raises and clears a TypeError inside)
            # no form of request target has one (RFC 9112 §3.2); a real server that reads
            # "/a#/../b" as "/b" would serve what the routes never saw
            raise _Stop(400, "fragment in the request target")
        if url[:1] == b"/":
            # origin-form; without a query the path is the whole target
            path = url.decode("latin-1") if url.find(b"?") < 0 else _split_target(url)
        else:
            if url[:8].lower().startswith((b"http://", b"https://")):
                # absolute-form: a real server must use this authority and ignore Host
                # (RFC 9112 §3.2.2), so routes must see the same name, or the request is refused
                authority = url.split(b"//", 1)[1].split(b"/", 1)[0].split(b"?", 1)[0]
                if authority.find(b"@") >= 0:  # RFC 9110 §4.2.4: userinfo is an error
                    raise _Stop(400, "userinfo in the request target")
                default = 443 if url[4:5] in (b"s", b"S") else 80
                hosts = index.get(b"host")
                if (
                    not authority or _host_only(authority) != host_name
                    or not hosts or _port(authority, default) != _port(hosts[0], default)
                ):
                    raise _Stop(400, "Host does not match the request target")
            elif url != b"*" or method != "OPTIONS":
                # another scheme's URL (its authority unchecked), or "*" with a method other than OPTIONS
                raise _Stop(400, "request target is neither a path nor an http(s) URL")
            path = _split_target(url)
        if kind is not BodyKind.NONE and p.should_upgrade():
            self._body_framing = b"Transfer-Encoding: chunked\r\n" if length is None else b"Content-Length: %d\r\n" % length
        # a chunked body's bytes count from the next feed: this one's so far were heads
        self._chunked, self._idle, self._progress = kind is BodyKind.CHUNKED, 0, True
        self._on_head(RequestHead(
            method, url, version, headers, p.should_keep_alive(), kind, length, routing_path(path), host_name
        ))

    def on_body(self, body: bytes) -> None:
        self._progress = True
        if not self._dead:
            self._on_body(body)

    def on_message_complete(self) -> None:
        if self._body_framing is not None:
            return  # llhttp's end right after an upgrade request's head: the body comes next
        self._completed += 1
        self._chunked = False
        if self._dead:
            return
        trailers, self._trailers = self._trailers, []
        self._on_end(trailers)


class ResponseParser:
    """Server bytes in, response events out, for one request at a time (`expect`).

    A 101 head reaches the sink only once the parser has stopped and the bytes after
    it are known (`leftover`), so a tunnel can take them.
    """

    __slots__ = (
        "_parser", "_events", "_headers", "_trailers", "_in_head", "_head_bytes", "_header_bytes",
        "_method", "_current", "_reason", "_dead", "_head_only", "_head_buf", "leftover", "upgraded",
        "_between", "_final", "_switching", "max_header_bytes", "max_headers",
        "_on_head", "_on_body", "_on_end", "_on_malformed", "_chunked", "_progress", "_idle",
    )

    def __init__(self, max_header_bytes: int = 32 * 1024, max_headers: int = 100, sink: Sink | None = None) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self._events: list[Event] = []
        if sink is None:
            sink = collector(self._events)
        self._on_head, self._on_body, self._on_end, self._on_malformed = sink.head, sink.body, sink.end, sink.malformed
        self._dead = False
        self._method = "GET"
        self._head_only = False
        self._head_buf = bytearray()
        self.leftover = b""  # server bytes after a 101 head
        self.upgraded = False
        self._current: ResponseHead | None = None
        self._switching: ResponseHead | None = None  # a 101 head, reported when parsing stops
        self._final = False  # a final (non-interim) head was parsed
        self._progress = False
        self._idle = 0
        self._fresh()
        # llhttp sits cleanly between two responses: it can be reused (so can a new one,
        # which the first expect() keeps rather than making another)
        self._between = True

    def _fresh(self) -> None:
        self._between = False
        self._parser = httptools.HttpResponseParser(self)
        self._headers: Headers = HeaderList()
        self._trailers: Headers = []
        self._in_head = False
        self._chunked = False  # in a chunked body (see _without_progress)
        self._head_bytes = 0
        self._header_bytes = 0
        self._current = None
        self._reason = b""

    @property
    def in_message(self) -> bool:
        """Some bytes of a response have arrived and it is not complete."""
        return self._in_head or self._current is not None or bool(self._head_buf)

    @property
    def close_delimited(self) -> bool:
        return self._current is not None and self._current.body is BodyKind.CLOSE

    def close(self) -> None:
        """Report nothing more (the rest of the bytes being parsed included) until `expect`."""
        self._dead = True
        self._between = False

    def release(self) -> None:
        """The connection is over: drop llhttp and the sink, which refer back to this object or its owner."""
        self.close()
        self._parser = None  # type: ignore[assignment]  # never used again: _dead
        self._on_head = self._on_body = self._on_end = self._on_malformed = _dropped

    def expect(self, method: str) -> None:
        """The next response answers a request with this method."""
        self._method = method
        if self._between and method != "HEAD" and not self._dead and not self.upgraded and not self._head_only:
            return  # the last response ended cleanly: llhttp is ready for the next one
        self._head_only = method == "HEAD"
        self._head_buf.clear()
        self._dead = False
        self.upgraded = False
        self.leftover = b""
        self._fresh()

    def feed(self, data: bytes) -> None:
        """Parse `data`; events go to the sink as they are found."""
        if self._dead:
            return
        if self.upgraded:
            self.leftover += data
            return
        if self._head_only:
            self._receive_head_only(data)
        else:
            self._feed(data)

    def receive_data(self, data: bytes) -> list[Event]:
        """`feed`, returning the events collected (a parser made without a sink)."""
        self.feed(data)
        return self._collected()

    def eof(self) -> list[Event]:
        """The server closed: ends a close-delimited body, else reports truncation."""
        if not self._dead:
            self._dead = True
            if self.close_delimited:
                self._current = None
                self._on_end([])
            elif self.in_message:
                self._on_malformed(502, "real server closed in the middle of a response")
        return self._collected()

    # -- internals -------------------------------------------------------------------
    def _collected(self) -> list[Event]:
        events = self._events[:]
        self._events.clear()
        return events

    def _fail(self, status: int, reason: str) -> None:
        if self._dead:
            return
        self._dead = True
        switching = self._switching
        if switching is not None:
            # llhttp refuses to go on after a 101 it does not take for an upgrade; the
            # exchange judges the 101 itself (and answers 502), the error adds nothing
            self._switching = None
            self._on_head(switching)
            return
        self._on_malformed(status, reason)

    def _receive_head_only(self, data: bytes) -> None:
        buf = self._head_buf
        buf += data
        while self._head_only and not self._dead:
            end = buf.find(_HEAD_END)
            if end < 0:
                if len(buf) > self.max_header_bytes:
                    self._fail(502, "response head too large")
                return
            head = bytes(buf[: end + 4])
            del buf[: end + 4]
            self._fresh()
            self._final = False
            self._feed(head)
            if self._dead or self.upgraded or not self._final:
                if self._dead or self.upgraded:
                    return
                continue  # an interim head (100, 103...): the final one follows
            # A final answer to HEAD is complete at the end of its head.
            self._head_only = False
            if self._current is not None:
                self._current = None
                self._on_end([])
        if not self._head_only and buf and not self._dead:
            rest = bytes(buf)
            buf.clear()
            self._fresh()
            self._feed(rest)

    def _feed(self, data: bytes) -> None:
        self._progress = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            self.upgraded = True
            self.leftover = data[exc.args[0] :]
        except httptools.HttpParserCallbackError as exc:
            stop = exc.__context__
            if isinstance(stop, _Stop):
                self._fail(stop.status, stop.reason)
            else:
                raise
        except httptools.HttpParserError as exc:
            self._fail(502, f"malformed response: {exc}")
        else:
            if self._in_head:
                self._head_bytes += len(data)
                if self._head_bytes > self.max_header_bytes:
                    self._fail(502, "response head too large")
            elif self._chunked and _without_progress(self, len(data)):
                self._fail(502, "chunk extension or trailer too long")
        switching = self._switching
        if switching is not None:
            self._switching = None
            if not self.upgraded:  # no tunnel can follow: nothing after it is parsed
                self._dead = True
            self._on_head(switching)

    # -- llhttp callbacks ----------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._between = False
        self._headers = HeaderList()
        self._reason = b""
        self._in_head = True
        self._head_bytes = 0
        self._header_bytes = 0

    def on_status(self, reason: bytes) -> None:
        self._reason += reason
        if len(self._reason) > self.max_header_bytes:
            raise _Stop(502, "response head too large")

    def on_header(self, name: bytes, value: bytes) -> None:
        # the byte bound keeps memory bounded; the count is checked at the end of the head
        if self._in_head:
            self._headers.append((name, value))
        else:
            self._trailers.append((name, value))
            self._progress = True
        self._header_bytes += len(name) + len(value) + 4
        if self._header_bytes > self.max_header_bytes:
            raise _Stop(502, "response head too large")

    def on_headers_complete(self) -> None:
        self._in_head = False
        if self._dead or self._switching is not None:
            return
        p = self._parser
        version = p.get_http_version()
        status = p.get_status_code()
        if version != "1.1" and version != "1.0":
            raise _Stop(502, f"response version HTTP/{version}")
        if status > 599:  # RFC 9110 §15: 100..599
            raise _Stop(502, f"invalid response status {status}")
        if _REASON_CONTROL.search(self._reason) is not None:
            raise _Stop(502, "control character in the response's reason phrase")
        headers = self._headers
        if len(headers) > self.max_headers:
            raise _Stop(502, "response head too large")
        index = index_headers(headers)
        lengths = index.get(b"content-length")
        if (
            lengths is not None and len(lengths) == 1 and lengths[0].isdigit() and len(lengths[0]) <= MAX_CONTENT_LENGTH_DIGITS
            and b"transfer-encoding" not in index and 200 <= status and status != 204 and status != 304
            and self._method != "HEAD" and self._method != "CONNECT"
        ):  # the usual answer: one plain Content-Length
            length: int | None = int(lengths[0])
            kind, violation = (BodyKind.LENGTH if length else BodyKind.NONE), None
        else:
            try:
                kind, length, violation = response_framing(self._method, status, headers)
            except FramingError as exc:
                raise _Stop(502, exc.reason) from None
        if violation is not None and status < 200 and status != 101 and status not in _INTERIM_WITHOUT_BODY:
            # llhttp reads a body after such a 1xx, by its framing: no 1xx has one, and what
            # follows could not be told apart from the final answer
            raise _Stop(502, f"interim status {status} with a body ({violation})")
        head = ResponseHead(
            status, self._reason, version, headers, p.should_keep_alive() and violation is None, kind, length, violation
        )
        self._chunked, self._idle, self._progress = kind is BodyKind.CHUNKED, 0, True
        if status == 101:
            self._switching = head
            return
        if status < 200:  # interim (100, 103...); 101 was taken above
            self._current = None
        else:
            self._current = head
            self._final = True
        self._on_head(head)

    def on_body(self, body: bytes) -> None:
        self._progress = True
        if not self._dead and self._switching is None:
            self._on_body(body)

    def on_message_complete(self) -> None:
        self._chunked = False
        if len(self._trailers) > self.max_headers:
            raise _Stop(502, "response head too large")
        trailers, self._trailers = self._trailers, []
        if self._current is not None:
            self._current = None
            # reusable only when llhttp expects another message on this connection
            self._between = not self._head_only and self._parser.should_keep_alive()
            if not self._dead:
                self._on_end(trailers)
