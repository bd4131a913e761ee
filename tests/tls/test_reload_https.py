"""Reloads of an https virtual server: each one applies, however many came before."""

from __future__ import annotations

import asyncio
import ssl

from tests.conftest import free_port


def _config(pki, port: int, status: int) -> str:
    return f"""
[appliance]
name = "test"
admin = "off"
access_log = "off"
grace = "0"
[profile.tls]
type = "https"
client_ssl = {{ certificates = [ {{ cert = "{pki.server[0]}", key = "{pki.server[1]}" }} ] }}
[virtual_server.web]
listen = "127.0.0.1:{port}"
profile = "tls"
routes = [ {{ path_prefix = "/", respond = {status} }} ]
[pool.p]
servers = [ {{ name = "a", address = "127.0.0.1:9" }} ]
"""


async def _get(port: int, pki, keep_alive: bool = False):
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 5)
    close = b"" if keep_alive else b"Connection: close\r\n"
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n" + close + b"\r\n")
    line = await asyncio.wait_for(reader.readline(), 5)
    return int(line.split()[1]), writer


async def test_every_reload_of_an_https_virtual_server_applies(appliance_factory, pki):
    port = free_port()
    appliance = await appliance_factory(_config(pki, port, 403))
    status, writer = await _get(port, pki)
    writer.close()
    assert status == 403
    for want in (404, 410, 451):  # the listener is re-armed each time (renewed certificates)
        appliance.config.source.write_text(_config(pki, port, want))
        result = await appliance.reload()
        assert result["ok"], result
        status, writer = await _get(port, pki, keep_alive=True)
        try:
            assert status == want
            # the engine sees the connection: graceful stop, the admin API and the dashboard count it
            assert appliance.engine.live_connections() == 1
        finally:
            writer.close()
        for _ in range(100):
            if appliance.engine.live_connections() == 0:
                break
            await asyncio.sleep(0.02)
