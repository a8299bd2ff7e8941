"""Containment for recorders: a failing hook or sampler is logged once and switched off."""

from __future__ import annotations

import functools
import logging
from typing import Any, Callable, TypeVar

__all__ = ["Guard", "logger"]

logger = logging.getLogger("torchscope")

F = TypeVar("F", bound=Callable[..., Any])


class Guard:
    """One recorder's fuse: the first exception it sees is logged once, then the recorder is off.

    ``guard.call(fn, ...)`` runs `fn` unless the fuse has blown and returns its result (None on
    failure). ``guard.wrap(fn)`` gives a function that does the same, for hooks. ``on_fail`` runs
    once when the fuse blows (e.g. to remove the recorder's hooks); its own errors are swallowed.
    """

    def __init__(self, name: str, on_fail: Callable[[], None] | None = None) -> None:
        self.name = name
        self.failed = False
        self.error: str | None = None
        self._on_fail = on_fail

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run `fn(*args, **kwargs)` unless this recorder has failed; contain any exception."""
        if self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - containment is the point
            self.fail(exc)
            return None

    def wrap(self, fn: F) -> F:
        """`fn` wrapped so that its exceptions blow this fuse instead of reaching the caller."""

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if self.failed:
                return None
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001
                self.fail(exc)
                return None

        return guarded  # type: ignore[return-value]

    def fail(self, exc: BaseException) -> None:
        """Record `exc` as this recorder's failure (logged once) and switch the recorder off."""
        if self.failed:
            return
        self.failed = True
        self.error = f"{type(exc).__name__}: {exc}"
        logger.warning("torchscope: the %s recorder failed and was stopped: %s", self.name, self.error,
                       exc_info=exc)
        if self._on_fail is not None:
            try:
                self._on_fail()
            except Exception:  # noqa: BLE001
                pass
