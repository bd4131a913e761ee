#!/usr/bin/env python3
"""Benchmark adc against HAProxy, side by side in one run.

    python bench/run.py [l4|http|ws|mem|tls|all ...] [--quick] [--no-results] [--only direct,haproxy,adc]

Every scenario measures three paths with the same load generator and real server:
``direct`` (no proxy: what the load generator and real server manage on their own), ``haproxy``
(Debian's HAProxy 2.6, ``nbthread 1``) and ``adc`` (``python -m adc run``). The proxy under test
runs on CPU 0 (``taskset -c 0``); the load generator and the real servers run on CPU 1.
Clients and servers are small C programs under ``bench/src/``, compiled at run time into
``bench/build/`` (git-ignored). All traffic goes to 127.0.0.1; every load loop is bounded in
count and time. Results are printed and written to ``bench/RESULTS.md`` (one section per scenario).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
BUILD = BENCH / "build"
RUN = BUILD / "run"
SRC = BENCH / "src"
RESULTS = BENCH / "RESULTS.md"
HAPROXY = "/usr/sbin/haproxy"
PROXY_CPU = "0"
LOAD_CPU = "1"
TOOLS = ("bulk", "srv", "connrate", "wsclient")
TARGETS = ("direct", "haproxy", "adc")
# Measuring devices run beside adc on the new wss connection rows (bench/floor.py): what each leaves out
FLOORS = {
    "floor": "adc's TLS layer and a byte relay, no HTTP: bench/floor.py",
    "floor-http": "the floor plus the least HTTP work of a Layer-7 proxy, interpreted: bench/floor.py --http",
}
SERVER_LIFETIME = 900  # seconds; real servers exit by themselves after this
NOFILE_WANTED = 20000


def log(msg: str) -> None:
    print(msg, flush=True)


def rel(path: Path | str) -> str:
    try:
        return os.path.relpath(path, REPO)
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- processes


def _die_with_parent() -> None:
    """In the child before exec: get SIGKILL if the harness dies without cleaning up (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class Processes:
    """Every long-running child (proxies, real servers); all are killed on exit, error or Ctrl-C."""

    def __init__(self) -> None:
        self.live: list[subprocess.Popen] = []

    def start(self, argv: list[str], *, log_path: Path | None = None, **kw) -> subprocess.Popen:
        out = open(log_path, "wb") if log_path else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(argv, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent, **kw)
        finally:
            if log_path:
                out.close()
        self.live.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, grace: float = 3.0) -> None:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)
        if proc in self.live:
            self.live.remove(proc)

    def stop_all(self) -> None:
        for proc in list(reversed(self.live)):
            self.stop(proc, grace=1.0)


PROCS = Processes()
COMMANDS: list[str] = []  # exact commands of the current scenario, for RESULTS.md
CONFIGS: dict[str, str] = {}  # generated proxy configuration files of the current scenario
CURRENT = [""]  # the path (direct, haproxy, adc) being measured, to label commands


def note_command(argv: list, label: str = "") -> None:
    words = ["python" if str(a) == sys.executable else
             rel(a) if isinstance(a, Path) or str(a).startswith(str(REPO)) else str(a) for a in argv]
    line = shlex.join(words)
    label = label or CURRENT[0]
    if label:
        line += f"    # {label}"
    if line not in COMMANDS:
        COMMANDS.append(line)


def pinned(cpu: str, argv: list) -> list[str]:
    return ["taskset", "-c", cpu, *[str(a) for a in argv]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process, in clock ticks."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


TICK = os.sysconf("SC_CLK_TCK")


def cpu_times(cpu: str) -> tuple[int, int]:
    """(busy, total) jiffies of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            idle = v[3] + v[4]
            return sum(v[:8]) - idle, sum(v[:8])
    return 0, 0


@dataclass
class Sample:
    """One measurement: the figure, plus how busy the proxy and the load generator were."""

    value: float | None
    extra: dict = field(default_factory=dict)
    proxy_cpu: float | None = None  # fraction of CPU 0 used by the proxy
    client_cpu: float | None = None  # how busy CPU 1 was (load generator + real server)
    error: str = ""
    other_cpu0: float | None = None  # CPU 0 time not used by the proxy: other work disturbing the run


def run_client(argv: list, timeout: float, proxy: subprocess.Popen | None) -> tuple[str, float, float | None]:
    out, load_share, proxy_share, other = run_client_full(argv, timeout, proxy)
    LAST_OTHER[0] = other
    return out, load_share, proxy_share


LAST_OTHER: list[float | None] = [None]


def run_client_full(argv: list, timeout: float, proxy: subprocess.Popen | None):
    """Run a bounded load generator pinned to the load CPU.

    Returns its stdout, how busy the load CPU was (client + real server) and the proxy's CPU share."""
    cmd = pinned(LOAD_CPU, argv)
    note_command(cmd)
    c0 = cpu_times(LOAD_CPU)
    z0 = cpu_times(PROXY_CPU)
    p0 = cpu_ticks(proxy.pid) if proxy else 0
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    wall = time.monotonic() - t0
    c1 = cpu_times(LOAD_CPU)
    z1 = cpu_times(PROXY_CPU)
    proxy_share = (cpu_ticks(proxy.pid) - p0) / TICK / wall if proxy else None
    client_share = (c1[0] - c0[0]) / max(1, c1[1] - c0[1])
    other = max(0.0, (z1[0] - z0[0]) / max(1, z1[1] - z0[1]) - (proxy_share or 0.0))
    if res.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} exited {res.returncode}: {res.stderr.strip()[-400:]}")
    if res.stderr.strip():
        log(f"    (client stderr: {res.stderr.strip()[-300:]})")
    return res.stdout, client_share, proxy_share, other


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no result line in: {text[-300:]!r}")


# ---------------------------------------------------------------- setup


def ensure_packages() -> None:
    missing = [pkg for pkg, path in (("haproxy", HAPROXY), ("wrk", "/usr/bin/wrk")) if not Path(path).exists()]
    if not missing:
        return
    log(f"installing {', '.join(missing)} with apt-get (not found on this machine)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *missing], check=True, env=env)


def build_tools() -> None:
    BUILD.mkdir(exist_ok=True)
    RUN.mkdir(exist_ok=True)
    (BUILD / ".gitignore").write_text("*\n")
    header = SRC / "common.h"
    for tool in TOOLS:
        src, out = SRC / f"{tool}.c", BUILD / tool
        if out.exists() and out.stat().st_mtime > max(src.stat().st_mtime, header.stat().st_mtime):
            continue
        cmd = ["gcc", "-O2", "-Wall", "-o", str(out), str(src), "-lssl", "-lcrypto"]
        log(f"compiling {rel(src)}")
        subprocess.run(cmd, check=True, cwd=REPO)


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(NOFILE_WANTED, hard) if hard != resource.RLIM_INFINITY else NOFILE_WANTED
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def make_certs() -> dict[str, tuple[Path, Path, Path]]:
    """ECDSA P-256 and RSA-2048 self-signed certificates: name -> (cert, key, cert+key for HAProxy)."""
    certs = {}
    d = BUILD / "certs"
    d.mkdir(exist_ok=True)
    for name, keyargs in (("ecdsa", ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]),
                          ("rsa", ["-newkey", "rsa:2048"])):
        cert, key, both = d / f"{name}.pem", d / f"{name}.key", d / f"{name}-haproxy.pem"
        # made again once fewer than 31 days are left: adc warns about a certificate that expires
        # within 30 days and refuses an expired one
        fresh = cert.exists() and key.exists() and subprocess.run(
            ["openssl", "x509", "-checkend", str(31 * 86400), "-noout", "-in", str(cert)],
            capture_output=True).returncode == 0
        if not fresh:
            subprocess.run(["openssl", "req", "-x509", *keyargs, "-nodes", "-days", "365",
                            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                            "-keyout", str(key), "-out", str(cert)],
                           check=True, capture_output=True)
        both.write_text(cert.read_text() + key.read_text())
        certs[name] = (cert, key, both)
    return certs


def machine_facts() -> list[str]:
    def first_line(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "?"

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    return [
        f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
        f"CPU: {cpu}, {os.cpu_count()} cores; memory {int(mem) // 1024} MiB",
        f"kernel: {platform.release()}; Python {platform.python_version()} "
        f"({os.path.realpath(getattr(sys, '_base_executable', sys.executable))}, which runs adc)",
        f"HAProxy: {first_line([HAPROXY, '-v'])}",
        f"wrk: {first_line(['wrk', '-v'])}; {first_line(['openssl', 'version'])}; gcc {first_line(['gcc', '-dumpfullversion'])}",
        f"pinning: proxy on CPU {PROXY_CPU}, load generator and real servers on CPU {LOAD_CPU}",
    ]


def background_load(secs: float = 1.0) -> str:
    """How busy both CPUs are before any load: other work on the machine makes every figure noisy."""
    a = [cpu_times(c) for c in (PROXY_CPU, LOAD_CPU)]
    time.sleep(secs)
    b = [cpu_times(c) for c in (PROXY_CPU, LOAD_CPU)]
    busy = [(y[0] - x[0]) / max(1, y[1] - x[1]) for x, y in zip(a, b)]
    text = f"background load before the run: CPU 0 {busy[0]:.0%}, CPU 1 {busy[1]:.0%}; load average {os.getloadavg()[0]:.2f}"
    if max(busy) > 0.05:
        text += " (**the machine is not idle: figures are disturbed**)"
    return text


def wait_idle(limit: float) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        text = background_load(1.0)
        if "not idle" not in text:
            return
        log(f"  waiting for an idle machine: {text}")
    log("  the machine did not become idle; measuring anyway")


# ---------------------------------------------------------------- proxies


@dataclass
class Backend:
    port: int
    proc: subprocess.Popen


@contextmanager
def backend(kind: str) -> Iterator[Backend]:
    """A real server on the load CPU: kind is 'sink' (bulk) or a srv mode (echo, http, ws)."""
    port = free_port()
    if kind == "sink":
        argv = [BUILD / "bulk", "sink", port, 1000]
    else:
        argv = [BUILD / "srv", kind, port, SERVER_LIFETIME]
    cmd = pinned(LOAD_CPU, argv)
    note_command(cmd, "real server")
    proc = PROCS.start(cmd, log_path=RUN / f"backend-{kind}.log")
    try:
        if not wait_port_listening(port, proc):
            raise RuntimeError(f"real server {kind} did not start")
        yield Backend(port, proc)
    finally:
        PROCS.stop(proc)


def wait_port_listening(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> bool:
    """Wait for a listening socket without connecting (a connection would count as traffic)."""
    hexport = f":{port:04X} "
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
                parts = line.split()
                if parts[1].endswith(hexport.strip()) and parts[3] == "0A":
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def haproxy_config(mode: str, port: int, backend_port: int, pem: Path | None) -> str:
    ssl = f" ssl crt {pem}" if pem else ""
    # In HTTP mode HAProxy adds what adc adds by default (X-Forwarded-For, X-Forwarded-Proto),
    # so both forward the same request to the real server.
    forwarded = ""
    if mode == "http":
        forwarded = f"""
    option forwardfor
    http-request set-header X-Forwarded-Proto {'https' if pem else 'http'}"""
    return f"""# generated by bench/run.py: HAProxy defaults, one thread (one CPU, like adc)
global
    nbthread 1
    maxconn 9000

defaults
    mode {mode}
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 1h

frontend fe
    bind 127.0.0.1:{port}{ssl}{forwarded}
    default_backend be

backend be
    server s1 127.0.0.1:{backend_port}
"""


def adc_config(profile: str, port: int, backend_port: int, cert: tuple[Path, Path] | None) -> str:
    extra = ""
    if profile == "https":
        profile = "bench-https"
        extra = f"""
[profile.bench-https]
type = "https"
client_ssl = {{ certificates = [ {{ cert = "{cert[0]}", key = "{cert[1]}" }} ] }}
"""
    return f"""# generated by bench/run.py
[appliance]
name = "bench"
admin = "off"
access_log = "off"

[virtual_server.bench]
listen = "127.0.0.1:{port}"
profile = "{profile}"
pool = "p"
{extra}
[pool.p]
servers = [ {{ name = "s1", address = "127.0.0.1:{backend_port}" }} ]
"""


ADC_STATE: dict[str, str] = {}


def adc_traffic_path() -> str:
    """How `python -m adc run` will run the traffic path: compiled, or pure Python and why
    (a checkout edited after `pip install -e .` runs its sources: the figures would be the
    slow package's)."""
    r = subprocess.run([sys.executable, "-c", "import adc.compiled as c; print(c.status())"], cwd=REPO,
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip() or (r.stderr.strip().splitlines() or ["unknown"])[-1]


def adc_available() -> tuple[bool, str]:
    if "ok" not in ADC_STATE:
        try:
            r = subprocess.run([sys.executable, "-m", "adc", "run", "--help"], cwd=REPO,
                               capture_output=True, text=True, timeout=30)
            ok = r.returncode == 0
            why = "" if ok else (r.stderr.strip().splitlines() or ["?"])[-1]
        except subprocess.TimeoutExpired:
            ok, why = False, "`adc run --help` timed out"
        ADC_STATE["ok"] = "1" if ok else ""
        ADC_STATE["why"] = why
    return bool(ADC_STATE["ok"]), ADC_STATE["why"]


@dataclass
class Proxy:
    target: str
    port: int
    proc: subprocess.Popen | None


@contextmanager
def proxy(target: str, mode: str, backend_port: int, tls: tuple[Path, Path, Path] | None = None) -> Iterator[Proxy]:
    """Start `target` (direct, haproxy, adc, floor or floor-http) in L4 ('tcp') or L7 ('http') mode in front of a real server."""
    if target == "direct":
        yield Proxy(target, backend_port, None)
        return
    port = free_port()
    if target in FLOORS:  # measuring devices (bench/floor.py): new wss connections only
        assert tls is not None and mode == "http"
        argv = [sys.executable, BENCH / "floor.py", *(["--http"] if target == "floor-http" else []),
                port, backend_port, tls[0], tls[1]]
    elif target == "haproxy":
        cfg = RUN / f"haproxy-{mode}{'-tls' if tls else ''}.cfg"
        cfg.write_text(haproxy_config(mode, port, backend_port, tls[2] if tls else None))
        argv = [HAPROXY, "-db", "-f", cfg]
    else:
        ok, why = adc_available()
        if not ok:
            raise RuntimeError(f"adc unavailable: {why}")
        profile = {"tcp": "tcp", "http": "https" if tls else "http"}[mode]
        cfg = RUN / f"adc-{profile}.toml"
        cfg.write_text(adc_config(profile, port, backend_port, tls[:2] if tls else None))
        argv = [sys.executable, "-m", "adc", "run", cfg]
    cmd = pinned(PROXY_CPU, argv)
    note_command(cmd, f"{target} under test")
    if target not in FLOORS:
        CONFIGS[rel(cfg)] = cfg.read_text()
    logf = RUN / f"{target}.log"
    proc = PROCS.start(cmd, log_path=logf, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        if not wait_port(port, proc):
            lines = logf.read_text(errors="replace").strip().splitlines() or ["(no output)"]
            raise RuntimeError(f"{target} did not start listening on {port}: {lines[-1][:240]}"
                               f" (log: {rel(logf)})")
        time.sleep(0.2)
        yield Proxy(target, port, proc)
    finally:
        PROCS.stop(proc)


# ---------------------------------------------------------------- measurements

Measure = Callable[[Proxy], Sample]


@dataclass
class Row:
    name: str
    unit: str
    target_ratio: float | None  # adc/HAProxy goal; for "lower is better" rows this is a maximum
    lower_is_better: bool = False
    samples: dict[str, Sample] = field(default_factory=dict)
    note: str = ""


PROFILE: dict[str, object] = {"on": False, "n": 0}
PROFILE_SECS = [3.0]


def start_profile(px: Proxy, secs: float) -> tuple[subprocess.Popen, Path] | None:
    """py-spy (sampling, non-blocking) on the adc process for one measurement; None if unavailable."""
    spy = shutil.which("py-spy")
    if not (PROFILE["on"] and spy and px.target == "adc" and px.proc):
        return None
    PROFILE["n"] = int(PROFILE["n"]) + 1
    raw = BUILD / f"profile-{PROFILE['n']:02d}.raw"
    cmd = pinned(LOAD_CPU, [spy, "record", "--nonblocking", "-r", "250", "-d", f"{secs:g}", "-f", "raw",
                            "-o", raw, "-p", px.proc.pid])
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), raw


def finish_profile(handle: tuple[subprocess.Popen, Path] | None, title: str) -> None:
    if handle is None:
        return
    proc, raw = handle
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    if not raw.exists():
        return
    own: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        total += int(n)
        own[frames[-1]] = own.get(frames[-1], 0) + int(n)
        for f in set(frames):
            incl[f] = incl.get(f, 0) + int(n)
    if not total:
        return
    out = [f"# {title}: {total} samples", "## self"]
    out += [f"{v / total:6.1%} {k}" for k, v in sorted(own.items(), key=lambda kv: -kv[1])[:30]]
    out += ["## inclusive"]
    out += [f"{v / total:6.1%} {k}" for k, v in sorted(incl.items(), key=lambda kv: -kv[1])[:40]]
    txt = raw.with_suffix(".txt")
    txt.write_text("\n".join(out) + "\n")
    log(f"    profile: {rel(txt)} (top self: {', '.join(k for k, _ in sorted(own.items(), key=lambda kv: -kv[1])[:3])})")


def measure_safely(fn: Measure, px: Proxy, title: str = "", secs: float = 3.0) -> Sample:
    handle = start_profile(px, secs)
    try:
        LAST_OTHER[0] = None
        s = fn(px)
        s.other_cpu0 = LAST_OTHER[0]
        return s
    except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, OSError) as exc:
        return Sample(None, error=str(exc)[:300])
    finally:
        finish_profile(handle, title)


def run_rows(rows_and_fns: list[tuple[Row, Measure]], mode: str, backend_kind: str, targets: list[str],
             reps: int, tls: tuple[Path, Path, Path] | None = None) -> None:
    """Start every target's proxy (all on CPU 0, only one loaded at a time), then take each measurement
    `reps` times, alternating targets so that drift of the machine hits them alike; keep the median.

    The order turns by one each repetition (direct, haproxy, adc; then haproxy, adc, direct; ...):
    a run leaves tens of thousands of TIME_WAIT sockets towards the real server for the next one
    to dial past, and the direct run leaves the most, so no target may always come right after it."""
    with backend(backend_kind) as be, ExitStack() as stack:
        proxies: dict[str, Proxy] = {}
        for target in targets:
            try:
                proxies[target] = stack.enter_context(
                    proxy(target, mode, be.port, tls if target != "direct" else None))
            except RuntimeError as exc:
                for row, _ in rows_and_fns:
                    row.samples[target] = Sample(None, error=str(exc)[:300])
                log(f"  {target}: {str(exc)[:300]}")
        for row, fn in rows_and_fns:
            runs: dict[str, list[Sample]] = {t: [] for t in proxies}
            order = list(proxies.items())
            for rep in range(reps):
                turn = rep % len(order) if order else 0
                for target, px in order[turn:] + order[:turn]:
                    if px.proc is not None and px.proc.poll() is not None:
                        runs[target].append(Sample(None, error=f"{target} exited"))
                        continue
                    CURRENT[0] = f"load through {target}" if target != "direct" else "load, direct"
                    runs[target].append(measure_safely(fn, px, row.name, PROFILE_SECS[0]))
                    CURRENT[0] = ""
            for target, samples in runs.items():
                s = combine(samples)
                row.samples[target] = s
                spread = s.extra.get("runs")
                log(f"  {row.name:<44} {target:<8} {fmt(s.value)} {row.unit}"
                    + (f" (runs: {', '.join(fmt(v) for v in spread)})" if spread and len(spread) > 1 else "")
                    + (f"  [{s.error}]" if s.error else "")
                    + (f"  proxy cpu {s.proxy_cpu:.0%}" if s.proxy_cpu is not None else "")
                    + (f"  cpu1 {s.client_cpu:.0%}" if s.client_cpu is not None else "")
                    + (f"  OTHER LOAD ON CPU 0: {s.other_cpu0:.0%}" if (s.other_cpu0 or 0) > 0.05 else ""))


def combine(samples: list[Sample]) -> Sample:
    """The median run (by value) stands for the measurement; every run's value is kept in extra['runs']."""
    good = sorted((s for s in samples if s.value is not None), key=lambda s: s.value)
    if not good:
        return samples[-1] if samples else Sample(None, error="not measured")
    med = good[(len(good) - 1) // 2] if len(good) % 2 == 0 else good[len(good) // 2]
    extra = dict(med.extra)
    extra["runs"] = [s.value for s in samples if s.value is not None]
    extra["by_rep"] = [s.value for s in samples]  # one per repetition, None where it failed
    errs = "; ".join(dict.fromkeys(s.error for s in samples if s.error))
    return Sample(med.value, extra, med.proxy_cpu, med.client_cpu, errs,
                  max((x.other_cpu0 for x in samples if x.other_cpu0 is not None), default=None))


def fmt(v: float | None) -> str:
    if v is None:
        return "n/a"
    if v >= 1000:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}" if v >= 1 else f"{v:.3f}"


class Bench:
    def __init__(self, quick: bool, targets: list[str]) -> None:
        self.quick = quick
        self.secs = 2.0 if quick else 3.0
        self.reps = 1 if quick else 3
        # A 3 s run makes about 3,000 TLS handshakes, and on a shared machine their rate moved by
        # up to a sixth between consecutive runs of the same proxy: those rows keep the median of five.
        self.handshake_reps = 1 if quick else 5
        self.targets = targets
        self.certs: dict[str, tuple[Path, Path, Path]] = {}

    # -- L4
    def l4(self) -> list[Row]:
        nbytes = 2 * 1024 ** 3
        bulk = Row(f"L4 bulk throughput, 1 connection, {nbytes // 1024 ** 3} GiB", "GiB/s", 1.3)
        rate = Row("L4 connection rate (connect, 64 B echo, close; 50 conc.)", "conn/s", None)

        def do_bulk(px: Proxy) -> Sample:
            out, ccpu, pcpu = run_client([BUILD / "bulk", "send", f"127.0.0.1:{px.port}", nbytes, 30],
                                         60, px.proc)
            r = last_json(out)
            if r["received"] != r["bytes"]:
                return Sample(None, r, pcpu, ccpu, f"sent {r['bytes']} received {r['received']}")
            return Sample(r["gib_per_s"], r, pcpu, ccpu)

        def do_rate(px: Proxy) -> Sample:
            out, ccpu, pcpu = run_client([BUILD / "connrate", f"127.0.0.1:{px.port}", 50, self.secs, 5_000_000],
                                         self.secs + 40, px.proc)
            r = last_json(out)
            return Sample(r["per_s"], r, pcpu, ccpu, f"{r['errors']} errors" if r["errors"] else "")

        run_rows([(bulk, do_bulk)], "tcp", "sink", self.targets, self.reps)
        run_rows([(rate, do_rate)], "tcp", "echo", self.targets, self.reps)
        return [bulk, rate]

    # -- HTTP keep-alive
    def wrk(self, px: Proxy, scheme: str) -> Sample:
        argv = ["wrk", "-t1", "-c50", f"-d{self.secs:g}s", f"{scheme}://127.0.0.1:{px.port}/"]
        out, ccpu, pcpu = run_client(argv, self.secs + 30, px.proc)
        m = re.search(r"Requests/sec:\s*([\d.]+)", out)
        if not m:
            raise RuntimeError(f"wrk printed no rate: {out[-300:]}")
        err = ""
        bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
        sock = re.search(r"Socket errors:(.*)", out)
        if bad:
            err += f"{bad.group(1)} non-2xx responses; "
        if sock:
            err += f"socket errors:{sock.group(1)}"
        lat = re.search(r"Latency\s+(\S+)", out)
        return Sample(float(m.group(1)), {"avg_latency": lat.group(1) if lat else "?"}, pcpu, ccpu, err.strip())

    def http(self) -> list[Row]:
        row = Row("HTTP/1.1 keep-alive, wrk 50 conn., 13 B body", "req/s", 0.5)
        run_rows([(row, lambda px: self.wrk(px, "http"))], "http", "http", self.targets, self.reps)
        return [row]

    # -- WebSocket
    def ws_echo(self, px: Proxy, size: int) -> Sample:
        argv = [BUILD / "wsclient", "echo", f"127.0.0.1:{px.port}", 50, size, self.secs, 50_000_000]
        out, ccpu, pcpu = run_client(argv, self.secs + 80, px.proc)
        r = last_json(out)
        if r["count"] == 0:
            return Sample(None, r, pcpu, ccpu, "no round trips completed")
        return Sample(r["per_s"], r, pcpu, ccpu, f"{r['errors']} errors" if r["errors"] else "")

    def ws(self) -> list[Row]:
        small = Row("WebSocket echo, 50 conn., 64 B messages", "round trips/s", 0.85)
        big = Row("WebSocket echo, 50 conn., 64 KiB messages", "round trips/s", 1.3)
        run_rows([(small, lambda px: self.ws_echo(px, 64)), (big, lambda px: self.ws_echo(px, 65536))],
                 "http", "ws", self.targets, self.reps)
        for row in (small, big):
            row.note = "p99 latency (µs): " + ", ".join(
                f"{t} {s.extra.get('p99_us', '?')}" for t, s in row.samples.items() if s.value is not None)
        big.note += "; tunnel throughput (MiB/s both ways): " + ", ".join(
            f"{t} {s.extra.get('mib_per_s', '?')}" for t, s in big.samples.items() if s.value is not None)
        return [small, big] + self.mem()

    def mem(self) -> list[Row]:
        n = 5000
        row = Row(f"Proxy memory per idle WebSocket tunnel ({n:,} tunnels)", "KiB", 1.0, lower_is_better=True)

        def hold(px: Proxy) -> Sample:
            if px.proc is None:
                return Sample(None, error="no proxy on the direct path")
            time.sleep(0.3)
            before = rss_kib(px.proc.pid)
            cmd = pinned(LOAD_CPU, [BUILD / "wsclient", "hold", f"127.0.0.1:{px.port}", n, 60])
            note_command(cmd)
            client = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True, start_new_session=True,
                                      preexec_fn=_die_with_parent)
            try:
                ready = ""
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and client.poll() is None:
                    r, _, _ = select.select([client.stdout], [], [], 0.5)
                    if r:
                        ready = client.stdout.readline()
                        if ready.startswith("READY") or not ready:
                            break
                if not ready.startswith("READY"):
                    raise RuntimeError(f"tunnels not established: {client.stderr.read()[-300:] if client.poll() is not None else 'timeout'}")
                held = int(ready.split()[1])
                time.sleep(1.0)
                after = rss_kib(px.proc.pid)
                client.stdin.close()
                out = client.stdout.read()
                client.wait(30)
            finally:
                if client.poll() is None:
                    os.killpg(client.pid, signal.SIGKILL)
                    client.wait(5)
            if held < n:
                return Sample(None, {"held": held}, error=f"only {held} of {n} tunnels held")
            extra = {"rss_before_kib": before, "rss_after_kib": after, "held": held, "client": last_json(out)}
            return Sample((after - before) / held, extra)

        targets = [t for t in self.targets if t != "direct"]
        run_rows([(row, hold)], "http", "ws", targets, 1)
        row.note = "RSS before → with tunnels (KiB): " + ", ".join(
            f"{t} {s.extra.get('rss_before_kib')} → {s.extra.get('rss_after_kib')}"
            for t, s in row.samples.items() if s.value is not None)
        return [row]

    # -- TLS
    def tls(self) -> list[Row]:
        if not self.certs:
            self.certs = make_certs()
        rows = []
        for name, label in (("ecdsa", "ECDSA P-256"), ("rsa", "RSA-2048")):
            row = Row(f"New wss connections ({label}): TLS + upgrade + echo + close, 50 conc.", "conn/s", 0.8)

            def conn(px: Proxy) -> Sample:
                tls_arg = [] if px.target == "direct" else ["tls"]
                argv = [BUILD / "wsclient", "conn", f"127.0.0.1:{px.port}", 50, self.secs, 5_000_000, *tls_arg]
                out, ccpu, pcpu = run_client(argv, self.secs + 80, px.proc)
                r = last_json(out)
                return Sample(r["per_s"] or None, r, pcpu, ccpu, f"{r['errors']} errors" if r["errors"] else "")

            # the floors (bench/floor.py) run beside adc: what the runtime and TLS layer cost without the
            # engine, and with the least HTTP work any Layer-7 proxy does
            targets = self.targets + (list(FLOORS) if "adc" in self.targets else [])
            run_rows([(row, conn)], "http", "ws", targets, self.handshake_reps, tls=self.certs[name])
            row.note = "direct is plaintext ws (the real server has no TLS): it shows the load generator's ceiling"
            rows.append(row)
        ka = Row("HTTPS keep-alive (ECDSA P-256), wrk 50 conn.", "req/s", 0.5)
        run_rows([(ka, lambda px: self.wrk(px, "http" if px.target == "direct" else "https"))],
                 "http", "http", self.targets, self.reps, tls=self.certs["ecdsa"])
        ka.note = "direct is plain HTTP to the same real server"
        return rows + [ka]


# ---------------------------------------------------------------- reporting

SCENARIOS = {
    "l4": ("Layer 4 (TCP)", Bench.l4),
    "http": ("HTTP keep-alive", Bench.http),
    "ws": ("WebSocket", Bench.ws),
    "mem": ("Memory per idle WebSocket tunnel", Bench.mem),
    "tls": ("TLS termination", Bench.tls),
}


def ratio(row: Row) -> float | None:
    a, h = row.samples.get("adc"), row.samples.get("haproxy")
    if not a or not h or a.value is None or not h.value:
        return None
    return a.value / h.value


def cpu_ratio(row: Row, target: str = "adc", base: str = "haproxy") -> float | None:
    """target/base (adc/HAProxy by default) in work per second of the proxy's own CPU: the
    ratio with a proxy that the load side held back below a full CPU taken at its full-CPU
    pace (rates only)."""
    a, h = row.samples.get(target), row.samples.get(base)
    if row.lower_is_better or not a or not h or a.value is None or not h.value:
        return None
    if not a.proxy_cpu or not h.proxy_cpu:
        return None
    return (a.value / a.proxy_cpu) / (h.value / h.proxy_cpu)


def paired_ratios(row: Row) -> list[float]:
    """adc/HAProxy repetition by repetition: both ran back to back in each, so the machine's
    drift between repetitions, which moves both, cancels out of each ratio."""
    a, h = row.samples.get("adc"), row.samples.get("haproxy")
    if not a or not h:
        return []
    return [x / y for x, y in zip(a.extra.get("by_rep", []), h.extra.get("by_rep", [])) if x is not None and y]


def floor_cell(row: Row) -> str:
    """The floors' figures (bench/floor.py) and where adc stands between them and HAProxy."""
    a, h = row.samples.get("adc"), row.samples.get("haproxy")
    cells = []
    for name, what in FLOORS.items():
        f = row.samples.get(name)
        if not f or f.value is None:
            continue
        out = f"{name} ({what}) {fmt(f.value)} {row.unit}"
        if f.proxy_cpu is not None:
            out += f" at proxy {f.proxy_cpu:.0%}"
        if h and h.value:
            out += f", {name}/HAProxy {f.value / h.value:.2f}×"
            per_cpu = cpu_ratio(row, name)
            if per_cpu is not None:
                out += f" ({per_cpu:.2f}× per second of proxy CPU)"
        if a and a.value is not None:
            out += f", adc/{name} {a.value / f.value:.2f}×"
            per_cpu = cpu_ratio(row, "adc", name)
            if per_cpu is not None:
                out += f" ({per_cpu:.2f}× per second of proxy CPU)"
        cells.append(out)
    return " · ".join(cells)


def verdict(row: Row) -> str:
    r = ratio(row)
    if r is None or row.target_ratio is None:
        return ""
    ok = r <= row.target_ratio if row.lower_is_better else r >= row.target_ratio
    return "met" if ok else "missed"


def cpu_cell(s: Sample | None) -> str:
    if not s or s.value is None:
        return ""
    parts = []
    if s.proxy_cpu is not None:
        parts.append(f"proxy {s.proxy_cpu:.0%}")
    if s.client_cpu is not None:
        parts.append(f"CPU 1 {s.client_cpu:.0%}")
    if (s.other_cpu0 or 0) > 0.05:
        parts.append(f"**other work on CPU 0 {s.other_cpu0:.0%}**")
    return ", ".join(parts)


def table(rows: list[Row]) -> str:
    head = "| measurement | unit | direct | HAProxy | adc | adc/HAProxy | target | |\n|---|---|---:|---:|---:|---:|---:|---|\n"
    lines = []
    for row in rows:
        r = ratio(row)
        tgt = "" if row.target_ratio is None else ("≤ " if row.lower_is_better else "≥ ") + f"{row.target_ratio:g}×"
        cells = [fmt(row.samples[t].value) if t in row.samples else "—" for t in TARGETS]
        lines.append(f"| {row.name} | {row.unit} | {' | '.join(cells)} | "
                     f"{'' if r is None else f'{r:.2f}×'} | {tgt} | {verdict(row)} |")
    out = head + "\n".join(lines) + "\n"
    details = []
    for row in rows:
        cpu = "; ".join(f"{t}: {cpu_cell(row.samples.get(t))}" for t in TARGETS if cpu_cell(row.samples.get(t)))
        errs = "; ".join(f"{t}: {s.error}" for t, s in row.samples.items() if s.error)
        by_cpu = cpu_ratio(row)
        pairs = paired_ratios(row)
        by_rep = (f"adc/HAProxy run by run {', '.join(f'{r:.2f}' for r in pairs)} "
                  f"(median {statistics.median(pairs):.2f}×)") if len(pairs) > 1 else ""
        bits = [b for b in (f"CPU (proxy's share of CPU 0; CPU 1 = load generator + real server) — {cpu}" if cpu else "",
                            f"per second of proxy CPU adc/HAProxy {by_cpu:.2f}×" if by_cpu is not None else "",
                            by_rep, floor_cell(row),
                            row.note, f"errors — {errs}" if errs else "") if b]
        if bits:
            details.append(f"- {row.name}: " + " · ".join(bits))
    if details:
        out += "\n" + "\n".join(details) + "\n"
    return out


def config_blocks(configs: dict[str, str]) -> list[str]:
    out = []
    for name, text in configs.items():
        lang = "toml" if name.endswith(".toml") else ""
        out += [f"<details><summary>{name}</summary>", "", f"```{lang}", text.rstrip("\n"), "```", "", "</details>", ""]
    return out


def write_section(key: str, title: str, rows: list[Row], facts: list[str], commands: list[str], quick: bool,
                  configs: dict[str, str]) -> None:
    body = [f"<!-- section:{key} -->", f"## {title}", "",
            f"`python bench/run.py {key}{' --quick' if quick else ''}`", "", table(rows),
            "Machine and versions:", "", *[f"- {f}" for f in facts], "",
            "Commands (the proxy on CPU 0, load generator and real server on CPU 1; ports are picked at run time,"
            " configuration files are written to `bench/build/run/`):", "", "```",
            *commands, "```", "", *config_blocks(configs), f"<!-- /section:{key} -->"]
    section = "\n".join(body)
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# adc vs HAProxy: benchmark results\n\n"
        "Written by `bench/run.py`; each section is refreshed by its scenario. See `bench/README.md`.\n")
    pat = re.compile(rf"<!-- section:{key} -->.*?<!-- /section:{key} -->", re.S)
    text = pat.sub(lambda _: section, text) if pat.search(text) else text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="adc vs HAProxy benchmarks (same run, same load generator)")
    ap.add_argument("scenarios", nargs="*", default=["all"], choices=[*SCENARIOS, "all"])
    ap.add_argument("--quick", action="store_true", help="one 2 s run per measurement instead of the median of three (or five) 3 s runs")
    ap.add_argument("--no-results", action="store_true", help="do not write bench/RESULTS.md")
    ap.add_argument("--only", default=",".join(TARGETS), help="comma-separated subset of direct,haproxy,adc")
    ap.add_argument("--profile", action="store_true",
                    help="sample adc with py-spy during its runs; summaries go to bench/build/profile-NN.txt")
    ap.add_argument("--wait-idle", type=float, default=0.0, metavar="SECS",
                    help="before each scenario wait up to SECS for both CPUs to be idle (other work skews figures)")
    args = ap.parse_args(argv)
    targets = [t for t in args.only.split(",") if t in TARGETS]
    keys = [k for k in SCENARIOS if k != "mem"] if "all" in args.scenarios else list(dict.fromkeys(args.scenarios))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    try:
        os.sched_setaffinity(0, {int(LOAD_CPU)})  # keep the harness itself off the proxy's CPU
    except OSError:
        pass
    try:
        ensure_packages()
        build_tools()
        raise_nofile()
        facts = machine_facts()
        facts.append(background_load())
        ok, why = adc_available()
        facts.append("adc: python -m adc run (" + ("available" if ok else f"NOT available: {why}") + ")")
        path = adc_traffic_path()
        facts.append(f"adc traffic path: {path}")
        if ok and not path.startswith("compiled"):
            log(f"WARNING: adc's traffic path is {path}: these are not the installed appliance's figures")
        facts.append("HAProxy: nbthread 1 (one CPU, like adc), mode tcp for L4 and mode http for L7, "
                     "default options otherwise; adc: shipped profiles (tcp/http), admin and access log off")
        log("\n".join(facts))
        bench = Bench(args.quick, targets)
        PROFILE["on"] = args.profile
        PROFILE_SECS[0] = bench.secs
        if args.profile and not shutil.which("py-spy"):
            log("--profile: py-spy not found (pip install py-spy); running without profiles")
        for key in keys:
            title, fn = SCENARIOS[key]
            log(f"\n== {title} ==")
            COMMANDS.clear()
            CONFIGS.clear()
            if args.wait_idle > 0:
                wait_idle(args.wait_idle)
            rows = fn(bench)
            log("\n" + table(rows))
            if not args.no_results:
                write_section(key, title, rows, facts, list(COMMANDS), args.quick, dict(CONFIGS))
    except KeyboardInterrupt:
        log("interrupted; stopping every process started")
        return 130
    finally:
        PROCS.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
