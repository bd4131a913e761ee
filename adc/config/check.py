"""Checks that need the file system beyond the TOML itself (certificates, keys)."""

from __future__ import annotations

from adc.config.model import Config


def check_config(config: Config, display: str) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) as `FILE: key.path: message` lines."""
    errors: list[str] = []
    warnings: list[str] = list(config.warnings)
    return errors, warnings
