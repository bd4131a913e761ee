"""Build adc, compiling the traffic path with mypyc (`adc.compiled` lists the modules).

The compiled modules are the same source run about twice as fast. Set
ADC_PURE_PYTHON=1 to skip compiling; without mypy or a C compiler the build falls
back to the pure-Python package with a warning (adc runs the same, slower).
"""

import os
import runpy
import sys
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
    """

    failed: Exception | None = None

    def run(self) -> None:
        try:
            super().run()
        except Exception as exc:  # CompileError, a missing compiler or header...
            self.failed = self.failed or exc
        if self.failed is not None:
            for ext in self.extensions:
                for path in (Path(self.get_ext_fullpath(ext.name)), ROOT / self.get_ext_filename(ext.name)):
                    path.unlink(missing_ok=True)
            warn(f"compiling with mypyc failed ({self.failed})")

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
        for ext in extensions:
            ext.extra_compile_args += LOCAL_CALLS_COMPILE
            ext.extra_link_args += LOCAL_CALLS_LINK
    return extensions


# The compiled functions call one another inside one shared library. By default (-fPIC)
# each such call goes through the PLT, as another library could replace the function,
# and the compiler may not inline it. These flags bind them inside the library, as
# Debian's Python does for its own extensions (-Bsymbolic-functions); without them (a
# Python built by pyenv or from source) a new TLS connection cost about 7% more CPU.
LOCAL_CALLS_COMPILE = ["-fno-semantic-interposition"]
LOCAL_CALLS_LINK = ["-Wl,-Bsymbolic-functions"]


os.chdir(ROOT)  # mypyc works with paths relative to the project
setup(ext_modules=extensions(), cmdclass={"build_ext": OptionalBuildExt})
