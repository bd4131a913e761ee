"""The Prometheus exposition writer and /metrics against real traffic."""

from __future__ import annotations

import asyncio
import math

import pytest

from adc.runtime.metrics import Exposition, escape_label_value, format_value
from tests.conftest import free_port
from tests.runtime.conftest import PlainEcho, metric, samples


def test_writer_escapes_and_parses_back():
    exp = Exposition()
    fam = exp.family("x_requests_total", "counter", "Requests with a \\ and a\nnewline")
    tricky = 'we"ird\\name\nline'
    fam.add(3, {"pool": tricky, "server": "a"})
    fam.add(0, {"pool": "plain", "server": ""})
    exp.add("x_up", "gauge", "Up", True)
    exp.add("x_ratio", "gauge", "Ratio", 0.25)
    exp.add("x_inf", "gauge", "Inf", math.inf)
    text = exp.render()
    assert '# TYPE x_requests_total counter' in text
    assert 'pool="we\\"ird\\\\name\\nline"' in text
    assert "# HELP x_requests_total Requests with a \\\\ and a\\nnewline" in text
    table = samples(text)
    assert metric(table, "x_requests_total", pool=tricky, server="a") == 3
    assert metric(table, "x_requests_total", pool="plain", server="") == 0
    assert metric(table, "x_up") == 1
    assert metric(table, "x_ratio") == 0.25
    assert metric(table, "x_inf") == math.inf


def test_writer_rejects_bad_names():
    exp = Exposition()
    with pytest.raises(ValueError):
        exp.family("bad-name", "gauge", "x")
    with pytest.raises(ValueError):
        exp.family("ok", "histogramish", "x")
    with pytest.raises(ValueError):
        exp.family("ok", "gauge", "x").add(1, {"bad-label": "v"})
    exp.family("twice", "gauge", "x")
    with pytest.raises(ValueError):
        exp.family("twice", "counter", "x")
    assert escape_label_value("a") == "a"
    assert format_value(2.0) == "2" and format_value(float("nan")) == "NaN" and format_value(-math.inf) == "-Inf"


async def test_metrics_match_l4_traffic(harness, backends):
    b = await backends(factory=None)
    b.server.close()
    await b.start(b.port, factory=lambda: PlainEcho(b))
    port = free_port()
    await harness.start(f"""
    [virtual_server.l4]
    listen = "127.0.0.1:{port}"
    profile = "tcp"
    pool = "p"

    [pool.p]
    servers = [{{ name = "a", address = "127.0.0.1:{b.port}" }}, {{ name = "down", address = "127.0.0.1:{free_port()}", state = "disabled" }}]
    """)
    sent = 0
    for i in range(5):
        payload = b"y" * (100 * (i + 1))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(payload)
        assert await asyncio.wait_for(reader.readexactly(len(payload)), 5) == payload
        writer.close()
        sent += len(payload)
    # one session still open: its live bytes are already counted
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"z" * 10)
    await asyncio.wait_for(reader.readexactly(10), 5)
    sent += 10
    for _ in range(100):
        if harness.appliance.stats.virtual_servers["l4"].conn_current == 1:
            break
        await asyncio.sleep(0.01)
    code, text = await harness.client().get("/metrics")
    assert code == 200
    t = samples(text)
    vs = {"virtual_server": "l4"}
    assert metric(t, "adc_virtual_server_connections_total", **vs) == 6
    assert metric(t, "adc_virtual_server_connections_current", **vs) == 1
    assert metric(t, "adc_virtual_server_bytes_in_total", **vs) == sent
    assert metric(t, "adc_virtual_server_bytes_out_total", **vs) == sent
    assert metric(t, "adc_pool_bytes_in_total", pool="p") == sent
    assert metric(t, "adc_server_connections_total", pool="p", server="a") == 6
    assert metric(t, "adc_server_bytes_out_total", pool="p", server="a") == sent
    assert metric(t, "adc_server_up", pool="p", server="a") == 1
    assert metric(t, "adc_server_state", pool="p", server="down", state="disabled") == 1
    assert metric(t, "adc_server_state", pool="p", server="down", state="enabled") == 0
    assert metric(t, "adc_pool_servers", pool="p", status="disabled") == 1
    assert metric(t, "adc_sessions_current", kind="l4") == 1
    assert metric(t, "adc_virtual_server_errors_total", reason="connect", **vs) == 0
    assert metric(t, "adc_config_generation") == 1
    writer.close()


async def test_metrics_count_http_requests_and_responses(harness):
    from tests.engine.l7_servers import HttpBackend

    backend = await HttpBackend("b").start()
    backend.raw["/missing"] = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"
    port = free_port()
    try:
        await harness.start(f"""
        [virtual_server.web]
        listen = "127.0.0.1:{port}"
        profile = "http"
        pool = "web"

        [pool.web]
        servers = [{{ name = "w1", address = "127.0.0.1:{backend.port}" }}]
        """)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sent = received = 0
        for path in ("/a", "/b", "/c", "/missing"):
            request = f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
            writer.write(request)
            sent += len(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            length = int([h for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")][0].split(b":")[1])
            await reader.readexactly(length)
            received += len(head) + length
        writer.close()
        code, text = await harness.client().get("/metrics")
        t = samples(text)
        assert metric(t, "adc_virtual_server_requests_total", virtual_server="web") == 4
        assert metric(t, "adc_virtual_server_responses_total", virtual_server="web", **{"class": "2xx"}) == 3
        assert metric(t, "adc_virtual_server_responses_total", virtual_server="web", **{"class": "4xx"}) == 1
        # bytes as they crossed the wire, heads included
        assert metric(t, "adc_virtual_server_bytes_in_total", virtual_server="web") == sent
        assert metric(t, "adc_virtual_server_bytes_out_total", virtual_server="web") == received
        assert metric(t, "adc_server_requests_total", pool="web", server="w1") == 4
        assert metric(t, "adc_server_bytes_in_total", pool="web", server="w1") > sent  # plus X-Forwarded-*
    finally:
        backend.stop()
