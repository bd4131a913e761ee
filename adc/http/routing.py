"""Route matching: the first route of a virtual server that matches wins."""

from __future__ import annotations

from dataclasses import dataclass, field

from adc.config.model import Route


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Where a request goes: a pool, or an answer from the appliance (`respond`)."""

    route: Route | None  # None = the virtual server's default pool
    pool: str | None
    respond: int | None = None
    label: str = field(default="", compare=False)  # describe(), computed once per route

    def describe(self) -> str:
        if self.label:
            return self.label
        return self.route.describe() if self.route is not None else "default"


def host_matches(pattern: str, host: str) -> bool:
    """`host` is already lower case without port; `pattern` exact or `*.suffix`."""
    pattern = pattern.lower()
    if pattern.startswith("*."):
        suffix = pattern[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix)
    return host == pattern


def route_matches(route: Route, host: str, method: str, path: str) -> bool:
    if route.host is not None and not host_matches(route.host, host):
        return False
    if route.methods is not None and method not in route.methods:
        return False
    if route.path_exact is not None and path != route.path_exact:
        return False
    if route.path_prefix is not None and not path.startswith(route.path_prefix):
        return False
    if route.path_regex is not None and route.path_regex.search(path) is None:
        return False
    return True


class Router:
    """The routes of one virtual server plus its default pool."""

    __slots__ = ("routes", "default_pool", "_matches", "_default")

    def __init__(self, routes: tuple[Route, ...], default_pool: str | None) -> None:
        self.routes = routes
        self.default_pool = default_pool
        # the answers are values: build them once, not per request
        # a redirect is an answer too: `respond` is its status (see Exchange._start_request)
        self._matches = [
            (r, RouteMatch(r, r.pool, r.respond if r.redirect is None else r.redirect_code, r.describe()))
            for r in routes
        ]
        self._default = (
            RouteMatch(None, None, 404, "default") if default_pool is None else RouteMatch(None, default_pool, None, "default")
        )

    def match(self, host: str, method: str, path: str) -> RouteMatch:
        """`host` lower case without port; `path` without the query."""
        for route, found in self._matches:
            if route_matches(route, host, method, path):
                return found
        return self._default
