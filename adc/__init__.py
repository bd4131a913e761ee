"""adc: an application delivery controller (multi-layer load balancer)."""

__version__ = "0.1.0"
