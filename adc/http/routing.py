"""Route matching: the first route of a virtual server that matches wins."""

from __future__ import annotations

from dataclasses import dataclass

from adc.config.model import Route


@dataclass(frozen=True, slots=True)
class RouteMatch:
    """Where a request goes: a pool, or an answer from the appliance (`respond`)."""

    route: Route | None  # None = the virtual server's default pool
    pool: str | None
    respond: int | None = None

    def describe(self) -> str:
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

    __slots__ = ("routes", "default_pool")

    def __init__(self, routes: tuple[Route, ...], default_pool: str | None) -> None:
        self.routes = routes
        self.default_pool = default_pool

    def match(self, host: str, method: str, path: str) -> RouteMatch:
        """`host` lower case without port; `path` without the query."""
        for route in self.routes:
            if route_matches(route, host, method, path):
                return RouteMatch(route, route.pool, route.respond)
        if self.default_pool is None:
            return RouteMatch(None, None, 404)
        return RouteMatch(None, self.default_pool)
