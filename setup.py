"""Build adc, compiling the traffic path with mypyc (`adc.compiled` lists the modules).

The compiled modules are the same source run about twice as fast. Set
ADC_PURE_PYTHON=1 to skip compiling; without mypy or a C compiler the build falls
back to the pure-Python package with a warning (adc runs the same, slower).
"""

import os
import runpy
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from setuptools import setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
compiled = runpy.run_path(str(ROOT / "adc" / "compiled.py"))  # not `import adc`: it runs the guard


def warn(message: str) -> None:
    print(f"adc: {message}: installing the pure-Python package (slower)", file=sys.stderr)


class OptionalBuildExt(build_ext):
    """A failed compile leaves the pure-Python package, not a failed install.

    All or nothing: after the first failure nothing more is compiled, and whatever
    was built (in the build directory or, editable, beside the sources) is removed.

    With GCC the build is profile-guided, as CPython's `--enable-optimizations` is:
    compiled once with instrumentation, trained (`python -m adc.pgo`, a few seconds of
    loopback traffic), compiled again with the profile recorded. If instrumenting or
    training fails, the second compile simply has no profile. `ADC_PGO=0` skips it (one
    compile instead of two, for quicker rebuilds while editing).
    """

    failed: Exception | None = None

    def run(self) -> None:
        marker = compiled["PROFILE_MARKER"]
        markers = [Path(self.build_lib) / marker] + ([ROOT / marker] if self.inplace else [])
        for path in markers:
            path.unlink(missing_ok=True)  # a profile-guided build says so anew, or not at all
        profile_dir = self._train() if self.extensions and _pgo_wanted() else None
        try:
            self._compile(pgo_use_flags(profile_dir) if profile_dir is not None else [])
        finally:
            if profile_dir is not None:
                shutil.rmtree(profile_dir, ignore_errors=True)
        if self.failed is not None:
            for ext in self.extensions:
                for path in (Path(self.get_ext_fullpath(ext.name)), ROOT / self.get_ext_filename(ext.name)):
                    path.unlink(missing_ok=True)
            warn(f"compiling with mypyc failed ({self.failed})")
        elif profile_dir is not None:
            digest = compiled["sources_digest"](ROOT, compiled["MODULES"])
            for path in markers:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(digest + "\n")

    def _compile(self, flags: list[str]) -> None:
        """Compile every extension with `flags` added (compile and link)."""
        for ext in self.extensions:
            base = getattr(ext, "_adc_base_flags", None)
            if base is None:
                base = ext._adc_base_flags = (list(ext.extra_compile_args), list(ext.extra_link_args))
            ext.extra_compile_args = base[0] + flags
            ext.extra_link_args = base[1] + flags
        self.force = True  # the second compile replaces the first, whatever the timestamps say
        if not hasattr(self, "_adc_compiler_option"):
            self._adc_compiler_option = self.compiler
        self.compiler = self._adc_compiler_option  # run() replaces the option by the compiler it made
        try:
            super().run()
        except Exception as exc:  # CompileError, a missing compiler or header...
            self.failed = self.failed or exc

    def _train(self) -> Path | None:
        """Compile with instrumentation and run the training workload: the profile's directory, or None."""
        profile_dir = Path(tempfile.mkdtemp(prefix="adc-pgo-profile-"))
        staging = Path(tempfile.mkdtemp(prefix="adc-pgo-run-"))
        try:
            self._compile(pgo_generate_flags(profile_dir))
            if self.failed is not None:
                raise RuntimeError(f"the instrumented compile failed ({self.failed})")
            # the sources, with the instrumented build beside them
            shutil.copytree(ROOT / "adc", staging / "adc", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
            for ext in self.extensions:
                name = self.get_ext_filename(ext.name)
                shutil.copy2(Path(self.build_lib) / name, staging / name)
            env = {k: v for k, v in os.environ.items() if k != compiled["PURE_ENV"]}
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(staging), env.get("PYTHONPATH", "")) if p)
            # faulthandler: a crash leaves the Python stack in the install log
            done = subprocess.run([sys.executable, "-X", "faulthandler", "-m", "adc.pgo"], cwd=staging, env=env,
                                  capture_output=True, text=True, timeout=PGO_TRAINING_SECONDS)
            if done.returncode != 0:
                print("\n".join((done.stderr or done.stdout).strip().splitlines()[-20:]), file=sys.stderr)
                raise RuntimeError(f"training failed (exit status {done.returncode})")
            if not any(profile_dir.rglob("*.gcda")):
                raise RuntimeError("training recorded no profile")
            print(f"adc: profile-guided build: {done.stdout.strip()}", file=sys.stderr)
        except Exception as exc:  # subprocess.TimeoutExpired, OSError...
            print(f"adc: profile-guided build skipped: {exc}", file=sys.stderr)
            self.failed = None
            shutil.rmtree(profile_dir, ignore_errors=True)
            return None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return profile_dir

    def build_extension(self, ext) -> None:
        if self.failed is None:
            try:
                super().build_extension(ext)
            except Exception as exc:
                self.failed = exc


def extensions() -> list:
    if os.environ.get(compiled["PURE_ENV"], "") not in ("", "0"):
        return []
    modules = compiled["MODULES"]
    stamp = ROOT / compiled["source_path"](Path("."), compiled["STAMP"])
    stamp.write_text(
        '"""Written by setup.py: a digest of the sources compiled with this module (see adc.compiled)."""\n\n'
        f'SOURCES = "{compiled["sources_digest"](ROOT, modules)}"\n'
    )
    try:
        from mypyc.build import mypycify
    except ImportError as exc:
        warn(f"mypyc is not available ({exc})")
        return []
    paths = [str(compiled["source_path"](Path("."), m)) for m in (*modules, compiled["STAMP"])]
    try:
        extensions = mypycify(paths, opt_level="3", group_name="adc_native")
    except BaseException as exc:  # mypyc exits on a type error
        warn(f"mypyc refused the sources ({exc})")
        return []
    if sys.platform.startswith("linux"):
        for ext in extensions:  # new lists: the extensions may share theirs
            ext.extra_compile_args = [*ext.extra_compile_args, *LOCAL_CALLS_COMPILE]
            ext.extra_link_args = [*ext.extra_link_args, *LOCAL_CALLS_LINK]
    return extensions


# The compiled functions call one another inside one shared library. By default (-fPIC)
# each such call goes through the PLT, as another library could replace the function,
# and the compiler may not inline it. These flags bind them inside the library, as
# Debian's Python does for its own extensions (-Bsymbolic-functions); without them (a
# Python built by pyenv or from source) a new TLS connection cost about 7% more CPU.
LOCAL_CALLS_COMPILE = ["-fno-semantic-interposition"]
LOCAL_CALLS_LINK = ["-Wl,-Bsymbolic-functions"]

# Profile-guided compiling (see OptionalBuildExt), GCC only: first instrumented, then with
# the profile. Partial training: what the workload never ran stays optimised as usual, not
# for size. The profile matches the code it was recorded on (the same C, compiled twice).
PGO_ENV = "ADC_PGO"
PGO_TRAINING_SECONDS = 300


def pgo_generate_flags(directory: Path) -> list[str]:
    return [f"-fprofile-generate={directory}"]


def pgo_use_flags(directory: Path) -> list[str]:
    return [f"-fprofile-use={directory}", "-fprofile-partial-training", "-Wno-missing-profile"]


def _pgo_wanted() -> bool:
    """Profile-guided unless ADC_PGO=0, and only with GCC (its flags, its profile format)."""
    if os.environ.get(PGO_ENV, "") == "0" or not sys.platform.startswith("linux"):
        return False
    cc = (os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc").split()
    try:
        version = subprocess.run([*cc, "--version"], capture_output=True, text=True, timeout=30).stdout.lower()
    except (OSError, subprocess.SubprocessError):
        return False
    return "clang" not in version and ("gcc" in version or "free software foundation" in version)


os.chdir(ROOT)  # mypyc works with paths relative to the project
setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
