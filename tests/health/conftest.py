"""Health-check fixtures: a generated PKI, real servers on loopback."""

from __future__ import annotations

from typing import Any, AsyncIterator, Awaitable, Callable

import pytest
import uvloop
from health_helpers import PKI, Spot

from adc.tls import certs


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    d = tmp_path_factory.mktemp("health-pki")
    certs.init(d)
    rogue, rogue_key = certs.make_ca("rogue CA")
    cert, key = certs.issue_cert(rogue, rogue_key, ["localhost", "127.0.0.1"])
    certs.write_pair(d / "rogue.pem", d / "rogue.key", cert, key)
    cert, key = certs.issue_cert(rogue, rogue_key, ["client.test"], client=True)
    certs.write_pair(d / "rogue-client.pem", d / "rogue-client.key", cert, key)
    ca, ca_key = certs.load_ca(d)
    cert, key = certs.issue_cert(ca, ca_key, ["client.test"], client=True)
    certs.write_pair(d / "client.pem", d / "client.key", cert, key)
    return PKI(ca=d / "ca.pem", server=(d / "adc.pem", d / "adc.key"), rogue_server=(d / "rogue.pem", d / "rogue.key"),
               client=(d / "client.pem", d / "client.key"),
               rogue_client=(d / "rogue-client.pem", d / "rogue-client.key"))


@pytest.fixture
async def spots() -> AsyncIterator[Callable[..., Awaitable[Spot]]]:
    made: list[Spot] = []

    async def make(ssl_ctx: Any = None, **attrs: Any) -> Spot:
        spot = Spot()
        for k, v in attrs.items():
            setattr(spot, k, v)
        made.append(await spot.start(ssl_ctx))
        return spot

    yield make
    for spot in made:
        await spot.stop()
