"""adc: an application delivery controller (multi-layer load balancer)."""

from adc import compiled as _compiled

__version__ = "0.1.0"

_compiled.guard()  # before any module of the traffic path is imported
