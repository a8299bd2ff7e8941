"""`ProfileOptions`: every option of ``profile()``, written out once and validated once, at construction.

``profile(out_dir, **options)`` builds one of these; a wrong name, type or range raises there, before
the job runs (``TypeError`` for a wrong name or type, ``ValueError`` for a value out of range), and
the message names the option and what it accepts. Options shared with ``torch.profiler.profile``
mean the same there. The output folder is checked then too (``checked_run_dir``): created, and a
file written and removed in it, else a ``ValueError`` naming the path and the reason.

The default schedule (``DEFAULT_SCHEDULE``) traces 3 steps with Kineto: wait 1, warmup 1, active 3,
so of the run's steps (numbered from 0, as ``ProfilerStep#N``) steps 2, 3 and 4 are traced and every
other one is not; the samplers and the steps stream cover every step. Pass
``schedule=dict(wait=..., warmup=..., active=..., repeat=...)`` to trace others.
"""

from __future__ import annotations

import math
import operator
import os
import tempfile
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = ["ProfileOptions", "DEFAULT_SCHEDULE", "DEFAULT_SAMPLE_INTERVAL_MS", "MIN_SAMPLE_INTERVAL_MS",
           "SCHEDULE_KEYS", "checked_run_dir"]

#: Sampling period of the sampler thread, ms: 10 Hz, the low end of NVML-worthy rates, half the wake-ups of 20 Hz.
DEFAULT_SAMPLE_INTERVAL_MS = 100.0
#: Shortest sampling period, ms: shorter requests are raised to this (the sampler costs more than it measures).
MIN_SAMPLE_INTERVAL_MS = 1.0
#: Kineto schedule when none is given, in steps: one wait step, one warm-up, three recorded (steps 2, 3, 4), once.
DEFAULT_SCHEDULE = {"skip_first": 0, "wait": 1, "warmup": 1, "active": 3, "repeat": 1}
#: Keys a schedule dict may hold (those of torch.profiler.schedule).
SCHEDULE_KEYS = tuple(DEFAULT_SCHEDULE)
#: Smallest value of each schedule key (torch.profiler.schedule refuses active=0).
_SCHEDULE_MIN = {"skip_first": 0, "wait": 0, "warmup": 0, "active": 1, "repeat": 0}


def _flag(default: bool) -> Any:
    """A True/False option (checked in __post_init__)."""
    return field(default=default, metadata={"kind": "bool"})


@dataclass(frozen=True)
class ProfileOptions:
    """What ``profile()`` records and how; see each field's comment (units in the names)."""

    #: torch.profiler-style callable (step -> ProfilerAction), or a dict of SCHEDULE_KEYS (missing keys from
    #: DEFAULT_SCHEDULE); None: DEFAULT_SCHEDULE, which traces only 3 steps (wait 1, warmup 1, active 3: steps 2-4)
    schedule: Callable[[int], Any] | Mapping[str, int] | None = None
    #: operator input shapes in the trace (gloo collectives need them for their byte counts)
    record_shapes: bool = _flag(True)
    #: allocator events; None: on where CUDA is available (resolved by profile())
    profile_memory: bool | None = field(default=None, metadata={"kind": "bool_or_none"})
    #: Python stacks of operators, as in torch.profiler
    with_stack: bool = _flag(False)
    #: FLOP estimates of operators, as in torch.profiler
    with_flops: bool = _flag(False)
    #: Kineto (torch.profiler) on the schedule; False: samplers and annotations only
    kineto: bool = _flag(True)
    #: NVML sampler: power, energy, clocks, utilisation (the reason is recorded when unavailable)
    power: bool = _flag(True)
    #: host sampler: process CPU %, RSS, RAPL package energy
    host: bool = _flag(True)
    #: sampler period, ms (> 0; below MIN_SAMPLE_INTERVAL_MS it is raised to that); costly NVML fields ~1/s
    sample_interval_ms: float = DEFAULT_SAMPLE_INTERVAL_MS
    #: MoE router expert counts (profiler/moe.py)
    moe: bool = _flag(True)
    #: tokens per step whose chosen experts are kept (0: counts only)
    moe_sample_tokens: int = 0
    #: loop phases (data loading, forward, backward, optimizer, ...) as trace ranges
    annotate: bool = _flag(True)
    #: per-module forward/backward ranges of the model's children
    modules: bool = _flag(True)
    #: the model; None: found from the first forward call (root discovery)
    model: Any = None
    #: measured CPU peak FLOP/s and memory bandwidth into the manifest (cached per host)
    host_roofline: bool = _flag(True)
    #: on SIGTERM flush the bundle, then run the previous handler
    handle_sigterm: bool = _flag(True)
    #: stand-in for the pynvml module (tests pass a fake); None: the real one
    nvml_module: Any = None
    #: called on each rank with the run folder's Path once that rank's trace and final manifest are written
    on_run_ready: Callable[[Path], Any] | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            kind = f.metadata.get("kind")
            value = getattr(self, f.name)
            if kind == "bool" and type(value) is not bool:
                raise TypeError(_wrong(f.name, value, "True or False"))
            if kind == "bool_or_none" and value is not None and type(value) is not bool:
                raise TypeError(_wrong(f.name, value, "True, False or None"))
        object.__setattr__(self, "schedule", _checked_schedule(self.schedule))
        interval = self.sample_interval_ms
        if type(interval) is bool or not isinstance(interval, (int, float)):
            raise TypeError(_wrong("sample_interval_ms", interval, "a number of milliseconds > 0"))
        if not math.isfinite(interval) or interval <= 0:
            raise ValueError(_wrong("sample_interval_ms", interval, "a number of milliseconds > 0"))
        object.__setattr__(self, "sample_interval_ms", max(MIN_SAMPLE_INTERVAL_MS, float(interval)))
        object.__setattr__(self, "moe_sample_tokens", _int_at_least("moe_sample_tokens", self.moe_sample_tokens, 0))
        if self.on_run_ready is not None and not callable(self.on_run_ready):
            raise TypeError(_wrong("on_run_ready", self.on_run_ready, "a callable taking the run folder's Path, "
                                                                      "or None"))

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any]) -> "ProfileOptions":
        """Options from profile()'s keyword arguments; an unknown name raises TypeError listing the known ones."""
        known = {f.name for f in fields(cls)}
        for name in kwargs:
            if name in known:
                continue
            if name == "on_trace_ready":
                raise TypeError("profile() has no on_trace_ready (torch.profiler's receives the profiler); "
                                "use on_run_ready=, called with the run folder's Path once the rank's files "
                                "are written")
            raise TypeError(f"profile() got an unexpected keyword argument {name!r}; "
                            f"its options are: {', '.join(sorted(known))}")
        return cls(**kwargs)

    def manifest_entry(self) -> dict[str, Any]:
        """The options as written into the manifest's ``options`` (JSON-able: the model by class name)."""
        sched = self.schedule
        if not isinstance(sched, Mapping):
            sched = getattr(sched, "torchscope_params", None) or repr(sched)
        return {"record_shapes": self.record_shapes, "profile_memory": self.profile_memory,
                "with_stack": self.with_stack, "with_flops": self.with_flops, "schedule": sched,
                "kineto": self.kineto, "power": self.power, "host": self.host,
                "sample_interval_ms": self.sample_interval_ms, "moe": self.moe,
                "moe_sample_tokens": self.moe_sample_tokens, "annotate": self.annotate, "modules": self.modules,
                "model": type(self.model).__name__ if self.model is not None else None,
                "host_roofline": self.host_roofline}

    def kineto_options(self) -> dict[str, Any]:
        """The keyword arguments passed on to torch.profiler.profile (profile_memory resolved first)."""
        return {"record_shapes": self.record_shapes, "profile_memory": bool(self.profile_memory),
                "with_stack": self.with_stack, "with_flops": self.with_flops}


def checked_run_dir(out_dir: Any) -> Path:
    """The run folder ``out_dir``, created now and proven writable; else ValueError naming the path and the reason."""
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError(_wrong("out_dir", out_dir, "a folder path (str or os.PathLike)"))
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".torchscope-write-check-", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if isinstance(exc, FileExistsError):
            reason = "it exists and is not a folder"
        elif exc.filename is not None and Path(exc.filename) != path and not str(exc.filename).startswith(str(path)):
            reason = f"{reason}: {exc.filename}"
        raise ValueError(f"profile(out_dir=...) must be a folder this process can create and write; "
                         f"{str(path)!r} is not ({reason})") from None
    return path


def _checked_schedule(schedule: Any) -> Any:
    """None -> DEFAULT_SCHEDULE; a dict -> all SCHEDULE_KEYS, checked; a callable as given."""
    if schedule is None:
        return dict(DEFAULT_SCHEDULE)
    if callable(schedule):
        return schedule
    allowed = "a callable step -> ProfilerAction, or a dict of " + ", ".join(SCHEDULE_KEYS)
    if not isinstance(schedule, Mapping):
        raise TypeError(_wrong("schedule", schedule, allowed))
    unknown = sorted(set(schedule) - set(SCHEDULE_KEYS), key=str)
    if unknown:
        raise TypeError(f"profile(schedule=...) has unknown keys {unknown}; allowed: {', '.join(SCHEDULE_KEYS)}")
    out = {**DEFAULT_SCHEDULE, **schedule}
    return {key: _int_at_least(f"schedule[{key!r}]", out[key], lowest) for key, lowest in _SCHEDULE_MIN.items()}


def _int_at_least(name: str, value: Any, lowest: int) -> int:
    """``value`` as an int (numpy ints too, bools not), or TypeError/ValueError naming the option."""
    allowed = f"an int >= {lowest}"
    if type(value) is bool:
        raise TypeError(_wrong(name, value, allowed))
    try:
        number = operator.index(value)
    except TypeError:
        raise TypeError(_wrong(name, value, allowed)) from None
    if number < lowest:
        raise ValueError(_wrong(name, value, allowed))
    return number


def _wrong(name: str, value: Any, allowed: str) -> str:
    return f"profile({name}=...) must be {allowed}, got {value!r} ({type(value).__name__})"
