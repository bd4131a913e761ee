"""The traffic path compiled with mypyc: type-checked, used when fresh, never when stale."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import adc
from adc import compiled

ROOT = Path(adc.__file__).resolve().parent.parent
PROBE = (
    "import adc.compiled as c, adc.http.parser, adc.engine.l7; "
    "print(c.status()); print(c.running_compiled('adc.http.parser'), c.running_compiled('adc.engine.l7'))"
)


def probe(cwd: Path, **env: str) -> tuple[str, str]:
    """Import the traffic path in a fresh interpreter at `cwd`: (status, which modules ran compiled)."""
    environment = {k: v for k, v in os.environ.items() if k != compiled.PURE_ENV} | env
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=environment, capture_output=True, text=True,
                         timeout=60, check=True).stdout.splitlines()
    return out[0], out[1]


def test_the_compiled_modules_type_check():
    """mypyc compiles only what mypy accepts: an edit that breaks the types would make the
    install fall back to the slow pure-Python package."""
    files = [str(compiled.source_path(ROOT, m)) for m in compiled.MODULES]
    # in a process of its own: mypy changes the cycle collector's settings for its run
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--cache-dir", str(ROOT / ".mypy_cache"),
                           *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_decide():
    d = "digest"
    assert compiled.decide(False, d, True, d) == (True, "compiled with mypyc")
    assert compiled.decide(False, d, True, d, d) == (True, "compiled with mypyc, profile-guided")
    assert compiled.decide(False, d, True, d, "an older build's") == (True, "compiled with mypyc")
    assert compiled.decide(True, d, True, d)[0] is False
    assert "not built" in compiled.decide(False, None, False, d)[1]
    assert "did not compile" in compiled.decide(False, d, False, d)[1]
    use, status = compiled.decide(False, "older", True, d)
    assert not use and "`pip install -e .` compiles them again" in status


def test_this_process_runs_what_the_status_says():
    import adc.engine.l7
    import adc.http.exchange  # noqa: F401

    expected = compiled.in_use()
    assert expected == compiled.status().startswith("compiled with mypyc")
    assert all(compiled.running_compiled(m) == expected for m in ("adc.http.exchange", "adc.engine.l7"))


def test_pure_python_on_request():
    status, which = probe(ROOT, **{compiled.PURE_ENV: "1"})
    assert status == f"pure Python ({compiled.PURE_ENV} is set)"
    assert which == "False False"


def test_a_build_older_than_its_sources_is_not_used(tmp_path):
    if not compiled.in_use():
        pytest.skip(f"this checkout is not compiled: {compiled.status()}")
    shutil.copytree(ROOT / "adc", tmp_path / "adc", ignore=shutil.ignore_patterns("__pycache__"))
    for library in ROOT.glob("adc_native__mypyc*"):  # the library the compiled modules share
        shutil.copy2(library, tmp_path)
    assert probe(tmp_path) == (compiled.status(), "True True")
    with open(tmp_path / "adc" / "http" / "parser.py", "a") as source:
        source.write("\n# edited after the build\n")
    status, which = probe(tmp_path)
    assert status.startswith("pure Python (the sources changed after the build")
    assert which == "False False"


def test_the_sources_pass_the_layer7_tests_too():
    """Installs without a compiler run the sources: the sans-IO core and the Layer-7 driver's
    tests must pass on them as well as on the build."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/http", "tests/engine/test_l7_http.py"],
        cwd=ROOT, env=os.environ | {compiled.PURE_ENV: "1"}, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_profile_guided_build_trains_on_real_traffic():
    """The build compiles twice with GCC, the second time with the profile `python -m adc.pgo`
    recorded (setup.py): the workload must keep running against the compiled traffic path, or
    the build silently loses its profile."""
    done = subprocess.run([sys.executable, "-m", "adc.pgo"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if compiled.in_use():
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "connections" in done.stdout
    else:  # nothing to train: the build then compiles without a profile
        assert done.returncode == 1 and "nothing to train" in done.stderr
