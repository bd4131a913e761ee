"""The admin API: HTTP/1.1 + JSON on a Unix socket (owner-only) or a TCP address (bearer token).

Requests are parsed with httptools and bounded (head and body sizes, connections,
idle time). Handlers only read runtime objects or call the one place that changes
them (`PoolRuntime.set_state/set_weight`, `Session.closer`, `Appliance.reload`).
The contract is docs/admin-api.md.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import inspect
import json
import logging
import os
import socket
import stat
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, unquote

import httptools

from adc import __version__, compiled
from adc.config.model import MAX_WEIGHT, ServerState
from adc.runtime import metrics

if TYPE_CHECKING:
    from adc.appliance import Appliance

log = logging.getLogger("adc.admin")

MAX_HEAD = 16 * 1024
READ_BYTES = 65536  # one read from an admin client
MAX_BODY = 1024 * 1024
MAX_CONNECTIONS = 64
IDLE_TIMEOUT = 60.0
UNIX_PATH_MAX = 100  # sun_path is 108 bytes; longer paths are reached through /proc/self/fd

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict",
    411: "Length Required", 413: "Payload Too Large", 422: "Unprocessable Entity", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}


class AdminListenError(Exception):
    pass


class HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class Request:
    __slots__ = ("method", "url", "path", "query", "headers", "body", "keep_alive")

    def __init__(self) -> None:
        self.method = ""
        self.url = b""
        self.path = ""
        self.query: dict[str, list[str]] = {}
        self.headers: dict[str, str] = {}
        self.body = bytearray()
        self.keep_alive = True

    def json(self) -> Any:
        if not self.body:
            return {}
        ctype = self.headers.get("content-type", "application/json")
        if "json" not in ctype:
            raise HTTPError(400, f"body must be application/json, not {ctype}")
        try:
            return json.loads(self.body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"malformed JSON body: {exc}") from None

    def arg_int(self, name: str, default: int, low: int = 0, high: int = 1 << 62) -> int:
        values = self.query.get(name)
        if not values:
            return default
        text = values[-1]
        if not text.lstrip("-").isdigit():
            raise HTTPError(400, f"{name}: must be an integer, got {text!r}")
        value = int(text)
        if not low <= value <= high:
            raise HTTPError(400, f"{name}: must be {low}..{high}")
        return value


class Response:
    __slots__ = ("status", "body", "content_type", "headers")

    def __init__(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.headers = headers or {}

    @classmethod
    def json(cls, status: int, obj: Any, headers: dict[str, str] | None = None) -> "Response":
        body = json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"
        return cls(status, body, "application/json", headers)

    def encode(self, keep_alive: bool) -> bytes:
        lines = [
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}",
            f"Content-Type: {self.content_type}",
            f"Content-Length: {len(self.body)}",
            "Cache-Control: no-store",
            f"Connection: {'keep-alive' if keep_alive else 'close'}",
        ]
        lines.extend(f"{k}: {v}" for k, v in self.headers.items())
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + self.body


class _Parser:
    """httptools callbacks collecting complete, bounded requests."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.current: Request | None = None
        self.done: list[Request] = []
        self.head = 0
        self.raw_head = 0  # bytes fed since the current request began (whole reads)
        self.error: HTTPError | None = None

    def feed(self, data: bytes) -> None:
        self.raw_head += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise HTTPError(400, "protocol upgrades are not supported here") from None
        except httptools.HttpParserError as exc:
            if self.error is not None:
                raise self.error from None
            raise HTTPError(400, f"malformed request: {exc}") from None
        if self.current is not None and not self.current.method and self.raw_head > MAX_HEAD + READ_BYTES:
            # an unfinished header line is buffered by the parser, not seen by on_header
            raise HTTPError(431, f"request line and headers exceed {MAX_HEAD} bytes")

    def _fail(self, error: HTTPError) -> None:
        self.error = error
        raise error

    def on_message_begin(self) -> None:
        self.current = Request()
        self.head = 0
        self.raw_head = 0

    def on_url(self, url: bytes) -> None:
        assert self.current is not None
        self.head += len(url)
        if self.head > MAX_HEAD:
            self._fail(HTTPError(431, f"request line and headers exceed {MAX_HEAD} bytes"))
        self.current.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.current is not None
        self.head += len(name) + len(value) + 4
        if self.head > MAX_HEAD:
            self._fail(HTTPError(431, f"request line and headers exceed {MAX_HEAD} bytes"))
        self.current.headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        req = self.current
        assert req is not None
        req.method = self.parser.get_method().decode("latin-1")
        length = req.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            self._fail(HTTPError(413, f"body exceeds {MAX_BODY} bytes"))

    def on_body(self, body: bytes) -> None:
        req = self.current
        assert req is not None
        if len(req.body) + len(body) > MAX_BODY:
            self._fail(HTTPError(413, f"body exceeds {MAX_BODY} bytes"))
        req.body += body

    def on_message_complete(self) -> None:
        req = self.current
        assert req is not None
        req.keep_alive = self.parser.should_keep_alive()
        self.done.append(req)
        self.current = None


Handler = Callable[..., Any]


class AdminServer:
    """Serves the admin API for one appliance."""

    def __init__(self, appliance: "Appliance"):
        self.appliance = appliance
        self.server: asyncio.AbstractServer | None = None
        self.address = ""  # as configured, made absolute for unix sockets
        self.unix_path: str | None = None
        self.tcp = False
        self._dirfd: int | None = None
        self._clients: set[asyncio.Task] = set()
        self.routes: list[tuple[tuple[str, ...], dict[str, Handler]]] = [
            (("api", "v1", "status"), {"GET": self.get_status}),
            (("api", "v1", "virtual_servers"), {"GET": self.get_virtual_servers}),
            (("api", "v1", "virtual_servers", "*"), {"GET": self.get_virtual_server}),
            (("api", "v1", "pools"), {"GET": self.get_pools}),
            (("api", "v1", "pools", "*"), {"GET": self.get_pool}),
            (("api", "v1", "pools", "*", "servers", "*"), {"GET": self.get_server, "POST": self.post_server}),
            (("api", "v1", "sessions"), {"GET": self.get_sessions}),
            (("api", "v1", "sessions", "*"), {"GET": self.get_session, "DELETE": self.delete_session}),
            (("api", "v1", "reload"), {"POST": self.post_reload}),
            (("api", "v1", "events"), {"GET": self.get_events}),
            (("api", "v1", "certificates"), {"GET": self.get_certificates}),
            (("metrics",), {"GET": self.get_metrics}),
        ]

    # ------------------------------------------------------------------ listening

    async def start(self) -> None:
        settings = self.appliance.config.appliance
        admin = settings.admin
        if admin.startswith("unix:"):
            path = Path(admin[5:])
            if not path.is_absolute():
                path = self.appliance.config.base_dir / path
            self.address = f"unix:{path}"
            sock = self._bind_unix(path)
            self.server = await asyncio.start_unix_server(self._client, sock=sock)
            self.unix_path = str(path)
        else:
            from adc.config.load import parse_address

            address = parse_address(admin, allow_port_zero=True)
            self.tcp = True
            try:
                self.server = await asyncio.start_server(
                    self._client, address.host, address.port, reuse_address=True,
                    family=socket.AF_INET6 if ":" in address.host else socket.AF_UNSPEC,
                )
            except OSError as exc:
                raise AdminListenError(f"{self._where()}: cannot listen on {admin}: {exc.strerror or exc}") from None
            host, port = self.server.sockets[0].getsockname()[:2]
            self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        log.info("admin API on %s", self.address)

    def _where(self) -> str:
        from adc.engine.listener import file_name

        return f"{file_name(self.appliance.config.source)}: appliance.admin"

    def _bind_unix(self, path: Path) -> socket.socket:
        """Bind an owner-only Unix socket; create the directory; replace a stale socket."""
        where = f"{self._where()}: unix:{path}"
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise AdminListenError(f"{where}: cannot create {path.parent}: {exc.strerror or exc}") from None
        bind_path = str(path)
        if len(bind_path.encode()) > UNIX_PATH_MAX:
            self._dirfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            bind_path = f"/proc/self/fd/{self._dirfd}/{path.name}"
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise AdminListenError(f"{where}: exists and is not a socket")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(0.5)
                probe.connect(bind_path)
            except OSError:
                os.unlink(path)  # stale: nobody answers
            else:
                raise AdminListenError(f"{where}: in use by another running appliance")
            finally:
                probe.close()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(bind_path)
            os.chmod(path, 0o600)  # before listen(): nobody can connect yet
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise AdminListenError(f"{where}: {exc.strerror or exc}") from None
        sock.setblocking(False)
        return sock

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in list(self._clients):
            task.cancel()
        if self._clients:
            await asyncio.gather(*self._clients, return_exceptions=True)
        if self.unix_path is not None:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass
            self.unix_path = None
        if self._dirfd is not None:
            os.close(self._dirfd)
            self._dirfd = None

    # ------------------------------------------------------------------ connections

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._clients) >= MAX_CONNECTIONS:
            writer.write(Response.json(503, {"error": "too many admin connections"}).encode(False))
            writer.close()
            return
        assert task is not None
        self._clients.add(task)
        parser = _Parser()
        loop = asyncio.get_running_loop()
        try:
            while True:
                # one deadline per request (not per read): a client trickling bytes cannot hold a slot
                deadline = loop.time() + IDLE_TIMEOUT
                try:
                    while not parser.done:
                        data = await asyncio.wait_for(reader.read(READ_BYTES), max(0.0, deadline - loop.time()))
                        if not data:
                            break
                        parser.feed(data)
                except (asyncio.TimeoutError, TimeoutError):
                    break
                except HTTPError as exc:
                    log.warning("admin: %s: %s", exc.status, exc.message)
                    writer.write(Response.json(exc.status, {"error": exc.message}).encode(False))
                    await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT)
                    break
                if not parser.done:
                    break  # the client closed
                keep = True
                while parser.done:
                    req = parser.done.pop(0)
                    resp = await self.handle(req)
                    keep = req.keep_alive
                    writer.write(resp.encode(keep))
                    await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT)  # a client that never reads
                    if not keep:
                        break
                if not keep:
                    break
        except (ConnectionError, OSError, asyncio.TimeoutError, TimeoutError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._clients.discard(task)
            writer.transport.abort() if writer.transport.get_write_buffer_size() else writer.close()

    async def handle(self, req: Request) -> Response:
        try:
            url = httptools.parse_url(req.url)
        except httptools.HttpParserInvalidURLError:
            return Response.json(400, {"error": "malformed URL"})
        req.path = (url.path or b"/").decode("latin-1")
        req.query = parse_qs((url.query or b"").decode("latin-1"))
        try:
            self._authorize(req)
            handler, params = self._route(req)
            result = handler(req, *params)
            if inspect.isawaitable(result):
                result = await result
            return result if isinstance(result, Response) else Response.json(200, result)
        except HTTPError as exc:
            if exc.status >= 400:
                log.warning("admin: %s %s -> %d %s", req.method, req.path, exc.status, exc.message)
            return Response.json(exc.status, {"error": exc.message}, exc.headers)
        except Exception:
            log.exception("admin: %s %s failed", req.method, req.path)
            return Response.json(500, {"error": "internal error (see the appliance log)"})

    def _authorize(self, req: Request) -> None:
        if not self.tcp:
            return  # the Unix socket is owner-only
        token = self.appliance.config.appliance.admin_token
        given = req.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if not token or scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            raise HTTPError(401, "missing or wrong bearer token" if given else "authorization required (Bearer token)",
                            {"WWW-Authenticate": 'Bearer realm="adc"'})

    def _route(self, req: Request) -> tuple[Handler, list[str]]:
        parts = tuple(unquote(p) for p in req.path.strip("/").split("/")) if req.path.strip("/") else ()
        for pattern, methods in self.routes:
            if len(pattern) != len(parts):
                continue
            params = []
            for want, got in zip(pattern, parts):
                if want == "*":
                    params.append(got)
                elif want != got:
                    break
            else:
                handler = methods.get(req.method)
                if handler is None:
                    allowed = ", ".join(methods)
                    raise HTTPError(405, f"{req.method} not allowed here (allowed: {allowed})", {"Allow": allowed})
                return handler, params
        raise HTTPError(404, f"no such endpoint: {req.path}")

    # ------------------------------------------------------------------ handlers

    def get_status(self, req: Request) -> dict[str, Any]:
        app = self.appliance
        stats = app.stats
        totals = {"conn_current": 0, "conn_total": 0, "requests": 0, "bytes_in": 0, "bytes_out": 0,
                  "tunnels_current": 0}
        for c in stats.snapshot()["virtual_servers"].values():
            for key in totals:
                totals[key] += c[key]
        kinds = {"l4": 0, "tunnel": 0}
        for s in stats.sessions.values():
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        return {
            "name": app.config.appliance.name,
            "version": __version__,
            "traffic_path": compiled.status(),  # compiled with mypyc, or pure Python and why
            "pid": os.getpid(),
            "uptime": round(time.time() - stats.started, 3),
            "started": stats.started,
            "config_file": str(app.config.source),
            "generation": app.generation,
            "reloaded": app.reloaded,
            "admin": self.address,
            "virtual_servers": len(app.engine.virtual_servers),
            "pools": len(app.engine.pools),
            "sessions": kinds,
            "totals": totals,
        }

    def _vs_view(self, vs: Any, snapshot: dict[str, Any]) -> dict[str, Any]:
        view = vs.view()
        view["counters"] = snapshot["virtual_servers"].get(vs.name) or vs.counters.snapshot()
        return view

    def get_virtual_servers(self, req: Request) -> dict[str, Any]:
        snap = self.appliance.stats.snapshot()
        return {"virtual_servers": [self._vs_view(vs, snap) for vs in self.appliance.engine.virtual_servers.values()]}

    def get_virtual_server(self, req: Request, name: str) -> dict[str, Any]:
        vs = self.appliance.engine.virtual_servers.get(name)
        if vs is None:
            raise HTTPError(404, f"no virtual server {name!r}")
        return self._vs_view(vs, self.appliance.stats.snapshot())

    def _pool_view(self, pool: Any, snap: dict[str, Any]) -> dict[str, Any]:
        view = pool.view()
        view["counters"] = snap["pools"].get(pool.name) or pool.counters.snapshot()
        for sv in view["servers"]:
            sv["counters"] = snap["servers"].get(f"{pool.name}/{sv['name']}") or pool.servers[sv["name"]].counters.snapshot()
        return view

    def _pool(self, name: str) -> Any:
        pool = self.appliance.engine.pools.get(name)
        if pool is None:
            raise HTTPError(404, f"no pool {name!r}")
        return pool

    def _server(self, pool_name: str, server: str) -> tuple[Any, Any]:
        pool = self._pool(pool_name)
        rs = pool.servers.get(server)
        if rs is None:
            raise HTTPError(404, f"pool {pool_name!r} has no server {server!r}")
        return pool, rs

    def get_pools(self, req: Request) -> dict[str, Any]:
        snap = self.appliance.stats.snapshot()
        return {"pools": [self._pool_view(p, snap) for p in self.appliance.engine.pools.values()]}

    def get_pool(self, req: Request, name: str) -> dict[str, Any]:
        return self._pool_view(self._pool(name), self.appliance.stats.snapshot())

    def _server_view(self, pool: Any, rs: Any) -> dict[str, Any]:
        view = rs.view()
        view["pool"] = pool.name
        view["counters"] = self.appliance.stats.snapshot()["servers"].get(f"{pool.name}/{rs.name}") \
            or rs.counters.snapshot()
        return view

    def get_server(self, req: Request, pool_name: str, server: str) -> dict[str, Any]:
        pool, rs = self._server(pool_name, server)
        return self._server_view(pool, rs)

    def post_server(self, req: Request, pool_name: str, server: str) -> dict[str, Any]:
        pool, rs = self._server(pool_name, server)
        body = req.json()
        if not isinstance(body, dict):
            raise HTTPError(400, "body must be a JSON object like {\"state\": \"draining\"} or {\"weight\": 3}")
        unknown = sorted(set(body) - {"state", "weight"})
        if unknown:
            raise HTTPError(400, f"unknown field {unknown[0]!r} (allowed: state, weight)")
        if not body:
            raise HTTPError(400, "nothing to change: give state and/or weight")
        state = None
        if "state" in body:
            try:
                state = ServerState(body["state"])
            except ValueError:
                raise HTTPError(400, "state: must be one of " + ", ".join(s.value for s in ServerState)) from None
        weight = None
        if "weight" in body:
            weight = body["weight"]
            if not isinstance(weight, int) or isinstance(weight, bool) or not 0 <= weight <= MAX_WEIGHT:
                raise HTTPError(400, f"weight: must be an integer 0..{MAX_WEIGHT}")
        events = self.appliance.events
        if state is not None and state is not rs.state:
            before = rs.state.value
            pool.set_state(server, state)
            events.add("state", f"pool {pool.name} server {server}: state {before} -> {state.value} (admin API)",
                       pool=pool.name, server=server)
        if weight is not None and weight != rs.weight:
            before_w = rs.weight
            pool.set_weight(server, weight)
            events.add("state", f"pool {pool.name} server {server}: weight {before_w} -> {weight} (admin API)",
                       pool=pool.name, server=server)
        return self._server_view(pool, rs)

    def get_sessions(self, req: Request) -> dict[str, Any]:
        kinds = req.query.get("kind")
        kind = kinds[-1] if kinds else None
        if kind not in (None, "tunnel", "l4"):
            raise HTTPError(400, "kind: must be tunnel or l4")
        now = time.monotonic()
        sessions = [s.view(now) for s in self.appliance.stats.sessions.values() if kind is None or s.kind == kind]
        return {"sessions": sessions}

    def _session(self, ident: str) -> Any:
        if not ident.isdigit():
            raise HTTPError(400, f"session id must be a number, got {ident!r}")
        session = self.appliance.stats.sessions.get(int(ident))
        if session is None:
            raise HTTPError(404, f"no live session {ident}")
        return session

    def get_session(self, req: Request, ident: str) -> dict[str, Any]:
        return self._session(ident).view(time.monotonic())

    def delete_session(self, req: Request, ident: str) -> dict[str, Any]:
        session = self._session(ident)
        if session.closer is None:
            raise HTTPError(409, f"session {ident} cannot be closed yet")
        what = "tunnel" if session.kind == "tunnel" else "session"
        self.appliance.events.add(
            "session", f"{what} {session.id} of {session.client} closed by the admin API",
            virtual_server=session.virtual_server, pool=session.pool, server=session.server,
        )
        session.closer("closed by admin")
        return {"closed": session.id}

    async def post_reload(self, req: Request) -> Response:
        result = await self.appliance.reload()
        return Response.json(200 if result["ok"] else 422, result)

    def get_events(self, req: Request) -> dict[str, Any]:
        limit = req.arg_int("limit", 100, 1, 1000)
        since = req.arg_int("since", 0)
        return {"events": self.appliance.events.recent(limit, since)}

    def get_certificates(self, req: Request) -> dict[str, Any]:
        return {"certificates": certificates_in_use(self.appliance)}

    def get_metrics(self, req: Request) -> Response:
        return Response(200, metrics.render_metrics(self.appliance).encode(), metrics.CONTENT_TYPE)



def certificates_in_use(appliance: "Appliance") -> list[dict[str, Any]]:
    """Certificate files referenced by the configuration, with subject, names and expiry."""
    from cryptography import x509

    from adc.tls.certs import _CRL_PEM, _crl_row, _key_desc, _name, cert_names

    config = appliance.config
    used: dict[Path, list[str]] = {}
    used_profiles = {vs.profile for vs in config.virtual_servers.values()}
    used_ssl = {p.server_ssl for p in config.pools.values() if p.server_ssl}
    for profile in config.profiles.values():
        if profile.client_ssl is None or profile.name not in used_profiles:
            continue
        for pair in profile.client_ssl.certificates:
            used.setdefault(pair.cert, []).append(f"profile {profile.name}")
        if profile.client_ssl.client_ca is not None:
            used.setdefault(profile.client_ssl.client_ca, []).append(f"profile {profile.name} client_ca")
        if profile.client_ssl.client_crl is not None:
            used.setdefault(profile.client_ssl.client_crl, []).append(f"profile {profile.name} client_crl")
    for s in config.server_ssl.values():
        if s.name not in used_ssl:
            continue
        if s.cert is not None:
            used.setdefault(s.cert, []).append(f"server_ssl {s.name}")
        if s.ca is not None:
            used.setdefault(s.ca, []).append(f"server_ssl {s.name} ca")
        if s.crl is not None:
            used.setdefault(s.crl, []).append(f"server_ssl {s.name} crl")
    now = dt.datetime.now(dt.timezone.utc)
    out: list[dict[str, Any]] = []
    for path, users in used.items():
        entry: dict[str, Any] = {"file": str(path), "used_by": users}
        try:
            data = path.read_bytes()
            if _CRL_PEM.search(data):  # a revocation list: out of date at its next update
                row = _crl_row(path.name, data, now)
                entry.update({"subject": row.subject, "names": [], "issuer": row.issuer, "key_type": "CRL",
                              "not_after": row.not_after.strftime("%Y-%m-%dT%H:%M:%SZ"), "days_left": row.days_left})
                out.append(entry)
                continue
            cert = x509.load_pem_x509_certificates(data)[0]
        except (OSError, ValueError) as exc:
            entry["error"] = f"cannot read certificate: {getattr(exc, 'strerror', None) or exc}"
            out.append(entry)
            continue
        not_after = cert.not_valid_after_utc
        entry.update({
            "subject": _name(cert.subject),
            "names": list(cert_names(cert)),
            "issuer": "self-signed" if cert.issuer == cert.subject else _name(cert.issuer),
            "key_type": _key_desc(cert.public_key()),
            "not_after": not_after.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "days_left": (not_after - now) // dt.timedelta(days=1),
        })
        out.append(entry)
    return out
