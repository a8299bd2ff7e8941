"""The one exception the analysis side raises for input it cannot use."""

from __future__ import annotations

from pathlib import Path

__all__ = ["TraceError"]


class TraceError(Exception):
    """Bad or unusable input: carries the offending file and a one-line reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # always one line
        super().__init__(f"{self.path}: {self.reason}")
