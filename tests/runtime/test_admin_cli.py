"""`adc status` and `adc reload` through adc.cli.main against a running appliance."""

from __future__ import annotations

import asyncio

from adc.cli import main as cli_main
from tests.conftest import free_port


def body(port: int, backend: int, method: str = "round-robin") -> str:
    return f"""
    [virtual_server.front]
    listen = "127.0.0.1:{port}"
    profile = "tcp"
    pool = "p"

    [pool.p]
    method = "{method}"
    servers = [{{ name = "one", address = "127.0.0.1:{backend}" }}]
    """


async def test_status_prints_tables(harness, backends, capsys):
    b = await backends()
    port = free_port()
    await harness.start(body(port, b.port))
    code = await asyncio.to_thread(cli_main, ["status", str(harness.path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "generation 1" in out
    assert "Virtual servers" in out and "front" in out and f"127.0.0.1:{port}" in out
    assert "Pools" in out and "one" in out and f"127.0.0.1:{b.port}" in out and "up" in out


async def test_reload_reports_changes_then_errors(harness, backends, capsys):
    b = await backends()
    port = free_port()
    app = await harness.start(body(port, b.port))
    harness.write(body(port, b.port, method="least-conn"))
    code = await asyncio.to_thread(cli_main, ["reload", str(harness.path)])
    out = capsys.readouterr().out
    assert code == 0 and "generation 2" in out and "pool p changed: method" in out
    harness.write(body(port, b.port, method="nonsense"))
    code = await asyncio.to_thread(cli_main, ["reload", str(harness.path)])
    err = capsys.readouterr().err
    assert code == 1 and "reload failed" in err and "method" in err
    assert app.generation == 2


async def test_admin_override_and_tcp_token(harness, backends, capsys):
    b = await backends()
    admin_port = free_port()
    await harness.start(body(free_port(), b.port), admin=f"127.0.0.1:{admin_port}", token="tok")
    code = await asyncio.to_thread(cli_main, ["status", str(harness.path), "--admin", f"127.0.0.1:{admin_port}"])
    assert code == 0 and "front" in capsys.readouterr().out


async def test_token_from_the_option_or_the_environment(harness, backends, capsys, monkeypatch, tmp_path):
    """A file without admin_token (an operator's copy, say): --token or $ADC_ADMIN_TOKEN gives it."""
    b = await backends()
    admin = f"127.0.0.1:{free_port()}"
    await harness.start(body(free_port(), b.port), admin=admin, token="tok")
    bare = tmp_path / "bare.toml"
    bare.write_text(f'[appliance]\nadmin = "{admin}"\n')
    monkeypatch.delenv("ADC_ADMIN_TOKEN", raising=False)

    code = await asyncio.to_thread(cli_main, ["status", str(bare)])
    err = capsys.readouterr().err
    assert code == 1 and "asks for a token" in err and "--token" in err and "ADC_ADMIN_TOKEN" in err
    code = await asyncio.to_thread(cli_main, ["reload", str(bare), "--token", "wrong"])
    assert code == 1 and "refused the token" in capsys.readouterr().err

    code = await asyncio.to_thread(cli_main, ["status", str(bare), "--token", "tok"])
    assert code == 0 and "front" in capsys.readouterr().out
    monkeypatch.setenv("ADC_ADMIN_TOKEN", "tok")
    code = await asyncio.to_thread(cli_main, ["reload", str(bare)])
    assert code == 0 and "reloaded: generation 2" in capsys.readouterr().out
    code = await asyncio.to_thread(cli_main, ["status", str(bare), "--token", "wrong"])  # the option wins
    assert code == 1 and "refused the token" in capsys.readouterr().err


async def test_unreachable_exits_non_zero(tmp_path, capsys):
    cfg = tmp_path / "appliance.toml"
    cfg.write_text('[appliance]\nadmin = "unix:run/adc.sock"\n')
    code = await asyncio.to_thread(cli_main, ["status", str(cfg)])
    assert code == 1 and "is the appliance running" in capsys.readouterr().err
    code = await asyncio.to_thread(cli_main, ["reload", str(tmp_path / "missing.toml")])
    assert code == 2 and "missing.toml" in capsys.readouterr().err
