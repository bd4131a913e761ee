"""Fixtures for runtime tests: an appliance with its admin API, started from TOML text."""

from __future__ import annotations

import asyncio
import textwrap
from pathlib import Path
from typing import AsyncIterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from adc.appliance import Appliance
from adc.config.load import load
from adc.runtime.admin_client import AdminClient


class Harness:
    """Writes appliance.toml, starts the appliance, rewrites the file for reloads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.appliance: Appliance | None = None
        self.token: str | None = None

    def write(self, body: str, *, admin: str = "unix:run/adc.sock", token: str | None = None,
              grace: str = "3s", name: str = "test") -> None:
        head = f'[appliance]\nname = "{name}"\nadmin = "{admin}"\naccess_log = "off"\ngrace = "{grace}"\n'
        if token:
            head += f'admin_token = "{token}"\n'
        self.path.write_text(head + textwrap.dedent(body))

    async def start(self, body: str, display: str | None = None, **kw) -> Appliance:
        """`display`: the file's name as the operator gave it (`adc run appliance.toml`), if not the path."""
        self.token = kw.get("token")
        self.write(body, **kw)
        self.appliance = Appliance(load(self.path, display))
        await self.appliance.start()
        return self.appliance

    def client(self, token: str | None = "same", timeout: float = 5.0) -> AdminClient:
        assert self.appliance is not None and self.appliance.admin_address
        return AdminClient(self.appliance.admin_address, self.token if token == "same" else token, timeout)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path / "appliance.toml")
    yield h
    if h.appliance is not None:
        await h.appliance.stop(grace=0)


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Parse Prometheus text with prometheus_client's parser: {(name, labels): value}."""
    out: dict[tuple[str, frozenset], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(table: dict[tuple[str, frozenset], float], name: str, **labels: str) -> float:
    return table[(name, frozenset(labels.items()))]


async def echo_roundtrip(port: int, payload: bytes = b"ping", timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
    finally:
        writer.close()




class PlainEcho(asyncio.Protocol):
    """Echo server that closes (no half-close) when the client is done."""

    def __init__(self, owner=None) -> None:
        self.owner = owner

    def connection_made(self, transport) -> None:
        self.transport = transport
        if self.owner is not None:
            self.owner.accepted += 1

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def eof_received(self) -> bool:
        return False  # close
