"""Short, well-formed answers the appliance gives itself."""

from __future__ import annotations

from http import HTTPStatus


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def build_response(status: int, *, close: bool, detail: str = "", head_only: bool = False,
                   location: str = "") -> bytes:
    """A complete HTTP/1.1 response: plain-text body, Content-Length, optional close.

    With `location` it is a redirect, which clients and caches may keep as its status allows
    (no Cache-Control: a 301 or 308 is meant to be remembered).
    """
    phrase = reason_phrase(status)
    body = b"" if status in (204, 304) or 100 <= status < 200 else f"{status} {phrase}\n".encode()
    if detail and body:
        body = f"{status} {phrase}: {detail}\n".encode("utf-8", "replace")
    if location:
        lines = [f"HTTP/1.1 {status} {phrase}", "Server: adc", f"Location: {location}"]
    else:
        lines = [f"HTTP/1.1 {status} {phrase}", "Server: adc", "Cache-Control: no-store"]
    if body:
        lines.append("Content-Type: text/plain; charset=utf-8")
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
