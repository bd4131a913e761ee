"""Client for the admin API (used by `adc status|reload` and the dashboard).

The admin plane is not the data path, so plain asyncio streams are used here.
One request per connection (`Connection: close`) keeps the client simple and robust.
"""

from __future__ import annotations

import asyncio
import json
import os
import tomllib
from typing import Any

__all__ = ["AdminClient", "AdminUnreachable", "AdminError", "admin_address_from_config"]

DEFAULT_ADMIN = "unix:run/adc.sock"
MAX_RESPONSE = 64 * 1024 * 1024
UNIX_PATH_MAX = 100


class AdminUnreachable(Exception):
    """The admin API could not be reached (no socket, refused, timeout, broken answer)."""


class AdminError(Exception):
    """The admin API answered with an error status."""

    def __init__(self, status: int, body: Any) -> None:
        self.status = status
        self.body = body
        message = body.get("error") if isinstance(body, dict) else None
        super().__init__(f"HTTP {status}: {message or body}")


class AdminClient:
    """`address` is "unix:PATH" or "host:port" ("[v6]:port")."""

    def __init__(self, address: str, token: str | None = None, timeout: float = 2.0) -> None:
        self.address = address
        self.token = token
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"AdminClient({self.address!r})"

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self.address.startswith("unix:"):
            path = self.address[5:]
            if len(path.encode()) <= UNIX_PATH_MAX:
                return await asyncio.open_unix_connection(path)
            # sun_path is short: reach long paths through the directory's file descriptor
            dirfd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_DIRECTORY)
            try:
                return await asyncio.open_unix_connection(f"/proc/self/fd/{dirfd}/{os.path.basename(path)}")
            finally:
                os.close(dirfd)
        host, port = _split_host_port(self.address)
        return await asyncio.open_connection(host, port)

    async def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Send one request; returns (status, parsed JSON, or text for non-JSON answers)."""
        try:
            return await asyncio.wait_for(self._request(method, path, body), self.timeout)
        except AdminUnreachable:
            raise
        except (asyncio.TimeoutError, TimeoutError):
            raise AdminUnreachable(f"admin API at {self.address}: no answer within {self.timeout:g}s") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise AdminUnreachable(f"admin API at {self.address}: {_describe(exc)}") from None

    async def _request(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        reader, writer = await self._open()
        try:
            payload = b"" if body is None else json.dumps(body).encode()
            host = "localhost" if self.address.startswith("unix:") else self.address
            lines = [
                f"{method.upper()} {path} HTTP/1.1",
                f"Host: {host}",
                "Accept: application/json",
                "Connection: close",
                f"Content-Length: {len(payload)}",
            ]
            if body is not None:
                lines.append("Content-Type: application/json")
            if self.token:
                lines.append(f"Authorization: Bearer {self.token}")
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            status_line, _, header_block = head.decode("latin-1").partition("\r\n")
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
                raise AdminUnreachable(f"admin API at {self.address}: bad status line {status_line!r}")
            status = int(parts[1])
            headers: dict[str, str] = {}
            for line in header_block.split("\r\n"):
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                length = int(headers["content-length"])
                if length > MAX_RESPONSE:
                    raise AdminUnreachable(f"admin API at {self.address}: answer too large ({length} bytes)")
                data = await reader.readexactly(length)
            else:
                data = await reader.read(MAX_RESPONSE)
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except (OSError, asyncio.CancelledError):
                pass
        ctype = headers.get("content-type", "")
        text = data.decode("utf-8", "replace")
        if "json" in ctype:
            try:
                return status, json.loads(text) if text else None
            except json.JSONDecodeError:
                return status, text
        return status, text

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.request("GET", path)

    async def post(self, path: str, body: Any = None) -> tuple[int, Any]:
        return await self.request("POST", path, body if body is not None else {})

    async def delete(self, path: str) -> tuple[int, Any]:
        return await self.request("DELETE", path)


def token_refused(token: str | None, path: str) -> str:
    """What a 401 from the admin API means, for the operator (status, reload, dashboard)."""
    if not token:
        return (f"admin API asks for a token (HTTP 401 on {path}): give --token or $ADC_ADMIN_TOKEN, "
                "or the config file with admin_token")
    return f"admin API refused the token (HTTP 401 on {path})"


def _split_host_port(address: str) -> tuple[str, int]:
    text = address.strip()
    if text.startswith("["):
        end = text.find("]")
        host, port = text[1:end], text[end + 2 :]
    else:
        host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise AdminUnreachable(f"bad admin address {address!r} (expected \"unix:PATH\" or \"host:port\")")
    return host, int(port)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "socket not found (is the appliance running?)"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is the appliance running?)"
    if isinstance(exc, asyncio.IncompleteReadError):
        return "connection closed before a complete answer"
    return str(exc) or type(exc).__name__


def resolve_admin(admin: str, base_dir: str) -> str:
    """Make a relative "unix:PATH" absolute against `base_dir` (the config file's directory)."""
    if admin.startswith("unix:"):
        path = admin[5:]
        if not os.path.isabs(path):
            path = os.path.normpath(os.path.join(base_dir, path))
        return "unix:" + path
    return admin


def admin_address_from_config(path: str) -> tuple[str, str | None]:
    """(address, token) of the admin API from appliance.toml's [appliance] table.

    Only the [appliance] table is read, so this also works while the rest of the
    file is invalid (e.g. to ask for a reload that reports the errors).
    Raises OSError if the file cannot be read, ValueError if it is not TOML or admin is "off".
    """
    with open(path, "rb") as fh:
        try:
            data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: {exc}") from None
    section = data.get("appliance") or {}
    if not isinstance(section, dict):
        section = {}
    admin = section.get("admin", DEFAULT_ADMIN)
    token = section.get("admin_token")
    if not isinstance(admin, str) or not admin:
        admin = DEFAULT_ADMIN
    if admin == "off":
        raise ValueError(f"{path}: the admin API is off (appliance.admin = \"off\")")
    base = os.path.dirname(os.path.abspath(path))
    return resolve_admin(admin, base), token if isinstance(token, str) else None
