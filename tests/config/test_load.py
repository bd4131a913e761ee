"""Configuration loading: every error reported verbatim as FILE: key.path: what is wrong."""

from __future__ import annotations

import pytest

from adc.cli import main
from adc.config.load import ConfigError, load, parse_address, parse_duration, parse_size
from adc.config.model import Address, ProfileType, ServerState

GOOD = """
[appliance]
name = "t"
admin = "off"

[virtual_server.web]
listen = ["127.0.0.1:8080", "[::1]:8080"]
profile = "http"
pool = "web"
routes = [
  { path_prefix = "/ws", websocket = true, pool = "chat" },
  { host = "*.example.com", methods = ["get", "POST"], path_regex = "^/v[0-9]+/", pool = "web" },
  { path_prefix = "/admin", respond = 403 },
]

[virtual_server.raw]
listen = "127.0.0.1:9000"
profile = "tcp"
pool = "chat"

[pool.web]
method = "least-conn"
servers = [
  { name = "web1", address = "127.0.0.1:9001" },
  { name = "web2", address = "127.0.0.1:9002", weight = 2, state = "draining" },
  { name = "spare", address = "127.0.0.1:9003", backup = true },
]

[pool.chat]
health = { type = "tcp", interval = "500ms" }
servers = [{ name = "c1", address = "localhost:9100" }]
"""


def errors_of(write_config, text: str) -> list[str]:
    path = write_config(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    prefix = str(path)
    return [e.replace(prefix, "appliance.toml") for e in err.value.errors]


def test_good_config_loads_into_frozen_model(write_config):
    cfg = load(write_config(GOOD))
    web = cfg.virtual_servers["web"]
    assert web.listen == (Address("127.0.0.1", 8080), Address("::1", 8080))
    assert cfg.profiles["http"].type is ProfileType.HTTP
    assert web.routes[1].methods == frozenset({"GET", "POST"})
    assert web.routes[2].respond == 403
    assert cfg.pools["web"].servers[1].state is ServerState.DRAINING
    assert cfg.pools["chat"].health.interval == 0.5
    with pytest.raises(AttributeError):
        web.name = "x"  # type: ignore[misc]


def test_every_error_is_reported_verbatim(write_config):
    text = """
    [appliance]
    name = "t"
    grace = "30 seconds"
    colour = "blue"

    [virtual_server.web]
    listen = "127.0.0.1:99999"
    profile = "htpp"
    pool = "chta"
    max_connections = "many"

    [virtual_server.other]
    listen = "nohost"
    profile = "tcp"
    pool = "empty"

    [pool.chat]
    method = "fastest"
    servers = [
      { name = "a", address = "127.0.0.1:9001" },
      { name = "a", address = "127.0.0.1:9002" },
      { name = "b", address = "127.0.0.1:9003", wieght = 2 },
    ]

    [pool.empty]
    servers = []
    """
    assert errors_of(write_config, text) == [
        "appliance.toml: appliance.grace: bad duration '30 seconds' (use a number and a unit: ms, s, m, h, d; \"0\" = none)",
        "appliance.toml: appliance.colour: unknown key",
        "appliance.toml: pool.chat.method: must be one of round-robin, least-conn, random-two, source-hash, uri-hash, maglev, got 'fastest'",
        "appliance.toml: pool.chat.servers[1].name: duplicate server name 'a' (also servers[0])",
        "appliance.toml: pool.chat.servers[2].wieght: unknown key",
        "appliance.toml: pool.empty.servers: a pool needs at least one real server",
        "appliance.toml: virtual_server.web.listen: bad address '127.0.0.1:99999': port must be 0..65535",
        "appliance.toml: virtual_server.web.profile: unknown profile 'htpp' (known: http, https, tcp)",
        "appliance.toml: virtual_server.web.pool: unknown pool 'chta' (known: chat, empty)",
        "appliance.toml: virtual_server.web.max_connections: expected an integer, got a string",
        "appliance.toml: virtual_server.other.listen: bad address 'nohost' (expected \"host:port\")",
    ]


def test_health_check_intervals(write_config):
    text = GOOD.replace('health = { type = "tcp", interval = "500ms" }',
                        'health = { type = "tcp", interval = "5s", fast_interval = "250ms", down_interval = "1m" }')
    check = load(write_config(text)).pools["chat"].health
    assert (check.interval, check.fast_interval, check.down_interval) == (5.0, 0.25, 60.0)
    assert load(write_config(GOOD)).pools["chat"].health.fast_interval is None  # = interval
    bad = GOOD.replace('health = { type = "tcp", interval = "500ms" }',
                       'health = { type = "tcp", fast_interval = "0", down_interval = "soon" }')
    assert errors_of(write_config, bad) == [
        "appliance.toml: pool.chat.health.down_interval: bad duration 'soon' (use a number and a unit: ms, s, m, h, d; \"0\" = none)",
        "appliance.toml: pool.chat.health.fast_interval: must be greater than 0",
    ]


def test_health_check_request_fields_cannot_break_the_request(write_config):
    fields = 'path = "/ok z", host = "a\\r\\nX-Evil: 1", method = "GET /x HTTP/1.0\\r\\n"'
    bad = GOOD.replace('health = { type = "tcp", interval = "500ms" }', f'health = {{ type = "http", {fields} }}')
    assert errors_of(write_config, bad) == [
        "appliance.toml: pool.chat.health.path: expected a path starting with '/', without spaces, controls or '#', got '/ok z'",
        "appliance.toml: pool.chat.health.host: expected a host name or address, with an optional port, got 'a\\r\\nX-Evil: 1'",
        "appliance.toml: pool.chat.health.method: expected an HTTP method such as GET or HEAD, got 'GET /x HTTP/1.0\\r\\n'",
    ]
    fine = 'path = "/healthz?full=1", host = "api.example.com:8443", method = "head"'
    good = GOOD.replace('health = { type = "tcp", interval = "500ms" }', f'health = {{ type = "http", {fine} }}')
    check = load(write_config(good)).pools["chat"].health
    assert (check.path, check.host, check.method) == ("/healthz?full=1", "api.example.com:8443", "HEAD")
    assert errors_of(write_config, GOOD.replace('name = "web1"', 'name = "web1\\n"'))  # no name ends in a newline


def test_hash_type(write_config):
    text = GOOD.replace('method = "least-conn"', 'method = "uri-hash"\nhash_type = "consistent"')
    assert load(write_config(text)).pools["web"].hash_type == "consistent"
    assert load(write_config(GOOD)).pools["web"].hash_type == "map-based"
    assert errors_of(write_config, GOOD.replace('method = "least-conn"', 'method = "source-hash"\nhash_type = "ring"')) == [
        "appliance.toml: pool.web.hash_type: must be one of map-based, consistent, got 'ring'",
    ]
    assert errors_of(write_config, GOOD.replace('method = "least-conn"', 'hash_type = "consistent"')) == [
        "appliance.toml: pool.web.hash_type: applies to source-hash and uri-hash only (method is round-robin)",
    ]


def test_duplicate_listen_addresses(write_config):
    text = """
    [virtual_server.a]
    listen = "127.0.0.1:8080"
    profile = "tcp"
    pool = "p"
    [virtual_server.b]
    listen = ["0.0.0.0:8080"]
    profile = "tcp"
    pool = "p"
    [pool.p]
    servers = [{ name = "a", address = "127.0.0.1:9001" }]
    """
    assert errors_of(write_config, text) == [
        "appliance.toml: virtual_server.b.listen: address 0.0.0.0:8080 is already used by virtual_server.a",
    ]


def test_route_errors(write_config):
    text = """
    [virtual_server.web]
    listen = "127.0.0.1:8080"
    profile = "http"
    routes = [
      { path_prefix = "ws", pool = "p" },
      { path_exact = "/a", path_prefix = "/b", pool = "p" },
      { path_regex = "(", pool = "p" },
      { path_prefix = "/x", pool = "p", respond = 403 },
      { path_prefix = "/y" },
      { host = "a.*.com", pool = "nope" },
    ]
    [pool.p]
    servers = [{ name = "a", address = "127.0.0.1:9001" }]
    """
    errs = errors_of(write_config, text)
    assert errs == [
        "appliance.toml: virtual_server.web.routes[0].path_prefix: must start with '/', got 'ws'",
        "appliance.toml: virtual_server.web.routes[1]: use only one of path_exact, path_prefix, path_regex",
        "appliance.toml: virtual_server.web.routes[2].path_regex: bad regular expression: missing ), unterminated subpattern at position 0",
        "appliance.toml: virtual_server.web.routes[3]: use only one of pool, respond or redirect",
        "appliance.toml: virtual_server.web.routes[4]: needs one of pool, respond or redirect",
        "appliance.toml: virtual_server.web.routes[5].host: a wildcard is written \"*.example.com\", got 'a.*.com'",
        "appliance.toml: virtual_server.web.routes[5].pool: unknown pool 'nope' (known: p)",
    ]


def test_redirect_route_errors(write_config):
    text = """
    [virtual_server.web]
    listen = "127.0.0.1:8080"
    profile = "http"
    routes = [
      { path_prefix = "/a", redirect = "https://{host}{url}" },
      { path_prefix = "/b", redirect = "https://{host:>9}/" },
      { path_prefix = "/c", redirect = "https://{host/" },
      { path_prefix = "/d", redirect = "{host}/x" },
      { path_prefix = "/e", redirect = "//{host}/" },
      { path_prefix = "/f", redirect = "https://x/a b" },
      { path_prefix = "/g", redirect = "/new", redirect_code = 200 },
      { path_prefix = "/h", respond = 403, redirect_code = 301 },
      { path_prefix = "/i", respond = 403, redirect = "/new" },
      { path_prefix = "/j", redirect = "https://{{literal}}.example/{path}", redirect_code = 308 },
    ]
    """
    assert errors_of(write_config, text) == [
        "appliance.toml: virtual_server.web.routes[0].redirect: unknown placeholder {url} (known: {host}, {uri}, {path})",
        "appliance.toml: virtual_server.web.routes[1].redirect: unknown placeholder {host:>9} (known: {host}, {uri}, {path})",
        "appliance.toml: virtual_server.web.routes[2].redirect: expected '}' before end of string"
        " (a literal brace is written {{ or }})",
        "appliance.toml: virtual_server.web.routes[3].redirect: must be an absolute URL (http:// or https://)"
        " or a path starting with '/', got '{host}/x'",
        "appliance.toml: virtual_server.web.routes[4].redirect: a scheme-relative URL (//...) is ambiguous;"
        " write http:// or https://, got '//{host}/'",
        "appliance.toml: virtual_server.web.routes[5].redirect: ' ' cannot stand in a URL (percent-encode it),"
        " got 'https://x/a b'",
        "appliance.toml: virtual_server.web.routes[6].redirect_code: must be one of 301, 302, 303, 307, 308, got 200",
        "appliance.toml: virtual_server.web.routes[7].redirect_code: is only for a route with redirect",
        "appliance.toml: virtual_server.web.routes[8]: use only one of pool, respond or redirect",
        "appliance.toml: virtual_server.web.routes[9].redirect: '{}' cannot stand in a URL (percent-encode it),"
        " got 'https://{{literal}}.example/{path}'",
    ]


def test_profile_files_and_inline_profiles(write_config, tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "fast.toml").write_text(
        '[profile.fast]\ntype = "http"\ntimeout_client = "2s"\nmax_header_bytes = "8KiB"\ntimout_server = "1s"\n'
    )
    text = """
    [virtual_server.web]
    listen = "127.0.0.1:8080"
    profile = "fast"
    pool = "p"
    [profile.tcp]
    timeout_connect = "250ms"
    [pool.p]
    servers = [{ name = "a", address = "127.0.0.1:9001" }]
    """
    path = write_config(text)
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.errors == [f"{tmp_path}/profiles/fast.toml: profile.fast.timout_server: unknown key"]
    (tmp_path / "profiles" / "fast.toml").write_text(
        '[profile.fast]\ntype = "http"\ntimeout_client = "2s"\nmax_header_bytes = "8KiB"\n'
    )
    cfg = load(path)
    assert cfg.profiles["fast"].timeout_client == 2.0
    assert cfg.profiles["fast"].max_header_bytes == 8192
    assert cfg.profiles["tcp"].timeout_connect == 0.25
    # one name, two definitions: an error naming both, whichever way round
    (tmp_path / "profiles" / "slow.toml").write_text('[profile.fast]\ntype = "tcp"\n')
    with pytest.raises(ConfigError) as err:
        load(path)
    assert err.value.errors == [f"{tmp_path}/profiles/slow.toml: profile.fast: defined twice: also in {tmp_path}/profiles/fast.toml"]
    (tmp_path / "profiles" / "slow.toml").unlink()
    with pytest.raises(ConfigError) as err:
        load(write_config(text + '[profile.fast]\ntype = "tcp"\n'))
    assert err.value.errors == [f"{path}: profile.fast: defined twice: also in {tmp_path}/profiles/fast.toml"]


def test_a_file_named_in_include_must_exist_a_pattern_may_match_nothing(write_config):
    text = GOOD.replace('name = "t"', 'name = "t"\ninclude = ["profiles/*.toml", "extra.toml", "more/*.toml"]')
    assert errors_of(write_config, text) == ["appliance.toml: appliance.include[1]: extra.toml: file not found"]


def test_tcp_admin_requires_token(write_config):
    text = """
    [appliance]
    admin = "127.0.0.1:9900"
    [virtual_server.a]
    listen = "127.0.0.1:8080"
    profile = "tcp"
    pool = "p"
    [pool.p]
    servers = [{ name = "a", address = "127.0.0.1:9001" }]
    """
    assert errors_of(write_config, text) == ["appliance.toml: appliance.admin_token: is required when admin is a TCP address"]


def test_invalid_toml_is_reported(write_config):
    errs = errors_of(write_config, "[appliance\nname = 1\n")
    assert errs[0].startswith("appliance.toml: invalid TOML: ")


@pytest.mark.parametrize(
    "text,seconds",
    [("250ms", 0.25), ("10s", 10.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("0", 0.0), (0, 0.0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10", "s", "1 h", "-1s", "1x", True, 5])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_sizes_and_addresses():
    assert parse_size("64KiB") == 65536
    assert parse_size("1MiB") == 1 << 20
    assert parse_size(100) == 100
    assert parse_address("[::1]:8080") == Address("::1", 8080)
    with pytest.raises(ValueError):
        parse_size("lots")
    with pytest.raises(ValueError):
        parse_address("::1:8080")
    for good in ("localhost:80", "0.0.0.0:8080", "a.b-c.example:1", "svc_1:9", "example.com.:443"):
        assert parse_address(good).port > 0
    for bad, why in (("999.1.1.1:80", "is not an IPv4 address"), ("1.2.3.4.5:80", "is not an IPv4 address"),
                     ("exa mple:80", "is not a host name"), ("-a.example:80", "is not a host name")):
        with pytest.raises(ValueError, match=why):
            parse_address(bad)


def test_a_request_line_limit_no_request_fits_is_an_error(write_config):
    text = GOOD + '\n[profile.tiny]\ntype = "http"\nmax_request_line = 0\n'
    assert errors_of(write_config, text) == ["appliance.toml: profile.tiny.max_request_line: must be at least 64 bytes"]


def test_an_empty_admin_socket_path_is_an_error(write_config):
    text = GOOD.replace('admin = "off"', 'admin = "unix:"')
    assert errors_of(write_config, text) == [
        'appliance.toml: appliance.admin: "unix:" needs the socket\'s path, e.g. "unix:run/adc.sock"'
    ]


def test_adc_check_exit_codes(write_config, capsys):
    good = write_config(GOOD)
    assert main(["check", str(good)]) == 0
    out = capsys.readouterr().out
    assert "OK: 2 virtual server(s) on 3 listener(s), 2 pool(s) with 4 real server(s)" in out
    bad = write_config(GOOD.replace('pool = "web"\nroutes', 'pool = "nope"\nroutes'), "bad.toml")
    assert main(["check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}: virtual_server.web.pool: unknown pool 'nope' (known: chat, web)" in err


def test_check_hints_at_dev_certificates_when_only_they_are_missing(write_config, capsys):
    path = write_config(
        """
        [appliance]
        admin = "off"
        [virtual_server.s]
        listen = "127.0.0.1:8443"
        profile = "https"
        pool = "p"
        [pool.p]
        servers = [{ name = "a", address = "127.0.0.1:9001" }]
        """
    )
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: profile.https.client_ssl.certificates[0]: " in err and "adc.pem: no such file" in err
    assert "hint: `adc certs init` (or `adc run`) makes the development certificates in certs/" in err


def test_unusable_tls_settings_are_errors_before_anything_listens(write_config):
    text = """
    [appliance]
    name = "t"
    admin = "off"

    [profile.tls]
    type = "https"
    [profile.tls.client_ssl]
    certificates = [ { cert = "certs/adc.pem", key = "certs/adc.key" } ]
    ciphers = "NOT-A-CIPHER"
    min_version = "TLSv1.3"
    max_version = "TLSv1.2"
    client_crl = "certs/crl.pem"

    [server_ssl.up]
    ciphers = "ALSO-NOT-ONE"
    alpn = [1]
    sni = "bad name..with spaces"
    verify = false
    crl = "certs/crl.pem"

    [virtual_server.web]
    listen = "127.0.0.1:8443"
    profile = "tls"
    pool = "p"

    [pool.p]
    server_ssl = "up"
    servers = [{ name = "a", address = "127.0.0.1:9001" }]
    """
    errors = errors_of(write_config, text)
    assert "appliance.toml: profile.tls.client_ssl.min_version: TLSv1.3 is above max_version TLSv1.2: no version is left" in errors
    assert "appliance.toml: profile.tls.client_ssl.ciphers: OpenSSL knows no cipher in 'NOT-A-CIPHER'" in errors
    assert ("appliance.toml: profile.tls.client_ssl.client_crl: needs verify_client = \"optional\" or \"required\""
            " (no certificate is asked for)") in errors
    assert "appliance.toml: server_ssl.up.ciphers: OpenSSL knows no cipher in 'ALSO-NOT-ONE'" in errors
    assert "appliance.toml: server_ssl.up.alpn: item 0 must be a protocol name (a string of 1-255 bytes), got 1" in errors
    assert "appliance.toml: server_ssl.up.sni: 'bad name..with spaces' is not a host name, an IP address or \"@host\"" in errors
    assert "appliance.toml: server_ssl.up.crl: needs verify = true (no certificate is checked)" in errors


@pytest.mark.parametrize("settings, forwarded", [
    ('', False),
    (', verify_client = "optional", client_ca = "certs/ca.pem"', True),
    (', verify_client = "required", client_ca = "certs/ca.pem"', True),
    (', verify_client = "required", client_ca = "certs/ca.pem", forward_client_cert = false', False),
    (', forward_client_cert = true', True),  # X-SSL-Client-Verify: NONE, and forged fields dropped
])
def test_client_certificates_are_forwarded_by_default_when_asked_for(write_config, settings, forwarded):
    path = write_config(f"""
    [appliance]
    admin = "off"
    [profile.tls]
    type = "https"
    client_ssl = {{ certificates = [ {{ cert = "certs/adc.pem", key = "certs/adc.key" }} ]{settings} }}
    [virtual_server.s]
    listen = "127.0.0.1:8443"
    profile = "tls"
    pool = "p"
    [pool.p]
    servers = [{{ name = "a", address = "127.0.0.1:9001" }}]
    """)
    assert load(path).profiles["tls"].client_ssl.forward_client_cert is forwarded


def test_health_check_without_host_on_an_sni_from_host_pool_is_a_warning(write_config):
    text = """
    [appliance]
    admin = "off"
    [server_ssl.up]
    sni = "@host"
    [virtual_server.web]
    listen = "127.0.0.1:8080"
    profile = "http"
    pool = "p"
    [pool.p]
    server_ssl = "up"
    servers = [{ name = "a", address = "127.0.0.1:9001" }]
    [pool.p.health]
    type = "tls"
    """
    config = load(write_config(text))
    assert config.warnings == (
        f"{config.source}: pool.p.health.host: unset, and server_ssl.up takes its name from the request's Host: "
        "the tls check verifies each real server's certificate against its address; set host to a name the "
        "certificates carry",
    )
    assert load(write_config(text + 'host = "api.internal"\n', "named.toml")).warnings == ()


def test_server_ssl_without_sni_warns_for_servers_addressed_by_name(write_config):
    text = """
    [appliance]
    admin = "off"
    [server_ssl.up]
    [virtual_server.web]
    listen = "127.0.0.1:8080"
    profile = "http"
    pool = "p"
    [pool.p]
    server_ssl = "up"
    servers = [{ name = "a", address = "127.0.0.1:9001" }, { name = "b", address = "backend.internal:9002" }]
    """
    config = load(write_config(text))
    assert config.warnings == (
        f"{config.source}: pool.p.server_ssl: server_ssl.up sets no sni, so the certificates of b (addressed by "
        "name) are verified by their chain only; set sni to the name they carry",
    )
    named = text.replace("[server_ssl.up]", '[server_ssl.up]\nsni = "backend.internal"')
    assert load(write_config(named, "named.toml")).warnings == ()
    unverified = text.replace("[server_ssl.up]", "[server_ssl.up]\nverify = false")
    assert load(write_config(unverified, "lax.toml")).warnings == ()


def test_access_log_file_is_relative_to_its_file_and_must_be_writable(write_config, tmp_path):
    base = 'name = "t"\nadmin = "off"\n'
    rest = '[virtual_server.l4]\nlisten = "127.0.0.1:9000"\nprofile = "tcp"\npool = "p"\n[pool.p]\nservers = [{ name = "a", address = "127.0.0.1:9001" }]\n'
    cfg = load(write_config(f'[appliance]\n{base}access_log = "access.log"\n{rest}'))
    assert cfg.appliance.access_log == str((cfg.source.parent / "access.log").resolve())
    assert errors_of(write_config, f'[appliance]\n{base}access_log = "no/such/dir/access.log"\n{rest}') == [
        f"appliance.toml: appliance.access_log: directory {(tmp_path / 'no/such/dir').resolve()} does not exist"
    ]
    assert errors_of(write_config, f'[appliance]\n{base}access_log = "."\n{rest}') == [
        f"appliance.toml: appliance.access_log: {tmp_path.resolve()} is a directory"
    ]


def test_duplicate_name_is_reported_beside_the_other_errors_of_its_server(write_config):
    text = """
    [appliance]
    admin = "off"
    [virtual_server.raw]
    listen = "127.0.0.1:9000"
    profile = "tcp"
    pool = "p"
    [pool.p]
    servers = [{ name = "a", address = "127.0.0.1:99999" }, { name = "a", address = "127.0.0.1:9002" }]
    """
    assert errors_of(write_config, text) == [
        "appliance.toml: pool.p.servers[0].address: bad address '127.0.0.1:99999': port must be 1..65535",
        "appliance.toml: pool.p.servers[1].name: duplicate server name 'a' (also servers[0])",
    ]


def test_settings_a_profile_or_a_virtual_server_cannot_use_are_warnings(write_config):
    # a tcp profile reads no HTTP and no TLS; a tcp virtual server has no request to hash on
    text = """
    [appliance]
    admin = "off"
    [profile.raw]
    type = "tcp"
    timeout_client = "1m"
    timeout_tunnel = "1s"
    websocket = false
    [profile.web]
    type = "http"
    timeout_tls_handshake = "1s"
    [virtual_server.raw]
    listen = "127.0.0.1:9000"
    profile = "raw"
    pool = "by-path"
    [virtual_server.raw2]
    listen = "127.0.0.1:9001"
    profile = "tcp"
    pool = "by-user"
    [virtual_server.by-source]
    listen = "127.0.0.1:9002"
    profile = "tcp"
    pool = "by-source"
    [virtual_server.sticky]
    listen = "127.0.0.1:9003"
    profile = "tcp"
    pool = "by-cookie"
    [pool.by-cookie]
    persistence = { type = "cookie" }
    servers = [{ name = "a", address = "127.0.0.1:9104" }]
    [pool.by-path]
    method = "uri-hash"
    servers = [{ name = "a", address = "127.0.0.1:9101" }]
    [pool.by-user]
    method = "maglev"
    hash_on = "header:X-User"
    servers = [{ name = "a", address = "127.0.0.1:9102" }]
    [pool.by-source]
    method = "maglev"
    servers = [{ name = "a", address = "127.0.0.1:9103" }]
    """
    config = load(write_config(text))
    src = config.source
    assert config.warnings == (
        f"{src}: profile.raw.timeout_tunnel: does not apply to a profile of type tcp (ignored)",
        f"{src}: profile.raw.websocket: does not apply to a profile of type tcp (ignored)",
        f"{src}: profile.web.timeout_tls_handshake: does not apply to a profile of type http (ignored)",
        f"{src}: virtual_server.raw.pool: pool 'by-path' hashes on the request's path, which a tcp virtual server "
        "does not read: its connections are hashed on the client address",
        f"{src}: virtual_server.raw2.pool: pool 'by-user' hashes on the request's header X-User, which a tcp "
        "virtual server does not read: its connections are hashed on the client address",
        f"{src}: virtual_server.sticky.pool: pool 'by-cookie' persists by cookie, which a tcp virtual server can "
        "neither set nor read: its connections are balanced without persistence (source-ip persistence works at "
        "Layer 4)",
    )
    assert config.profiles["raw"].timeout_client == 60.0
