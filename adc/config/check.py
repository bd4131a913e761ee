"""Checks that need the file system beyond the TOML itself: certificates and keys.

`adc check` and `adc run` call `check_config` after loading; every problem comes back as
`FILE: key.path: message`, expired or mismatched material as an error, a certificate
expiring within 30 days as a warning.
"""

from __future__ import annotations

from pathlib import Path

from adc.config.model import Config


def _used_profiles(config: Config) -> dict[str, None]:
    return dict.fromkeys(vs.profile for vs in config.virtual_servers.values())


def check_config(config: Config, display: str) -> tuple[list[str], list[str]]:
    """Return (errors, warnings) as `FILE: key.path: message` lines."""
    from adc.tls.certs import check_ca, check_crl, check_pair

    errors: list[str] = []
    warnings: list[str] = list(config.warnings)
    base = config.base_dir

    def collect(prefix: str, result: tuple[list[str], list[str]]) -> None:
        errors.extend(f"{prefix}: {e}" for e in result[0])
        warnings.extend(f"{prefix}: {w}" for w in result[1])

    for name in _used_profiles(config):
        profile = config.profiles[name]
        cs = profile.client_ssl
        if cs is None:
            continue
        where = f"{profile.source or display}: profile.{name}.client_ssl"
        for i, pair in enumerate(cs.certificates):
            collect(f"{where}.certificates[{i}]", check_pair(pair.cert, pair.key, base=base))
        if cs.client_ca is not None:
            collect(f"{where}.client_ca", check_ca(cs.client_ca, base=base))
        if cs.client_crl is not None:
            collect(f"{where}.client_crl", check_crl(cs.client_crl, cs.client_ca, base=base))

    used_ssl = dict.fromkeys(p.server_ssl for p in config.pools.values() if p.server_ssl)
    for name in used_ssl:
        ss = config.server_ssl[name]
        where = f"{display}: server_ssl.{name}"
        if ss.ca is not None:
            collect(f"{where}.ca", check_ca(ss.ca, base=base))
        if ss.crl is not None:
            collect(f"{where}.crl", check_crl(ss.crl, ss.ca, base=base, ca_key="ca", issued="real servers' certificates"))
        if ss.cert is not None and ss.key is not None:
            collect(f"{where}.cert", check_pair(ss.cert, ss.key, base=base))
    return errors, warnings


def referenced_files(config: Config) -> list[Path]:
    """Certificate, key and CA files the running configuration needs."""
    files: list[Path] = []
    for name in _used_profiles(config):
        cs = config.profiles[name].client_ssl
        if cs is not None:
            for pair in cs.certificates:
                files += [pair.cert, pair.key]
            files += [p for p in (cs.client_ca, cs.client_crl) if p is not None]
    for pool in config.pools.values():
        if pool.server_ssl:
            ss = config.server_ssl[pool.server_ssl]
            files += [p for p in (ss.ca, ss.crl, ss.cert, ss.key) if p is not None]
    return files
