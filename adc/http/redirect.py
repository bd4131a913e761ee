"""Redirect routes: the Location of an answer the appliance makes, from a template.

`redirect = "https://{host}:8443{uri}"` sends a request to the same name on another
scheme and port, as NGINX's `return 301 https://$host$request_uri` and HAProxy's
`http-request redirect` do. The placeholders are the request's:

- `{host}`: its Host (or absolute-form authority) without the port, lower case; an IPv6
  address in brackets;
- `{uri}`: its target in origin form, path and query as the client wrote them;
- `{path}`: that path without the query.

`{{` and `}}` are literal braces. The template is checked when the configuration loads
(`check_template`); filling it cannot fail then, except for a request without a Host
whose template needs one.
"""

from __future__ import annotations

import string

PLACEHOLDERS = ("host", "uri", "path")
CODES = (301, 302, 303, 307, 308)
_FORMATTER = string.Formatter()
# what a Location may hold once filled (RFC 3986 characters; nothing that could end the field)
_URI_CHARS = frozenset(string.ascii_letters + string.digits + "-._~:/?#[]@!$&'()*+,;=%")


def check_template(template: str) -> str | None:
    """What is wrong with a redirect template, or None."""
    try:
        parts = list(_FORMATTER.parse(template))
    except ValueError as exc:
        return f"{exc} (a literal brace is written {{{{ or }}}})"
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if name not in PLACEHOLDERS or spec or conversion:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            shown = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            return f"unknown placeholder {shown} (known: {known})"
    sample = _format(template, "example.com", "/p?q")
    if not sample.startswith(("http://", "https://", "/")):
        return f"must be an absolute URL (http:// or https://) or a path starting with '/', got {template!r}"
    if sample.startswith("//"):
        return f"a scheme-relative URL (//...) is ambiguous; write http:// or https://, got {template!r}"
    bad = sorted(set(sample) - _URI_CHARS)
    if bad:
        return f"{''.join(bad)!r} cannot stand in a URL (percent-encode it), got {template!r}"
    return None


def needs_host(template: str) -> bool:
    return any(name == "host" for _literal, name, _spec, _conv in _FORMATTER.parse(template))


def origin_form(target: str) -> str:
    """The origin form of a request target: `/path?query` of an absolute-form one, `/` for `*`."""
    if target.startswith("/"):
        return target
    _scheme, sep, rest = target.partition("://")
    if sep:
        slash, query = rest.find("/"), rest.find("?")
        if slash >= 0 and (query < 0 or slash < query):
            return rest[slash:]
        return "/" + rest[query:] if query >= 0 else "/"
    return "/"


def _format(template: str, host: str, target: str) -> str:
    uri = origin_form(target)
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return template.format(host=host, uri=uri, path=uri.partition("?")[0])


def fill(template: str, host: str, target: str) -> str:
    """The Location for a request to `host` (lower case, no port) with request-target `target`."""
    location = _format(template, host, target)
    if location.startswith(("//", "/\\")):
        # A template that starts with {uri} or {path}, filled from a target such as
        # "//evil.example/../docs" (whose normalised path the route matched): a
        # network-path reference (RFC 3986 §4.2), which a browser follows to another host
        # (and, as browsers read "/\\", the same with a backslash). One slash: a path here.
        location = "/" + location.lstrip("/\\")
    return location
