"""adc's TLS layer: a memory-BIO TLS connection on a TCP transport.

It terminates TLS for `https` virtual servers (`terminating`) and carries TLS to real
servers with a server SSL profile (`dialling`: the client side, with session resumption
and the handshake's outcome reported to the dialler).

`TLSLayer` sits between the event loop's TCP transport and the Layer-7 protocol: it is
the TCP transport's protocol and the Layer-7 protocol's transport. OpenSSL, through the
stdlib `ssl` module's memory BIOs, does all of TLS; this class moves records between
the two and keeps the transport contract the Layer-7 engine and the relay rely on.

The event loop's own TLS support (`create_server(ssl=...)`) is not used for traffic:
it drives OpenSSL through the interpreted `ssl.SSLObject` wrappers, arms a timer per
connection for the shutdown and hands the first request over one loop iteration late;
this module is compiled with the traffic path (see `adc.compiled`) and does none of that.
It also owns the handshake's failures, which the event loop reports to nobody: each one
reaches the context's `on_handshake_error(exc, layer)` with the client's address
(`layer.peer`), and the client hears OpenSSL's alert before the connection closes.

Behaviour, like a TCP transport wherever TLS allows:

- Handshake: bounded by `timeout_tls_handshake` (0 = unbounded); the protocol's
  `connection_made` comes once it has succeeded. A client that connects and leaves
  without sending a byte (a port check) is not a failure and is not reported.
- Admission: a protocol with `tls_accepted(layer) -> bool` hears of the connection when
  TCP accepts it, before any handshake work: False refuses it (the TCP connection is
  aborted, no handshake is spent on it). A connection it admitted that ends before its
  handshake completes is reported by `tls_ended()`, `connection_made` never having come.
  The Layer-7 engine counts its connections (`max_connections`) this way, as HAProxy
  counts at accept: connections in their handshake hold a slot.
- Writes are encrypted at once and handed to the TCP transport, whose buffer is the only
  one: the write-buffer size and limits, and `pause_writing`/`resume_writing`, are its own.
  Under TLS 1.3 the session tickets OpenSSL writes at the end of the handshake go out
  with the first answer rather than alone (the client sends first in HTTP).
- Reads: the records of each chunk received are decrypted and delivered in one
  `data_received`. While the protocol has paused reading, the TCP transport is paused and
  what already arrived (at most one read's worth) waits.
- Close: a close_notify alert, then the TCP transport closes once its buffer is flushed
  (the peer's close_notify is not awaited, as in HAProxy and NGINX). The peer's
  close_notify, or a FIN, ends its input: `eof_received`, and unless the protocol asks to
  stay open, close. `write_eof()` half-closes with a close_notify alert and goes on
  reading (TLS 1.3 semantics; the relay uses it to pass a half-close on).

The client side (towards real servers) differs only in the handshake: it starts at
`connection_made`, bounded by the dialler's timeout, and its outcome (success, or the
exception: a refused certificate, say) goes to the dialler's future rather than to a hook.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any, Final

from adc.runtime.deadlines import Timed

# One SSL read returns at most one record's 16 KiB. Reads ask for no more than what has
# arrived: a larger buffer would be allocated (and, above glibc's mmap threshold, mapped
# and unmapped) for every read, to hold a few hundred bytes.
MAX_READ: Final = 16384

# states
HANDSHAKE: Final = 0
OPEN: Final = 1
CLOSING: Final = 2  # close_notify sent, the TCP transport flushes and closes
CLOSED: Final = 3

_NOT_CONNECTED: Final = "-"


class TLSLayer(Timed):
    """One TLS connection: protocol of the TCP transport, transport of `protocol`.

    The server side of a client's connection by default; with `waiter`, the client side of
    a connection to a real server (see `dialling`).
    """

    def __init__(self, context: ssl.SSLContext, protocol: Any, loop: asyncio.AbstractEventLoop,
                 handshake_timeout: float = 0.0, waiter: asyncio.Future | None = None,
                 server_hostname: str | None = None, session: Any = None, resume: Any = None) -> None:
        super().__init__()  # the handshake's deadline, filed with the loop's others (adc.runtime.deadlines)
        self.context = context
        self.protocol: Any = protocol
        self.loop = loop
        self.handshake_timeout = handshake_timeout
        # client side: the handshake's outcome goes to `waiter`; `session` is resumed, and the
        # connection's own resumable session is put in `resume` = (store, key) once it is known
        self.server_side = waiter is None
        self.waiter = waiter
        self.server_hostname = server_hostname
        self.session: Any = session
        self.resume: Any = resume
        self.transport: Any = None  # the TCP transport
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj: Any = None  # the C-level TLS connection (`ssl.SSLObject._sslobj`)
        self.state = HANDSHAKE
        self.spoke = False  # the client sent bytes during the handshake (a failure is worth a report)
        self.reported = False  # its failure has been reported
        self.reading = True  # the protocol has not paused reading
        self.client_done = False  # the client's close_notify or FIN has come
        self.eof_told = False  # the protocol has had eof_received
        self.close_notify = False  # the peer's input ended with close_notify (not a bare FIN)
        self.eof_sent = False  # write_eof(): close_notify has gone out, reading goes on
        self.read_scheduled = False
        self.hold = False  # output waits for the first write (see _handshake)
        self.connected = False  # the protocol's connection_made has been called
        self.admitted = False  # the protocol's tls_accepted said yes: it hears how the connection ends
        self.error: Exception | None = None  # why the connection was aborted
        # what the SNI choice refused, for the failure report (see adc.tls.contexts)
        self.refused_sni: str | None = None
        self.no_sni_refused = False

    # -- the TCP transport's protocol --------------------------------------------------------
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        if self.server_side:
            accepted = getattr(self.protocol, "tls_accepted", None)
            if accepted is not None:
                if not accepted(self):
                    self.state = CLOSED
                    transport.abort()
                    return
                self.admitted = True
            self.sslobj = self.context._wrap_bio(  # type: ignore[attr-defined]
                self.incoming, self.outgoing, True, None, owner=None, session=None
            )
        else:
            try:
                self.sslobj = self.context._wrap_bio(  # type: ignore[attr-defined]
                    self.incoming, self.outgoing, False, self.server_hostname, owner=None, session=self.session
                )
            except (ssl.SSLError, ValueError) as exc:
                self._failed(exc)
                return
            self.session = None
            self.spoke = True  # every failure is the dialler's to hear
        if self.handshake_timeout > 0:
            self.file_deadline(self.loop, self.loop.time() + self.handshake_timeout, self.handshake_timeout)
        if not self.server_side:
            self._handshake()  # the ClientHello

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == OPEN:
            self.incoming.write(data)
            self._read()
        elif state == HANDSHAKE:
            self.incoming.write(data)
            self.spoke = True
            self._handshake()
        # CLOSING / CLOSED: what the client still sends is dropped, not kept

    def eof_received(self) -> bool:
        if self.state == HANDSHAKE:
            self._failed(ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF occurred in violation of protocol"))
            return False
        if self.state == OPEN:
            self.client_done = True
            if self.incoming.pending or self.sslobj.pending():
                # what came before the FIN goes first, then the EOF (once the protocol reads again,
                # if it has paused reading); the connection stays open until then
                self._read()
                return self.state == OPEN
            return self._end_of_input()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.drop_deadline()
        state = self.state
        self.state = CLOSED
        if state == HANDSHAKE:
            self._report(exc if exc is not None else ssl.SSLEOFError(ssl.SSL_ERROR_EOF, "EOF"))
        if self.admitted and not self.connected:  # its handshake never completed
            self.admitted = False
            protocol = self.protocol
            self.protocol = None
            protocol.tls_ended()
            return
        if self.connected:
            self.connected = False
            error = self.error
            protocol = self.protocol
            self.protocol = None  # nothing calls it again; no cycle with a protocol that keeps us
            protocol.connection_lost(exc if exc is not None else error)

    def pause_writing(self) -> None:
        if self.connected:
            self.protocol.pause_writing()

    def resume_writing(self) -> None:
        if self.connected:
            self.protocol.resume_writing()

    # -- handshake -----------------------------------------------------------------------------
    def _handshake(self) -> None:
        try:
            self.sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, OSError, ValueError) as exc:
            self._failed(exc)
            return
        self.drop_deadline()
        self.state = OPEN
        if not self.server_side:
            self._flush()
            if self.resume is not None:
                self._keep_session()  # TLS 1.2; TLS 1.3 tickets come later (see _read)
            self.connected = True
            self.protocol.connection_made(self)
            waiter, self.waiter = self.waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if self.state == OPEN and self.incoming.pending:
                self._read()
            return
        if self.sslobj.version() == "TLSv1.3":
            # What the handshake's last step wrote is the session tickets: they go out with
            # the first answer, one packet (and one wake-up of the client) fewer. Under TLS
            # 1.2 it is the server's Finished, which the client waits for.
            self.hold = True
        else:
            self._flush()
        self.connected = True
        self.protocol.connection_made(self)
        if self.state == OPEN and self.incoming.pending:
            self._read()  # the first request came with the handshake's last flight

    def _failed(self, exc: BaseException) -> None:
        """The handshake failed: report it, send OpenSSL's alert, close."""
        self.drop_deadline()
        self.state = CLOSED
        self._report(exc)
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def _report(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None:  # client side: the dialler hears it
            if not waiter.done():
                waiter.set_exception(exc)
            return
        if not self.spoke or self.reported:
            return  # connected and left without a word (a port check), or already reported
        self.reported = True
        hook = getattr(self.context, "on_handshake_error", None)
        if hook is None:
            return
        refusal = getattr(self.context, "sni_refusal", None)
        if refusal is not None:
            self.refused_sni, self.no_sni_refused = refusal.take()
        try:
            hook(exc, self)
        except Exception:  # a logging hook must never break the connection's handling
            pass

    def on_deadline(self) -> None:
        if self.state != HANDSHAKE:
            return
        left = self.deadline_at - self.loop.time()
        if left > 0.001:  # the slot came a little early (the event loop's clock counts milliseconds)
            self.file_deadline(self.loop, self.deadline_at, left)
            return
        self.spoke = True  # a silent client holding the connection is reported too
        self._failed(TimeoutError("TLS handshake timed out"))

    @property
    def peer(self) -> str:
        """The client's address for log lines ("host:port")."""
        t = self.transport
        addr = t.get_extra_info("peername") if t is not None else None
        if not addr:
            return _NOT_CONNECTED
        host, port = addr[0], addr[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # -- records in ----------------------------------------------------------------------------
    def _read(self) -> None:
        """Decrypt what has arrived and hand it to the protocol in one piece."""
        if not self.reading:
            return
        sslobj = self.sslobj
        incoming = self.incoming
        first: bytes | None = None
        more: list[bytes] | None = None
        end = False
        failure: Exception | None = None
        while True:
            size: int = incoming.pending + sslobj.pending()
            if not size:
                break
            try:
                chunk: bytes = sslobj.read(size if size < MAX_READ else MAX_READ)
            except ssl.SSLWantReadError:
                break  # the rest of a record is still on its way
            except ssl.SSLZeroReturnError:
                end = self.close_notify = True
                break
            except (ssl.SSLError, OSError) as exc:
                failure = exc
                break
            if not chunk:  # close_notify
                end = self.close_notify = True
                break
            if first is None:
                first = chunk
            elif more is None:
                more = [first, chunk]
            else:
                more.append(chunk)
        if self.outgoing.pending and not self.hold:
            self._flush()  # say, the answer to a key update
        if self.resume is not None:
            self._keep_session()
        if first is not None:
            self.protocol.data_received(first if more is None else b"".join(more))
        if self.state != OPEN:
            return
        if failure is not None:
            self.error = failure
            self.state = CLOSED
            self.transport.abort()
        elif end or self.client_done:
            # after the client's FIN, whatever is left is a record cut short: it never completes
            self._end_of_input()

    def _keep_session(self) -> None:
        """Client side: keep the session for the next connection once it can be resumed."""
        try:
            session = self.sslobj.session
        except (ValueError, AttributeError):
            return
        if session is not None and (session.has_ticket or session.id) and self.resume is not None:
            store, key = self.resume
            self.resume = None
            store.put(key, session)
            kept = getattr(self.protocol, "tls_session_kept", None)
            if kept is not None:
                kept()  # (under TLS 1.3: the server has accepted the handshake, client certificate included)

    def _end_of_input(self) -> bool:
        """The client has nothing more to send; True if the connection stays open (the protocol asks)."""
        self.client_done = True
        if self.eof_told:
            return True
        self.eof_told = True
        keep_open = bool(self.protocol.eof_received())
        if not keep_open:
            self.close()
        return keep_open

    def _read_later(self) -> None:
        self.read_scheduled = False
        if self.state == OPEN:
            self._read()

    # -- records out ---------------------------------------------------------------------------
    def _flush(self) -> None:
        if self.outgoing.pending:
            self.transport.write(self.outgoing.read())

    # -- the protocol's transport ---------------------------------------------------------------
    def write(self, data: Any) -> None:
        if self.state != OPEN or not data or self.eof_sent:
            return
        self.sslobj.write(data)
        self.hold = False
        self.transport.write(self.outgoing.read())  # with whatever was held

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        """Half-close: a close_notify alert after what was written; reading goes on.

        TLS 1.3 makes close_notify a half-close (RFC 8446, 6.1), and OpenSSL keeps
        decrypting what the peer still sends. The TCP connection stays whole until
        close(): a TCP FIN as well would add nothing the alert has not said.
        """
        if self.state != OPEN or self.eof_sent:
            return
        self.eof_sent = True
        try:
            self.sslobj.shutdown()  # writes close_notify (and asks for the client's: not awaited)
        except (ssl.SSLError, OSError, ValueError):
            pass
        self.hold = False
        self._flush()

    def close(self) -> None:
        state = self.state
        if state >= CLOSING:
            return
        self.drop_deadline()
        if state == HANDSHAKE:
            self.state = CLOSED
        else:
            self.state = CLOSING
            try:
                self.sslobj.shutdown()  # writes close_notify; the client's is not awaited
            except (ssl.SSLError, OSError, ValueError):
                pass
            self._flush()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.drop_deadline()
        self.state = CLOSED
        if self.transport is not None:
            self.transport.abort()

    def is_closing(self) -> bool:
        return self.state != OPEN

    def pause_reading(self) -> None:
        if self.reading:
            self.reading = False
            if self.transport is not None and self.state == OPEN:
                self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.reading:
            self.reading = True
            if self.state == OPEN:
                self.transport.resume_reading()
                if (self.incoming.pending or self.sslobj.pending()) and not self.read_scheduled:
                    # what arrived while paused; not from inside the protocol's own call
                    self.read_scheduled = True
                    self.loop.call_soon(self._read_later)

    def is_reading(self) -> bool:
        return self.reading and self.state == OPEN

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.transport.set_write_buffer_limits(high=high, low=low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        limits: tuple[int, int] = self.transport.get_write_buffer_limits()
        return limits

    def get_write_buffer_size(self) -> int:
        size: int = self.transport.get_write_buffer_size()
        return size + self.outgoing.pending

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def peer_certificate(self) -> bytes | None:
        """The peer's certificate (DER) once the handshake is over; None if it sent none."""
        if self.sslobj is None or self.state == HANDSHAKE:
            return None
        der: bytes | None = self.sslobj.getpeercert(True)
        return der

    def session_reused(self) -> bool:
        """The handshake resumed a session (a ticket, or a TLS 1.2 session ID)."""
        return self.sslobj is not None and self.state != HANDSHAKE and bool(self.sslobj.session_reused)

    def protocol_and_cipher(self) -> tuple[str | None, str | None]:
        """The TLS version and cipher suite agreed (OpenSSL's names); None before the handshake ends."""
        if self.sslobj is None or self.state == HANDSHAKE:
            return None, None
        cipher = self.sslobj.cipher()
        version: str | None = self.sslobj.version()
        return version, cipher[0] if cipher else None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "sslcontext":
            return self.context
        if name in ("ssl_object", "peercert", "cipher", "compression"):
            if self.sslobj is None or self.state == HANDSHAKE:
                return default
            if name == "ssl_object":
                return _ssl_object(self.sslobj)
            if name == "peercert":
                return self.sslobj.getpeercert()
            if name == "cipher":
                return self.sslobj.cipher()
            return self.sslobj.compression()
        if self.transport is None:
            return default
        return self.transport.get_extra_info(name, default)


def _ssl_object(sslobj: Any) -> ssl.SSLObject:
    """The `ssl.SSLObject` API over a C-level TLS connection (made on demand, for callers)."""
    view = ssl.SSLObject.__new__(ssl.SSLObject)
    setattr(view, "_sslobj", sslobj)
    return view


def dialling(factory: Callable[[], Any], context: ssl.SSLContext, loop: asyncio.AbstractEventLoop,
             waiter: asyncio.Future, server_hostname: str | None, session: Any = None, resume: Any = None,
             handshake_timeout: float = 0.0) -> Callable[[], TLSLayer]:
    """A protocol factory for one connection to a real server over TLS, in front of `factory`'s
    protocol: `waiter` gets the handshake's outcome (None, or the exception)."""

    def make() -> TLSLayer:
        return TLSLayer(context, factory(), loop, handshake_timeout, waiter, server_hostname, session, resume)

    return make


def terminating(factory: Callable[[], Any], context: ssl.SSLContext, loop: asyncio.AbstractEventLoop,
                handshake_timeout: float | None = None) -> Callable[[], TLSLayer]:
    """A listener's protocol factory that terminates TLS in front of `factory`'s protocols."""
    timeout = float(handshake_timeout or 0.0)

    def make() -> TLSLayer:
        return TLSLayer(context, factory(), loop, timeout)

    return make
