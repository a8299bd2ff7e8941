"""The one background thread that drives every sampler and keeps the JSONL streams flushed."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Protocol

from torchscope.profiler.bundle import JsonlWriter
from torchscope.profiler.guard import Guard

__all__ = ["Sampler", "SamplerThread", "MAX_KEPT_LINES"]

MAX_KEPT_LINES = 200_000  # sample lines kept in memory for the trace's counter events


class Sampler(Protocol):
    """Something that turns a tick time into sample lines."""

    source: str

    def sample(self, t_ns: int) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class SamplerThread:
    """Ticks every `interval_s`: runs each sampler under its own Guard, appends its lines to
    `writer`, keeps them for the trace, and flushes every writer in `flush` (so hook-written
    streams reach the disk within about a second too)."""

    def __init__(self, samplers: list[Sampler], writer: JsonlWriter | None, *, interval_s: float,
                 flush: list[JsonlWriter] | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        self.samplers = samplers
        self.guards = {id(s): Guard(f"{s.source} sampler") for s in samplers}
        self.writer = writer
        self.interval_s = interval_s
        self.flush_writers = list(flush or [])
        self.lines: list[dict[str, Any]] = []
        self.keep = True  # keep lines for the trace (the JSONL stream always gets them)
        self.ticks = 0
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: CPU time the sampler thread used, ns (set when it ends; what sampling costs the job)
        self.thread_cpu_ns = 0
        self.flush_guard = Guard("stream flush")

    def tick(self, *, keep: bool | None = None) -> None:
        """Take one round of samples now (`keep` overrides whether the trace keeps them)."""
        t_ns = self._clock()
        self.ticks += 1
        for s in self.samplers:
            lines = self.guards[id(s)].call(s.sample, t_ns)
            if not lines:
                continue
            if self.writer is not None:
                self.writer.write_many(lines)
            if (self.keep if keep is None else keep) and len(self.lines) < MAX_KEPT_LINES:
                self.lines.extend(lines)

    def _flush(self) -> None:
        for w in ([self.writer] if self.writer else []) + self.flush_writers:
            w.flush()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.thread_cpu_ns = time.thread_time_ns()

    def _loop(self) -> None:
        next_t = time.monotonic()
        while not self._stop.is_set():
            self.tick()
            self.flush_guard.call(self._flush)
            next_t += self.interval_s
            delay = next_t - time.monotonic()
            if delay < 0:  # fell behind (a slow sampler or a busy host): do not burst to catch up
                next_t = time.monotonic()
                delay = 0
            self._stop.wait(delay)

    def start(self) -> None:
        """Start the thread (one sample is taken immediately)."""
        self._thread = threading.Thread(target=self._run, name="torchscope-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample, stop the thread and join it, close the samplers."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        self.tick(keep=True)  # the last reading always reaches the trace (clipped there to the window)
        for s in self.samplers:
            self.guards[id(s)].call(s.close)
        self.flush_guard.call(self._flush)

    @property
    def failures(self) -> dict[str, str]:
        """Sampler source -> error, for samplers that failed and stopped."""
        return {s.source: g.error for s in self.samplers if (g := self.guards[id(s)]).failed and g.error}
