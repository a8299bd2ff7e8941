"""``profile()``: one object around a training or inference loop that writes a run bundle.

Usable as a context manager, a decorator, or with ``start()`` / ``stop()``::

    with torchscope.profile("runs/gpt", model=model) as prof:
        for batch in loader:
            ...
            prof.step(tokens=batch.numel())

Options are keyword-only, as in torch.profiler.profile, and mean the same where the two share a name
(``schedule``, ``record_shapes``, ``profile_memory``, ``with_stack``, ``with_flops``). Each is a field
of `ProfileOptions` (profiler/options.py), which documents it and checks it when profile() is built:
a wrong name, type or range fails there, before the job runs.

One deliberate difference: torch.profiler's ``on_trace_ready(prof)`` receives the profiler after
each recording cycle; ours is called ``on_run_ready(path)`` and receives a ``pathlib.Path``, the run
folder, once, after this rank's merged trace and final manifest are written (``torchscope.load(path)``
reads it). Passing ``on_trace_ready=`` raises a TypeError that says so.

What is traced: by default Kineto traces only 3 steps. The default schedule is wait 1, warmup 1,
active 3, once (``DEFAULT_SCHEDULE``): of the steps ``prof.step()`` marks, numbered from 0 as Kineto's
``ProfilerStep#N``, steps 2, 3 and 4 are traced, every other one is not. The samplers and the
``steps`` stream cover every step. Pass ``schedule=dict(wait=..., warmup=..., active=..., repeat=...)``
to trace others (``repeat=0``: repeat the cycle until the end). The analysis says what was traced:
"3 of 20 steps traced (wait 1, warmup 1, active 3)". A ``ProfilerStep`` that no ``prof.step()``
ended (torch.profiler opens the next one at each step) is not written: it is not a step.

Output folder: created when profile() is built, and checked writable there; a folder that cannot be
created or written raises ValueError naming the path and the reason, before the job runs.

Recorders: Kineto (torch.profiler, on a wait/warmup/active/repeat schedule), the sampler thread
(NVML, host, CUDA memory), the annotation hooks and the MoE router recorder. Each runs under its
own Guard: a failure is logged once and stops that recorder only. The user's exceptions pass
through unchanged after everything is flushed; SIGTERM flushes and then chains the previous handler.

Run status: the final manifest says ``"complete": true`` only when the loop ended normally. When it
ends by an exception (KeyboardInterrupt included) or SIGTERM, it says ``"complete": false``, with
``"ended_by"`` ({"kind": "exception" | "KeyboardInterrupt" | "SIGTERM", "type", "message"}) and
``"incomplete_reason"`` (one line for people). A job killed outright keeps the start-of-run manifest
(``"complete": false``, ``"ended_at_ns": null``).

One profile() records at a time per process: starting one while another (or torch.profiler) is
recording raises RuntimeError (Kineto is process-global; nesting would corrupt both recordings).

Quiet recording: Kineto logs ``USDT: ... profiler_start/profiler_stop`` lines to stderr at every
recording; torch silences them only through the ``KINETO_LOG_LEVEL`` environment variable, read once,
when the process first starts a profiler. profile() sets it to 6 (above Kineto's ERROR and USDT
levels) unless the user set it; a process that ran torch.profiler before torchscope keeps its level.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import os
import signal
import statistics
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from torchscope.profiler import bundle
from torchscope.profiler.annotations import Annotator
from torchscope.profiler.distributed import rank_info
from torchscope.profiler.guard import Guard, logger
from torchscope.profiler.manifest import build_manifest, describe_devices
from torchscope.profiler.options import DEFAULT_SAMPLE_INTERVAL_MS, DEFAULT_SCHEDULE, ProfileOptions, checked_run_dir

__all__ = ["profile", "schedule", "ProfileOptions", "DEFAULT_SCHEDULE", "DEFAULT_SAMPLE_INTERVAL_MS",
           "KINETO_QUIET_LEVEL"]

#: KINETO_LOG_LEVEL above every Kineto level (VERBOSE 0 ... ERROR 4, USDT 5): no Kineto lines on stderr
KINETO_QUIET_LEVEL = 6

#: the profile() recording in this process, if any (one at a time: Kineto is process-global)
_ACTIVE: list["profile"] = []
_ACTIVE_LOCK = threading.Lock()


def _torch_profiler_enabled() -> bool:
    try:
        import torch  # noqa: PLC0415

        return bool(torch._C._autograd._profiler_enabled())
    except Exception:  # noqa: BLE001 - cannot tell: assume not
        return False


def _end_status(exc: BaseException | None, signal_name: str | None = None) -> dict[str, Any] | None:
    """Manifest ``ended_by`` for a run ended by `exc` or by the signal `signal_name` (None: ended normally)."""
    if signal_name is not None:
        return {"kind": signal_name, "type": None, "message": f"the job received {signal_name}"}
    if exc is None:
        return None
    kind = "KeyboardInterrupt" if isinstance(exc, KeyboardInterrupt) else "exception"
    return {"kind": kind, "type": type(exc).__name__, "message": str(exc)}


def _reason_line(ended_by: dict[str, Any]) -> str:
    """One line for people from a manifest ``ended_by``."""
    if ended_by["kind"] == "exception":
        msg = ended_by["message"].splitlines()[0] if ended_by["message"] else ""
        return f"the loop raised {ended_by['type']}" + (f": {msg}" if msg else "")
    if ended_by["kind"] == "KeyboardInterrupt":
        return "the loop was interrupted (KeyboardInterrupt)"
    return ended_by["message"]


def _without_unended_steps(kineto_trace: dict, steps_run: int) -> dict:
    """Kineto's trace without the ``ProfilerStep#<steps_run>`` that no prof.step() ended.

    torch.profiler opens the next ProfilerStep at every step(), so a run that stops inside a
    recording window leaves one open from the last prof.step() to stop(): the loop's epilogue, not a
    step. Its events stay in the trace; only the step annotation (host and GPU side) goes.
    """
    events = kineto_trace.get("traceEvents")
    if not isinstance(events, list):
        return kineto_trace
    unended = f"ProfilerStep#{steps_run}"  # torch.profiler opens only the next step
    kept = [e for e in events if not (isinstance(e, dict) and e.get("name") == unended)]
    if len(kept) == len(events):
        return kineto_trace
    return {**kineto_trace, "traceEvents": kept}


def _cuda_available() -> bool:
    try:
        import torch  # noqa: PLC0415

        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001
        return False


def schedule(*, wait: int = 1, warmup: int = 1, active: int = 3, repeat: int = 1,
             skip_first: int = 0) -> Callable[[int], Any]:
    """torch.profiler.schedule with our defaults (one wait step, one warm-up, three active)."""
    import torch.profiler  # noqa: PLC0415

    fn = torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=repeat, skip_first=skip_first)
    fn.torchscope_params = {"skip_first": skip_first, "wait": wait, "warmup": warmup,  # type: ignore[attr-defined]
                            "active": active, "repeat": repeat}
    return fn


class profile:  # noqa: N801 - named like torch.profiler.profile on purpose
    """Record a run bundle for the code inside; by default Kineto traces steps 2-4 only (see the module docstring).

    Options: `ProfileOptions`; ``schedule=dict(wait=..., warmup=..., active=...)`` traces other steps.
    """

    def __init__(self, out_dir: str | os.PathLike = "runs/run", **options: Any) -> None:
        # the keyword-only options are those of ProfileOptions (see __signature__ below the class)
        self._setup(out_dir, ProfileOptions.from_kwargs(options))

    @classmethod
    def with_options(cls, out_dir: str | os.PathLike, config: ProfileOptions) -> "profile":
        """A profile of already-validated options (the decorator builds one per call this way)."""
        self = cls.__new__(cls)
        self._setup(out_dir, config)
        return self

    def _setup(self, out_dir: str | os.PathLike, config: ProfileOptions) -> None:
        if config.profile_memory is None:  # allocator events by default where there is a device allocator to watch
            config = dataclasses.replace(config, profile_memory=_cuda_available())
        #: every option of this run, validated (profile_memory resolved)
        self.config: ProfileOptions = config
        self.run_dir = checked_run_dir(out_dir)
        sched = config.schedule
        self._schedule = schedule(**sched) if isinstance(sched, Mapping) else sched
        self._interval_s = config.sample_interval_ms / 1000.0
        self.step_num = 0
        self.rank = 0
        self.world_size = 1
        self._state = "new"
        self._lock = threading.RLock()
        self._kineto = None
        self._kineto_files: list[Path] = []
        self._annotator: Annotator | None = None
        self._sampler = None
        self._moe = None
        self._moe_writer: bundle.JsonlWriter | None = None
        self._steps_writer: bundle.JsonlWriter | None = None
        self._samples_writer: bundle.JsonlWriter | None = None
        self._tokens: list[float] = []
        self._samples: list[float] = []
        self._unavailable: dict[str, str] = {}
        self._recorded: dict[str, bool] = {}
        self._devices: list[dict] = []
        self._roofline: dict | None = None
        self._prev_sigterm: Any = None
        self._sigterm_installed = False
        self._started_at_ns = 0
        self._ended_by: dict[str, Any] | None = None
        self._stopped_in_window = False
        self._guards: dict[str, Guard] = {}
        self.trace_file: Path | None = None

    # ---- public API ---------------------------------------------------------------------------
    def __enter__(self) -> "profile":
        self.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        self.stop(error=exc if exc is not None else (exc_type() if exc_type is not None else None))
        return False  # the user's exception, if any, propagates unchanged

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Use as a decorator: each call of `fn` runs under a fresh profile with these options."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with profile.with_options(self.run_dir, self.config):
                return fn(*args, **kwargs)

        return wrapper

    @property
    def options(self) -> dict[str, Any]:
        """The options of this run, as written into the manifest."""
        return self.config.manifest_entry()

    def _guard(self, name: str) -> Guard:
        g = self._guards.get(name)
        if g is None:
            g = self._guards[name] = Guard(name)
        return g

    def start(self) -> "profile":
        """Start every recorder; returns self (RuntimeError if another profile is recording in this process)."""
        with self._lock:
            if self._state != "new":
                raise RuntimeError("this profile() was already started; create a new one to record again")
            with _ACTIVE_LOCK:
                if _ACTIVE:
                    raise RuntimeError(
                        f"torchscope.profile({str(self.run_dir)!r}) cannot start: profile({str(_ACTIVE[0].run_dir)!r}) "
                        "is already recording in this process; nested or concurrent profiles are not supported "
                        "(stop the first one, or use prof.phase(name) to mark a part of its run)")
                if self.config.kineto and _torch_profiler_enabled():
                    raise RuntimeError(
                        f"torchscope.profile({str(self.run_dir)!r}) cannot start: torch.profiler is already "
                        "recording in this process; stop it first (torchscope drives torch.profiler itself)")
                _ACTIVE.append(self)
            self._state = "running"
        try:
            self._start()
        except Exception as exc:  # noqa: BLE001 - a profiler that cannot start must not stop the job
            logger.warning("torchscope: profile() could not start and records nothing: %s: %s",
                           type(exc).__name__, exc, exc_info=exc)
            with contextlib.suppress(Exception):
                self._abandon()
            self._state = "failed"
            self._release()
        return self

    def _release(self) -> None:
        with _ACTIVE_LOCK:
            if self in _ACTIVE:
                _ACTIVE.remove(self)

    def _abandon(self) -> None:
        """Undo whatever a failed start() had set up."""
        if self._annotator is not None:
            self._annotator.remove()
        if self._sampler is not None:
            self._sampler.stop()
        if self._kineto is not None:
            with contextlib.suppress(Exception):
                self._kineto.stop()
        for w in (self._steps_writer, self._samples_writer, self._moe_writer):
            if w is not None:
                w.close()
        self._restore_sigterm()

    def _start(self) -> None:
        info = rank_info()
        self.rank, self.world_size = info.rank, info.world_size
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._started_at_ns = time.time_ns()
        for stream in ("samples", "steps", "moe"):
            with contextlib.suppress(FileNotFoundError):
                bundle.stream_path(self.run_dir, self.rank, stream).unlink()
        self._steps_writer = bundle.JsonlWriter(bundle.stream_path(self.run_dir, self.rank, "steps"))
        self._samples_writer = bundle.JsonlWriter(bundle.stream_path(self.run_dir, self.rank, "samples"))
        if self.config.host_roofline and self.rank == 0:
            self._guard("host_roofline").call(self._measure_roofline)
        self._guard("samplers").call(self._start_samplers)
        if self.config.annotate:
            self._annotator = Annotator(model=self.config.model, modules=self.config.modules,
                                        on_root=self._on_root_found)
            self._annotator.guard.call(self._annotator.install)
        if self.config.moe and self.config.model is not None:
            self._guard("moe").call(self._ensure_moe_attached, self.config.model)
        if self.config.kineto:
            self._guard("kineto").call(self._start_kineto)
            self._guard("kineto").call(self._update_keep)
        if self.config.handle_sigterm:
            self._install_sigterm()
        self._write_manifest(ended=False)  # a killed job keeps this one

    def step(self, tokens: int | None = None, samples: int | None = None) -> None:
        """Mark the end of one iteration (optionally with how many tokens/samples it processed)."""
        if self._state != "running":
            return
        t_ns = time.time_ns()
        line: dict[str, Any] = {"step": self.step_num, "t_ns": t_ns}
        if tokens is not None:
            line["tokens"] = int(tokens)
            self._tokens.append(float(tokens))
        if samples is not None:
            line["samples"] = int(samples)
            self._samples.append(float(samples))
        if self._steps_writer is not None:
            self._guard("steps").call(self._steps_writer.write, line)
        if self._moe is not None:
            self._guard("moe").call(self._moe.step, self.step_num)
        self.step_num += 1
        if self._annotator is not None:
            self._annotator.guard.call(self._annotator.on_step, self.step_num)
        if self._kineto is not None:
            self._guard("kineto").call(self._kineto.step)
            self._guard("kineto").call(self._update_keep)

    def _in_window(self) -> bool:
        """Whether Kineto is warming up or recording the current step (so stop() ends a cycle mid-step)."""
        from torch.profiler import ProfilerAction  # noqa: PLC0415

        return self._schedule(self.step_num) != ProfilerAction.NONE

    def _update_keep(self) -> None:
        """Keep annotations and samples in memory only around Kineto's warm-up and recording steps."""
        from torch.profiler import ProfilerAction  # noqa: PLC0415

        if self._kineto is None or self._guard("kineto").failed:
            keep = True
        else:
            keep = self._schedule(self.step_num) != ProfilerAction.NONE
            if self.step_num > 0 and self._schedule(self.step_num - 1) == ProfilerAction.RECORD_AND_SAVE:
                keep = True  # the step after a recording: keeps ~1 step of counters past the window
        if self._annotator is not None:
            self._annotator.keep = keep
        if self._sampler is not None:
            self._sampler.keep = keep

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Annotate the with-block as a user phase called `name`."""
        if self._annotator is None:
            self._annotator = Annotator(model=None, modules=False)  # not installed: user phases only
        with contextlib.ExitStack() as stack:
            moe_phase = getattr(self._moe, "phase", None)
            if moe_phase is not None and not self._guard("moe").failed:
                # MoE counts inside the block are labelled with the user's phase too
                self._guard("moe").call(stack.enter_context, moe_phase(name))
            stack.enter_context(self._annotator.phase(name))
            yield

    def watch_router(self, module: Any, **kwargs: Any) -> None:
        """Record expert counts of a custom MoE router module (see profiler/moe.py for options)."""
        if self._state != "running":
            return
        rec = self._guard("moe").call(self._ensure_moe)
        if rec is None:
            return
        try:
            rec.watch(module, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a bad watch() skips that module, not MoE recording
            logger.warning("torchscope: watch_router(%s) failed, that module is not recorded: %s: %s",
                           type(module).__name__, type(exc).__name__, exc)

    def stop(self, *, error: BaseException | None = None) -> Path:
        """Stop every recorder, write the trace and the final manifest; returns the run folder.

        `error`: the exception that ended the loop, if any; the manifest then says ``complete: false``
        and why (the context manager passes it; callbacks of frameworks pass theirs).
        """
        return self._stop(_end_status(error))

    def _stop(self, ended_by: dict[str, Any] | None) -> Path:
        with self._lock:
            if self._state != "running":
                return self.run_dir
            self._state = "stopping"
        self._ended_by = ended_by
        try:
            self._finish()
        finally:
            self._state = "stopped"
            self._restore_sigterm()
            self._release()
        return self.run_dir

    # ---- recorders ----------------------------------------------------------------------------
    def _measure_roofline(self) -> None:
        from torchscope.profiler.host_roofline import host_roofline  # noqa: PLC0415

        self._roofline = host_roofline()

    def _start_samplers(self) -> None:
        from torchscope.profiler.sampling import SamplerThread  # noqa: PLC0415

        samplers: list[Any] = []
        gpus = []
        if self.config.power:
            from torchscope.profiler.nvml import get_nvml  # noqa: PLC0415
            from torchscope.profiler.nvml_sampler import NvmlSampler  # noqa: PLC0415

            backend = get_nvml(self.config.nvml_module)
            if backend.available:
                gpus = backend.devices()
                samplers.append(NvmlSampler(backend, interval_s=self._interval_s))
                self._recorded["power"] = bool(gpus)
                if not gpus:
                    self._unavailable["power"] = "unavailable (no visible NVML device)"
            else:
                self._recorded["power"] = False
                self._unavailable["power"] = backend.reason
                if backend.detail:
                    self._unavailable["nvml"] = backend.detail
        else:
            self._recorded["power"] = False
            self._unavailable["power"] = "disabled (power=False)"
        self._devices = describe_devices(gpus)
        if self.config.host:
            from torchscope.profiler.host_sampler import HostSampler  # noqa: PLC0415

            samplers.append(HostSampler())
            self._recorded["host"] = True
        from torchscope.profiler.cuda_memory import CudaMemorySampler, cuda_memory_available  # noqa: PLC0415

        ok, why = cuda_memory_available()
        if ok:
            samplers.append(CudaMemorySampler())
        else:
            self._unavailable["cuda_memory"] = why or "unavailable"
        self._recorded["cuda_memory"] = ok
        if self._samples_writer is not None:  # whole sources that are missing: their reason, once
            t_ns = time.time_ns()
            for source, key in (("nvml", "power"), ("cuda_mem", "cuda_memory")):
                if self._unavailable.get(key):
                    self._samples_writer.write({"t_ns": t_ns, "source": source, "event": "unavailable",
                                                "field": "*", "reason": self._unavailable[key]})
        flush = [w for w in (self._steps_writer,) if w is not None]
        self._sampler = SamplerThread(samplers, self._samples_writer, interval_s=self._interval_s, flush=flush)
        self._sampler.start()

    def _ensure_moe(self) -> Any:
        if self._moe is None:
            try:
                from torchscope.profiler.moe import RouterRecorder  # noqa: PLC0415
            except ImportError as exc:
                self._unavailable["moe"] = f"torchscope.profiler.moe not importable ({exc})"
                return None
            self._moe_writer = bundle.JsonlWriter(bundle.stream_path(self.run_dir, self.rank, "moe"))
            if self._sampler is not None:
                self._sampler.flush_writers.append(self._moe_writer)
            self._moe = RouterRecorder(self._moe_writer, sample_tokens=self.config.moe_sample_tokens)
        return self._moe

    def _ensure_moe_attached(self, root: Any) -> None:
        rec = self._ensure_moe()
        if rec is not None:
            rec.attach(root)

    def _on_root_found(self, root: Any) -> None:
        if self.config.moe and (self.config.model is None or root is not self.config.model):
            self._guard("moe").call(self._ensure_moe_attached, root)

    def _start_kineto(self) -> None:
        # before torch first starts Kineto, which reads it once (see the module docstring)
        os.environ.setdefault("KINETO_LOG_LEVEL", str(KINETO_QUIET_LEVEL))
        import torch  # noqa: PLC0415
        from torch.profiler import ProfilerActivity  # noqa: PLC0415

        # we keep every cycle's events ourselves (each cycle is exported and merged at the end)
        warnings.filterwarnings("ignore", message="Warning: Profiler clears events at the end of each cycle")
        activities = [ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(ProfilerActivity.CUDA)
        self._kineto = torch.profiler.profile(activities=activities, schedule=self._schedule,
                                              on_trace_ready=self._kineto_ready,
                                              **self.config.kineto_options())
        self._kineto.start()
        self._recorded["kineto"] = True

    def _kineto_ready(self, prof: Any) -> None:
        path = self.run_dir / f".rank{self.rank}.kineto{len(self._kineto_files)}.json"
        prof.export_chrome_trace(str(path))
        self._kineto_files.append(path)

    # ---- shutdown -----------------------------------------------------------------------------
    def _finish(self) -> None:
        ended = time.time_ns()
        self._stopped_in_window = self._kineto is not None and self._guard("kineto").call(self._in_window) is True
        if self._kineto is not None:
            self._guard("kineto").call(self._kineto.stop)
        if self._annotator is not None:
            self._annotator.guard.call(self._annotator.on_step, self.step_num)
            self._annotator.remove()
        if self._moe is not None:
            self._guard("moe").call(self._moe.close)
        if self._sampler is not None:
            self._guard("samplers").call(self._sampler.stop)
        self._guard("trace").call(self._write_trace)
        for w in (self._steps_writer, self._samples_writer, self._moe_writer):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.close()
        if self._moe_writer is not None and self._moe_writer.lines_written == 0:
            with contextlib.suppress(OSError):
                self._moe_writer.path.unlink()
        self._write_manifest(ended=True, ended_at_ns=ended)
        if self.config.on_run_ready is not None:
            try:
                self.config.on_run_ready(self.run_dir)
            except Exception as exc:  # noqa: BLE001 - the run is written; the job goes on
                logger.warning("torchscope: on_run_ready(%s) raised %s: %s", self.run_dir, type(exc).__name__, exc,
                               exc_info=exc)

    def _load_kineto(self) -> list[dict]:
        import orjson  # noqa: PLC0415

        traces = []
        for path in self._kineto_files:
            try:
                traces.append(orjson.loads(path.read_bytes()))
            except (OSError, ValueError) as exc:
                logger.warning("torchscope: could not read Kineto's trace %s: %s", path, exc)
            finally:
                with contextlib.suppress(OSError):
                    path.unlink()
        return traces

    def _write_trace(self) -> None:
        from torchscope.profiler.trace_merge import merge_traces  # noqa: PLC0415

        kineto = self._load_kineto()
        if kineto and self._stopped_in_window:  # only then did torch.profiler leave a step open, in its last cycle
            kineto[-1] = _without_unended_steps(kineto[-1], self.step_num)
        if self.config.kineto and not kineto:
            self._unavailable.setdefault("kineto", "no active profiling step completed (see the schedule)")
        distributed = None
        if self.world_size > 1:
            distributed = {"rank": self.rank, "world_size": self.world_size}
        annotations = self._annotator.events if self._annotator is not None else []
        lines = self._sampler.lines if self._sampler is not None else []
        trace = merge_traces(kineto, annotations=annotations, sample_lines=lines, distributed=distributed,
                             extra={"rank": self.rank, "run_dir": str(self.run_dir),
                                    "dropped_annotations": self._annotator.dropped if self._annotator else 0})
        self.trace_file = bundle.write_trace_atomic(bundle.trace_path(self.run_dir, self.rank), trace)

    def _write_manifest(self, *, ended: bool, ended_at_ns: int | None = None) -> None:
        recorded = dict(self._recorded)
        recorded.setdefault("kineto", False)
        recorded["annotations"] = bool(self._annotator is not None and self.config.annotate)
        recorded["moe"] = bool(self._moe_writer is not None and self._moe_writer.lines_written > 0)
        recorded["host_roofline"] = self._roofline is not None
        unavailable = dict(self._unavailable)
        for name, g in self._guards.items():
            if g.failed:
                unavailable[name] = f"failed and stopped: {g.error}"
                if name in recorded:
                    recorded[name] = False
        if self._annotator is not None and self._annotator.guard.failed:
            unavailable["annotations"] = f"failed and stopped: {self._annotator.guard.error}"
            recorded["annotations"] = False
        if self._sampler is not None:
            for src, err in self._sampler.failures.items():
                unavailable[f"{src}_sampler"] = f"failed and stopped: {err}"
        user_counts = None
        if self._tokens or self._samples:
            user_counts = {"tokens_per_step": statistics.fmean(self._tokens) if self._tokens else None,
                           "samples_per_step": statistics.fmean(self._samples) if self._samples else None}
        manifest = build_manifest(
            rank=self.rank, world_size=self.world_size, ranks=list(range(self.world_size)),
            started_at_ns=self._started_at_ns, ended_at_ns=ended_at_ns if ended else None,
            devices=self._devices, options=self.options, recorded=recorded, unavailable=unavailable,
            host_roofline=self._roofline, user_counts=user_counts,
            extra={"steps": self.step_num, "complete": ended and self._ended_by is None,
                   "ended_by": self._ended_by if ended else None,
                   "incomplete_reason": _reason_line(self._ended_by) if ended and self._ended_by else None,
                   "model": self._model_info()})
        with contextlib.suppress(Exception):
            bundle.write_json_atomic(bundle.manifest_path(self.run_dir, self.rank), manifest)

    def _model_info(self) -> dict | None:
        """Class and parameter count of the model given as model= (for model FLOPs utilization)."""
        model = self.config.model
        if model is None:
            return None
        try:
            params = sum(p.numel() for p in model.parameters())
        except Exception:  # a model without parameters() is still a model we can profile
            params = None
        return {"class": type(model).__name__, "parameters": params}

    # ---- SIGTERM ------------------------------------------------------------------------------
    def _install_sigterm(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        try:
            self._prev_sigterm = signal.getsignal(signal.SIGTERM)
            signal.signal(signal.SIGTERM, self._on_sigterm)
            self._sigterm_installed = True
        except (ValueError, OSError):
            pass

    def _restore_sigterm(self) -> None:
        if not self._sigterm_installed:
            return
        self._sigterm_installed = False
        with contextlib.suppress(ValueError, OSError, TypeError):
            if signal.getsignal(signal.SIGTERM) == self._on_sigterm:
                signal.signal(signal.SIGTERM, self._prev_sigterm if self._prev_sigterm is not None else signal.SIG_DFL)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        prev = self._prev_sigterm
        with contextlib.suppress(Exception):
            self._stop(_end_status(None, "SIGTERM"))
        if callable(prev):
            prev(signum, frame)
        elif prev == signal.SIG_IGN:
            return
        else:  # default action: terminate, as the signal would have without us
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)


def _keyword_signature() -> inspect.Signature:
    """profile()'s signature as help() and IDEs show it: out_dir, then every ProfileOptions field, keyword-only."""
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
              inspect.Parameter("out_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="runs/run",
                                annotation="str | os.PathLike")]
    params += [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default, annotation=f.type)
               for f in dataclasses.fields(ProfileOptions)]
    return inspect.Signature(params, return_annotation="None")


profile.__init__.__signature__ = _keyword_signature()  # type: ignore[attr-defined]
