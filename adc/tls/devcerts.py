"""Create the development certificates a configuration needs, before it runs.

On a fresh checkout `certs/` is empty; the shipped configuration refers to the
development CA (`certs/ca.pem`) and server certificate (`certs/adc.pem`). When every
missing file is one of those, they are made (never overwriting a file that exists).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adc.config.model import Config

DEV_FILES = ("ca.pem", "ca.key", "adc.pem", "adc.key")


def missing_dev_files(config: "Config") -> list[Path]:
    """Referenced certificate files that are missing, if all of them are development ones."""
    from adc.config.check import referenced_files

    certs_dir = (config.base_dir / "certs").resolve()
    missing = [p for p in referenced_files(config) if not p.exists()]
    if not missing or not all(p.parent == certs_dir and p.name in DEV_FILES for p in missing):
        return []
    return missing


def ensure_for_config(path: str | Path) -> list[str]:
    """Return log lines for whatever was created (nothing when the config is unusable)."""
    from adc.config.load import ConfigError, load

    try:
        config = load(path)
    except ConfigError:
        return []  # reported by the caller's own load
    if not missing_dev_files(config):
        return []
    certs_dir = (config.base_dir / "certs").resolve()
    from adc.tls.certs import ensure_dev_certs

    if not ensure_dev_certs(certs_dir):
        return []
    return [
        f"created development certificates in {certs_dir}: CA ca.pem, server certificate adc.pem "
        "(localhost, 127.0.0.1, ::1); clients can trust ca.pem"
    ]
