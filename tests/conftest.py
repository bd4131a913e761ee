"""Shared test fixtures: uvloop, free ports, an appliance started from TOML text."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import socket
import textwrap
from pathlib import Path
from typing import AsyncIterator, Awaitable, Callable

import pytest
import uvloop

from adc.appliance import Appliance
from adc.config.load import load
from adc.relay import shutdown_write


def pytest_asyncio_loop_factories(config, item):
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(autouse=True, scope="session")
def websockets_without_write_eof():
    """Test peers built on `websockets` share the appliance's uvloop loop: make them
    half-close the way the appliance does (see adc.demo.send_websocket_data), so a
    uvloop bug in write_eof() cannot abort the test process."""
    from websockets.asyncio.connection import Connection

    from adc.demo import send_websocket_data

    original = Connection.send_data
    Connection.send_data = send_websocket_data  # type: ignore[method-assign]
    yield
    Connection.send_data = original  # type: ignore[method-assign]


class _LoopErrors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_exceptions_in_callbacks():
    """An exception raised in a protocol callback or a timer only reaches the event loop's
    exception handler, which logs it: fail the test that caused it."""
    handler = _LoopErrors()
    logger = logging.getLogger("asyncio")
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
    errors = [r.getMessage() + (f": {r.exc_info[1]!r}" if r.exc_info else "") for r in handler.records]
    assert not errors, f"exceptions reached the event loop: {errors}"


@contextlib.contextmanager
def no_adc_cycles():
    """Assert that the appliance objects made inside the block are freed by reference counting.

    The cycle collector is held off during the block; at its end, whatever it would have
    to free is inspected, and any object of an `adc` type there is a leak of a cycle
    (memory held until the next collection, and collector work on the data path).
    """
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            cyclic = sorted({type(o).__qualname__ for o in gc.garbage if type(o).__module__.startswith("adc.")})
        finally:
            gc.set_debug(0)
            gc.garbage.clear()
            gc.enable()
    assert cyclic == [], f"appliance objects left in reference cycles: {cyclic}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[str], Path]:
    """Write an appliance.toml (dedented) into a fresh directory and return its path."""

    def write(text: str, name: str = "appliance.toml") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return path

    return write


@pytest.fixture
async def appliance_factory(write_config) -> AsyncIterator[Callable[[str], Awaitable[Appliance]]]:
    """Start appliances from TOML text; all are stopped at the end of the test."""
    started: list[Appliance] = []

    async def start(text: str) -> Appliance:
        header = '[appliance]\nname = "test"\nadmin = "off"\naccess_log = "off"\n'
        if "[appliance]" in text:
            header = ""
        appliance = Appliance(load(write_config(header + textwrap.dedent(text))))
        await appliance.start()
        started.append(appliance)
        return appliance

    yield start
    for appliance in started:
        await appliance.stop(grace=0)


class EchoServer(asyncio.Protocol):
    """A real TCP echo server; counts the connections it accepted."""

    accepted = 0

    def __init__(self, owner: "Backend"):
        self.owner = owner

    def connection_made(self, transport):
        self.transport = transport
        self.owner.accepted += 1

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        if not shutdown_write(self.transport):  # echo the half-close once everything is sent
            self.transport.close()
        return True


class Backend:
    def __init__(self) -> None:
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, port: int = 0, factory=None) -> "Backend":
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(factory or (lambda: EchoServer(self)), "127.0.0.1", port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def backends() -> AsyncIterator[Callable[..., Awaitable[Backend]]]:
    made: list[Backend] = []

    async def make(factory=None) -> Backend:
        b = await Backend().start(factory=factory)
        made.append(b)
        return b

    yield make
    for b in made:
        await b.stop()
