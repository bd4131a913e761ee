"""Layer-7 virtual servers on real sockets: routes, 404, reuse, HEAD, 426 then HTTP, failures."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Callable

import pytest

from adc.engine.l7 import HOLD_BYTES
from tests.conftest import free_port
from tests.engine.l7_servers import HttpBackend


def config(port: int, pools: dict[str, list[int]], routes: str = "", default_pool: str | None = "web", profile: str = "http") -> str:
    pool_text = ""
    for name, ports in pools.items():
        servers = ", ".join(f'{{ name = "{name}{i}", address = "127.0.0.1:{p}" }}' for i, p in enumerate(ports))
        pool_text += f"\n[pool.{name}]\nservers = [{servers}]\n"
    default = f'pool = "{default_pool}"' if default_pool else ""
    return f"""
[virtual_server.web]
listen = "127.0.0.1:{port}"
profile = "{profile}"
{default}
routes = [{routes}]
{pool_text}
"""


async def read_response(reader: asyncio.StreamReader, head_only: bool = False) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
    body = b""
    if not head_only and "content-length" in headers:
        body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    return status, headers, body


@pytest.fixture
async def http_backends():
    made: list[HttpBackend] = []

    async def make(name: str = "b") -> HttpBackend:
        b = await HttpBackend(name).start()
        made.append(b)
        return b

    yield make
    for b in made:
        b.stop()


async def test_routes_and_404(appliance_factory, http_backends):
    web, api = await http_backends("web"), await http_backends("api")
    port = free_port()
    routes = '{ host = "*.example.com", path_prefix = "/api", methods = ["GET"], pool = "api" }, { path_exact = "/admin", respond = 403 }'
    await appliance_factory(config(port, {"web": [web.port], "api": [api.port]}, routes, default_pool=None))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/v1?x=1 HTTP/1.1\r\nHost: Svc.Example.com:8080\r\n\r\n")
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"api GET /api/v1?x=1 0")
    assert api.seen[-1][2]["x-forwarded-for"] == "127.0.0.1"
    assert api.seen[-1][2]["x-forwarded-proto"] == "http"
    writer.write(b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 403 and body.startswith(b"403 Forbidden")
    writer.write(b"POST /api/v1 HTTP/1.1\r\nHost: svc.example.com\r\nContent-Length: 0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 404 and "connection" not in headers  # framing certain: kept open
    writer.write(b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
    status, headers, _ = await read_response(reader)
    assert status == 400 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert web.requests == 0


async def test_a_deny_route_holds_however_the_path_is_spelled(appliance_factory, http_backends):
    web, api = await http_backends("web"), await http_backends("api")
    port = free_port()
    routes = '{ path_prefix = "/admin", respond = 403 }, { host = "api.example.com", pool = "api" }'
    await appliance_factory(config(port, {"web": [web.port], "api": [api.port]}, routes))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for target in (b"/admin/x", b"/./admin/x", b"/x/../admin/x", b"/%61dmin/x", b"//admin/x", b"/%2E%2E/admin"):
        writer.write(b"GET %s HTTP/1.1\r\nHost: a\r\n\r\n" % target)
        status, _, _ = await read_response(reader)
        assert status == 403, target
    writer.write(b"GET /administration/../public HTTP/1.1\r\nHost: a\r\n\r\n")  # resolves to /public
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"web GET /administration/../public 0")  # sent on as the client wrote it
    writer.write(b"GET /x HTTP/1.1\r\nHost: API.example.com.:80\r\n\r\n")  # a fully qualified name
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"api GET /x 0")
    writer.close()
    assert web.requests == 1


async def test_server_connections_are_reused(appliance_factory, http_backends):
    web = await http_backends("web")
    port = free_port()
    app = await appliance_factory(config(port, {"web": [web.port]}))
    for _ in range(3):  # three client connections, ten requests each
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for i in range(10):
            writer.write(b"GET /r%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            status, _, body = await read_response(reader)
            assert status == 200 and body == b"web GET /r%d 0" % i
        writer.close()
        await writer.wait_closed()
    assert web.requests == 30
    assert web.connections == 1  # one keep-alive connection served every request
    pool = app.engine.pools["web"]
    rs = next(iter(pool.servers.values()))
    for counters in (app.stats.vs("web"), pool.counters, rs.counters):
        assert counters.requests == 30
        assert counters.responses[2] == 30


async def test_malformed_body_behind_its_head_is_400_with_an_idle_connection_ready(appliance_factory, http_backends, caplog):
    """Head and bad chunk in one read: the exchange answers 400 in the batch that asked for a
    connection, which an idle one would have satisfied at once: the 400 still goes out."""
    caplog.set_level("INFO", logger="adc")
    web = await http_backends("web")
    port = free_port()
    await appliance_factory(config(port, {"web": [web.port]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert (await read_response(reader))[0] == 200  # leaves an idle connection to the real server
    writer.write(b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert status == 400 and headers["connection"] == "close"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert "Traceback" not in caplog.text and "answered 400" in caplog.text
    assert web.requests == 1


async def test_pipelined_requests_and_head(appliance_factory, http_backends):
    web = await http_backends("web")
    port = free_port()
    await appliance_factory(config(port, {"web": [web.port]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n"
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"
        b"POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    status, headers, _ = await read_response(reader, head_only=True)
    assert status == 200 and headers["content-length"] == "1000"
    assert (await read_response(reader))[2] == b"web GET /1 0"
    assert (await read_response(reader))[2] == b"web POST /2 3"
    writer.close()


async def test_426_then_http_on_same_connection(appliance_factory, http_backends):
    web = await http_backends("web")
    web.raw["/ws"] = b"HTTP/1.1 426 Upgrade Required\r\nUpgrade: websocket\r\nContent-Length: 4\r\n\r\nnope"
    port = free_port()
    await appliance_factory(config(port, {"web": [web.port]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: MDEyMzQ1Njc4OWFiY2RlZg==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        b"GET /after HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    status, _, body = await read_response(reader)
    assert (status, body) == (426, b"nope")
    status, _, body = await read_response(reader)
    assert (status, body) == (200, b"web GET /after 0")
    assert [s[1] for s in web.seen] == ["/ws", "/after"]
    writer.close()


async def test_dead_server_retried_elsewhere_and_503(appliance_factory, http_backends):
    web = await http_backends("web")
    dead = free_port()
    port = free_port()
    await appliance_factory(config(port, {"web": [dead, web.port]}))
    for _ in range(4):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        assert (await read_response(reader))[0] == 200
        writer.close()
    port2 = free_port()
    await appliance_factory(config(port2, {"web": [dead]}).replace("virtual_server.web", "virtual_server.w2"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port2)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 503
    writer.close()


def unanswering_listener() -> tuple[socket.socket, list[socket.socket], int]:
    """A port whose accept queue is full: the kernel drops further SYNs, so a connect hangs."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(0)
    port = lst.getsockname()[1]
    fillers = []
    for _ in range(4):  # more than the queue holds (backlog 0 -> one connection)
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(("127.0.0.1", port))
        fillers.append(c)
    return lst, fillers, port


async def test_unanswered_connect_times_out_and_is_retried_elsewhere(appliance_factory, http_backends, caplog):
    web = await http_backends("web")
    lst, fillers, hung = unanswering_listener()
    try:
        port, port2 = free_port(), free_port()
        quick = '[profile.quick]\ntype = "http"\ntimeout_connect = "200ms"\n'
        await appliance_factory(config(port, {"web": [hung, web.port]}, profile="quick") + quick)
        await appliance_factory(
            config(port2, {"web": [hung]}, profile="quick").replace("virtual_server.web", "virtual_server.w2") + quick
        )
        loop = asyncio.get_running_loop()
        statuses = []
        for p in (port, port, port2):
            reader, writer = await asyncio.open_connection("127.0.0.1", p)
            started = loop.time()
            writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            status = (await read_response(reader))[0]
            statuses.append((status, loop.time() - started < 2.0))
            writer.close()
        # the hung server is tried first at most once per request, then the other one answers;
        # alone, it costs one timeout and the client gets a 503
        assert statuses == [(200, True), (200, True), (503, True)]
        assert "web1" not in caplog.text and "connect timeout" in caplog.text
    finally:
        for c in fillers:
            c.close()
        lst.close()


async def test_reused_connection_closed_by_server_is_retried(appliance_factory, http_backends):
    web = await http_backends("web")
    web.one_request_per_connection = True  # answers once, then drops the reused connection
    port = free_port()
    await appliance_factory(config(port, {"web": [web.port]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for i in range(3):
        writer.write(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
        status, _, body = await read_response(reader)
        assert (status, body) == (200, b"web GET /%d 0" % i)
    assert web.dropped == 2 and web.connections == 3
    # a POST is not retried: it gets a 502
    writer.write(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx")
    status, _, _ = await read_response(reader)
    assert status == 502
    writer.close()


async def test_request_head_timeout_408(appliance_factory, http_backends):
    web = await http_backends("web")
    port = free_port()
    text = config(port, {"web": [web.port]}, profile="quick") + """
[profile.quick]
type = "http"
timeout_http_request = "200ms"
"""
    await appliance_factory(text)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost")
    status, headers, _ = await read_response(reader)
    assert status == 408 and headers["connection"] == "close"
    writer.close()


async def test_empty_lines_do_not_keep_an_idle_connection_open(appliance_factory, http_backends):
    """RFC 9112 2.2 lets a server ignore empty lines before a request: ignored, they are no
    activity either, so timeout_client still closes a client that sends nothing else."""
    web = await http_backends("web")
    port = free_port()
    await appliance_factory(config(port, {"web": [web.port]}, profile="quick") + """
[profile.quick]
type = "http"
timeout_client = "300ms"
""")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")  # one before a request is fine
    assert (await read_response(reader))[0] == 200
    closed = False
    for _ in range(30):  # bounded: 3 s of an empty line every 0.1 s
        writer.write(b"\r\n")
        try:
            closed = await asyncio.wait_for(reader.read(), 0.1) == b""
        except asyncio.TimeoutError:
            continue
        break
    assert closed
    writer.close()


async def test_idle_server_connections_expire_after_timeout_server_idle(appliance_factory, http_backends):
    web = await http_backends("web")
    port = free_port()
    app = await appliance_factory(
        config(port, {"web": [web.port]}, profile="quick")
        + '[profile.quick]\ntype = "http"\ntimeout_server_idle = "200ms"\n'
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    writer.write(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    assert web.connections == 1  # reused while fresh
    from adc.engine.l7 import idle_connections

    assert idle_connections(app.engine).count() == 1
    deadline = asyncio.get_running_loop().time() + 3
    while idle_connections(app.engine).count() and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert idle_connections(app.engine).count() == 0  # expired and closed
    writer.write(b"GET /c HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (await read_response(reader))[0] == 200
    assert web.connections == 2
    writer.close()


async def test_many_pipelined_requests_are_all_answered_in_order(appliance_factory, http_backends):
    web = await http_backends("web")
    port = free_port()
    await appliance_factory(config(port, {"web": [web.port]}, routes='{ path_prefix = "/deny", respond = 403 }'))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    burst = b"".join(
        (b"GET /deny/%d HTTP/1.1\r\nHost: a\r\n\r\n" if i % 3 else b"GET /ok/%d HTTP/1.1\r\nHost: a\r\n\r\n") % i
        for i in range(100)
    )
    writer.write(burst)  # more than one batch of answers made by the appliance, mixed with proxied ones
    for i in range(100):
        status, _, body = await read_response(reader)
        assert status == (403 if i % 3 else 200), i
        if status == 200:
            assert body == b"web GET /ok/%d 0" % i
    writer.close()


async def test_output_of_small_inputs_waits_for_the_end_of_the_iteration_and_large_inputs_write_at_once(
    appliance_factory,
):
    from adc.engine.l7 import DEFER_WRITES_BELOW, outbox

    port = free_port()
    app = await appliance_factory(config(port, {}, default_pool=None))  # every request gets a 404
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    vs = app.engine.virtual_servers["web"]
    deadline = asyncio.get_running_loop().time() + 5
    while not vs.connections and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    (conn,) = vs.connections
    box = outbox(app.engine)

    # a small input: the answer waits in the outbox, then goes out when the loop turns
    conn.data_received(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n")
    assert conn in box.pending and conn.to_client
    status, _, _ = await read_response(reader)
    assert status == 404 and not box.pending and not conn.to_client

    # a large input: its answers are written before data_received returns (bounded memory)
    one = b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n"
    burst = one * (DEFER_WRITES_BELOW // len(one) + 1)
    conn.data_received(burst)
    assert conn not in box.pending and not conn.to_client
    for _ in range(len(burst) // len(one)):  # the rest come with proceed(), all in order
        assert (await read_response(reader))[0] == 404
    writer.close()


class AnsweringAtAccept:
    """A real server that answers (`send(conn)`) the moment it accepts, from the event loop's
    poll, before reading anything; a plain socket, so a test controls every byte and close."""

    def __init__(self, send: Callable[[socket.socket], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.send = send
        self.loop.add_reader(self.listener.fileno(), self._accept)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        self.accepted.append(conn)
        self.send(conn)

    def close(self) -> None:
        self.loop.remove_reader(self.listener.fileno())
        self.listener.close()
        for conn in self.accepted:
            conn.close()


async def _asked_at_accept(appliance_factory, send: Callable[[socket.socket], None]):
    """(server, reader, writer, appliance): an appliance in front of an AnsweringAtAccept server, asked `GET /`."""
    server = AnsweringAtAccept(send)
    port = free_port()
    app = await appliance_factory(config(port, {"web": [server.port]}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
    return server, reader, writer, app


async def test_answer_before_the_connection_is_handed_over_is_kept_in_order(appliance_factory, caplog):
    """A real server that answers (or ends) the moment it accepts, before reading the request.

    It accepts from the event loop's poll, so what it sends is there as soon as the
    appliance starts reading the new connection, before that connection is handed over
    to the client that asked for it: the answer is held and passed on at the handover,
    body then end; an end alone must reach the client too (502), not wait for timeout_server.
    """
    answer = [b"HTTP/1.1 200 OK\r\nX-Early: 1\r\n\r\nearly body"]

    def send(conn: socket.socket) -> None:
        conn.sendall(answer[0])
        conn.shutdown(socket.SHUT_WR)

    server = AnsweringAtAccept(send)
    port = free_port()
    app = await appliance_factory(config(port, {"web": [server.port]}))
    try:
        for i in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
            status, headers, _ = await read_response(reader, head_only=True)
            assert status == 200 and headers["x-early"] == "1"
            assert await asyncio.wait_for(reader.read(), 5) == b"early body"  # then the close
            writer.close()
        # the request heads went out with the connections and arrived whole
        heads = [conn.recv(4096) for conn in server.accepted]
        assert [h.split(b"\r\n")[0] for h in heads] == [b"GET /%d HTTP/1.1" % i for i in range(5)]
        assert heads[0].endswith(b"\r\n\r\n")
        assert app.engine.pools["web"].counters.bytes_in == sum(map(len, heads))

        answer[0] = b""  # the end alone
        caplog.set_level("INFO", logger="adc")
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /end HTTP/1.1\r\nHost: a\r\n\r\n")
        status, _, _ = await read_response(reader)
        assert status == 502
        writer.close()
        # the server failed after the connect: the line names it
        assert re.search(rf"answered 502: pool web server web0 \(127\.0\.0\.1:{server.port}\): \S", caplog.text), caplog.text
    finally:
        server.close()


async def test_a_large_answer_before_the_handover_arrives_whole_and_in_order(appliance_factory):
    """More than HOLD_BYTES before the handover: reading pauses there, nothing is lost or reordered."""
    body = bytes(range(256)) * 4096  # 1 MiB
    assert len(body) > HOLD_BYTES

    def send(conn: socket.socket) -> None:
        def blocking() -> None:  # the appliance reads as it can; this thread waits for it
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            conn.shutdown(socket.SHUT_WR)

        threading.Thread(target=blocking, daemon=True).start()

    server, reader, writer, _ = await _asked_at_accept(appliance_factory, send)
    try:
        status, headers, got = await asyncio.wait_for(read_response(reader), 10)
        assert status == 200 and int(headers["content-length"]) == len(body)
        assert got == body
        writer.close()
    finally:
        server.close()


async def test_an_answer_cut_short_ends_the_client_with_a_reset(appliance_factory, caplog):
    """A real server that closes in the middle of its answer: the client gets what came,
    then a reset, never a clean end that could pass the part for the whole (RFC 9112 §9.8).
    The operator hears which server cut it short, and it counts as an error (HAProxy's srv_abrt)."""
    def send(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        conn.close()

    server, reader, writer, app = await _asked_at_accept(appliance_factory, send)
    try:
        status, headers, _ = await read_response(reader, head_only=True)
        assert status == 200 and headers["content-length"] == "10"
        got = b""
        with pytest.raises(ConnectionResetError):
            for _ in range(10):  # bounded: the part, then the reset
                chunk = await asyncio.wait_for(reader.read(100), 5)
                assert chunk, "a clean end after a cut answer"
                got += chunk
        assert got in (b"", b"abc")  # a reset may overtake the part in the client's buffer
        writer.close()
        assert re.search(rf"virtual_server web: 127\.0\.0\.1:\d+: pool web server web0 \(127\.0\.0\.1:{server.port}\):"
                         r" answer cut short: \S", caplog.text), caplog.text
        assert app.stats.vs("web").errors["aborted"] == 1
        assert app.engine.pools["web"].servers["web0"].counters.errors["aborted"] == 1
    finally:
        server.close()


async def test_redirect_routes(appliance_factory, http_backends):
    """Plain HTTP sent to TLS, as `return 301 https://$host$request_uri` does: the appliance answers."""
    web = await http_backends("web")
    port = free_port()
    routes = ('{ path_prefix = "/account", redirect = "https://{host}:8443{uri}", redirect_code = 308 }, '
              '{ path_prefix = "/old", redirect = "/new{path}" }, '
              '{ path_exact = "/docs", redirect = "{path}/", redirect_code = 301 }')
    app = await appliance_factory(config(port, {"web": [web.port]}, routes))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /account/me?tab=keys HTTP/1.1\r\nHost: Shop.Example.com:8080\r\n\r\n")
    status, headers, body = await read_response(reader)
    assert status == 308 and headers["location"] == "https://shop.example.com:8443/account/me?tab=keys"
    assert body == b"308 Permanent Redirect: https://shop.example.com:8443/account/me?tab=keys\n"
    assert "cache-control" not in headers and "connection" not in headers  # kept open, may be remembered
    # absolute form and an IPv6 literal; HEAD has no body
    writer.write(b"HEAD http://[::1]:8080/account?x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n")
    status, headers, _ = await read_response(reader, head_only=True)
    assert (status, headers["location"]) == (308, "https://[::1]:8443/account?x")
    writer.write(b"GET /old/page?q=1 HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert (status, headers["location"]) == (302, "/new/old/page")
    # a target whose normalised path the route matches, starting "//": never a Location that a
    # browser reads as another host (RFC 3986 §4.2), with "/\\" as browsers read it too
    writer.write(b"GET //evil.example/../docs HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert (status, headers["location"]) == (301, "/evil.example/../docs/")
    writer.write(b"GET /\\evil.example/../docs HTTP/1.1\r\nHost: a\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert (status, headers["location"]) == (301, "/evil.example/../docs/")
    # a WebSocket upgrade on a redirect route is redirected, not tunnelled
    writer.write(b"GET /account/ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
    status, headers, _ = await read_response(reader)
    assert (status, headers["location"]) == (308, "https://a:8443/account/ws")
    writer.close()
    # HTTP/1.0 without Host: no host to send it to
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /account HTTP/1.0\r\n\r\n")
    status, _, body = await read_response(reader)
    assert status == 400 and b"needs a Host" in body
    writer.close()
    assert web.requests == 0
    counters = app.engine.stats.vs("web")
    assert counters.responses[3] == 6 and counters.responses[4] == 1
