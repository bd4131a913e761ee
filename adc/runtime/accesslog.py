"""Access log: one line per Layer-7 request, per tunnel close and per Layer-4 session.

`appliance.access_log` is "stderr", "off" or a file path; `access_log_format` is
"text" (key=value pairs, easy to grep) or "json" (one object per line).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO


class AccessLog:
    __slots__ = ("enabled", "json", "stream", "_owned")

    def __init__(self, destination: str = "stderr", fmt: str = "text"):
        self.json = fmt == "json"
        self._owned = False
        self.stream: TextIO | None
        if destination == "off":
            self.enabled = False
            self.stream = None
        elif destination == "stderr":
            self.enabled = True
            self.stream = sys.stderr
        elif destination == "stdout":
            self.enabled = True
            self.stream = sys.stdout
        else:
            self.enabled = True
            self.stream = open(destination, "a", buffering=1, encoding="utf-8")
            self._owned = True

    def log(self, record: dict[str, Any]) -> None:
        """Write one record; keys keep their insertion order in the text format."""
        if not self.enabled or self.stream is None:
            return
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **record}
        if self.json:
            line = json.dumps(record, separators=(",", ":"), default=str)
        else:
            line = " ".join(f"{k}={_text(v)}" for k, v in record.items() if v is not None)
        try:
            self.stream.write(line + "\n")
        except (OSError, ValueError):
            logging.getLogger("adc.access").warning("access log write failed")

    def close(self) -> None:
        if self._owned and self.stream is not None:
            self.stream.close()
            self.stream = None


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    text = str(value)
    if not text or any(c in text for c in ' "='):
        return json.dumps(text)
    return text
