"""Create the development certificates a configuration needs, before it is loaded."""

from __future__ import annotations


def ensure_for_config(path: str) -> list[str]:
    """Return log lines for whatever was created."""
    return []
