"""The `tcp` profile: accept, pick a real server, connect, relay."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, cast

from adc.engine.connect import NoServerAvailable, connect_server, peer_text
from adc.pools.balancers import PickContext
from adc.relay import Relay
from adc.runtime.loglimit import limited
from adc.runtime.stats import Session

if TYPE_CHECKING:
    from adc.engine.engine import VirtualServerRuntime
    from adc.pools.pool import RealServerRuntime

log = logging.getLogger("adc.l4")


class L4Accept(asyncio.Protocol):
    """Accepts one client connection, then hands its transport to a `Relay`."""

    __slots__ = ("vs", "relay", "task", "server", "client_ip")

    def __init__(self, vs: "VirtualServerRuntime"):
        self.vs = vs
        self.relay: Relay | None = None
        self.task: asyncio.Task | None = None
        self.server: RealServerRuntime | None = None
        self.client_ip = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        vs = self.vs
        counters = vs.counters
        if vs.stopping or (vs.config.max_connections and counters.conn_current >= vs.config.max_connections):
            vs.refuse()
            transport.abort()  # type: ignore[attr-defined]
            return
        counters.conn_current += 1
        counters.conn_total += 1
        self.client_ip, client = peer_text(transport)
        profile = vs.profile
        session = Session("l4", client, vs.name, counters, time.monotonic())
        relay = Relay(
            session,
            idle_timeout=min(t for t in (profile.timeout_client, profile.timeout_server) if t > 0)
            if (profile.timeout_client > 0 or profile.timeout_server > 0) else 0.0,
            client_fin_timeout=profile.timeout_client_fin,
            server_fin_timeout=profile.timeout_server_fin,
            high_water=profile.buffer_bytes,
            on_close=self._closed,
        )
        self.relay = relay
        transport.set_protocol(cast(asyncio.BaseProtocol, relay.client))
        relay._attach(relay.client, transport)  # type: ignore[arg-type]
        vs.connections.add(self)
        vs.engine.stats.open_session(session)
        self.task = asyncio.ensure_future(self._connect())

    async def _connect(self) -> None:
        relay = self.relay
        assert relay is not None
        vs = self.vs
        pool = vs.engine.pools.get(vs.config.pool or "")
        if pool is None:  # removed by a reload while this connection was accepted
            log.warning("virtual_server %s: client %s closed: pool %s no longer exists", vs.name,
                        relay.session.client, vs.config.pool)
            relay.close("no pool", abort=True)
            return
        relay.session.pool = pool.name
        relay.session.pool_counters = pool.counters
        try:
            rs, _transport, _protocol = await connect_server(
                pool, PickContext(client_ip=self.client_ip), vs.profile, lambda: relay.server
            )
        except NoServerAvailable as exc:
            vs.counters.error("no_server")
            limited(vs.limits, "no_server", log).log("virtual_server %s: client %s closed: %s", vs.name,
                                                     relay.session.client, exc.reason)
            relay.close("no server: " + exc.reason, abort=True)
            return
        except Exception:  # a bug must cost this session, not leave the client hanging
            log.exception("virtual_server %s: client %s: connecting to pool %s failed", vs.name,
                          relay.session.client, pool.name)
            relay.close("internal error", abort=True)
            return
        self.server = rs
        relay.session.server = rs.name
        relay.session.server_counters = rs.counters
        if relay.closed:  # the client went away while we were connecting
            if relay.server.transport is not None:
                relay.server.transport.close()
            self._release()
            return
        relay.start()

    def _release(self) -> None:
        if self.server is not None:
            self.server.pool.drop(self.server)
            self.server = None

    def _closed(self, relay: Relay, reason: str) -> None:
        vs = self.vs
        vs.counters.conn_current -= 1
        vs.connections.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self._release()
        session = relay.session
        vs.engine.stats.close_session(session)
        vs.engine.access_log.log({
            "kind": "l4",
            "client": session.client,
            "vs": vs.name,
            "pool": session.pool,
            "server": session.server,
            "bytes_in": session.bytes_in,
            "bytes_out": session.bytes_out,
            "duration": time.monotonic() - session.started,
            "end": reason,
        })

    def close(self, reason: str = "closed") -> None:
        if self.relay is not None:
            self.relay.close(reason)
